"""Python parts of ``scripts/gpu_check.sh`` (one check per sub-command; each prints one ``RESULT`` line).

    python scripts/gpu_check.py layer    [--dry-run]   # DyMoELinear on the device: sparse vs dense vs fp64 CPU
    python scripts/gpu_check.py sequence --out DIR [--dry-run]
                                                       # 2 DyMoE tasks, 7B-shaped 2-layer LLaVA, bf16, ZeRO-2

``--dry-run`` runs the same code on the CPU: fp32 instead of bf16, the tiny default LLaVA instead of the
7B-shaped one, sdpa attention; the sequence still goes through DeepSpeed ZeRO-2 (one rank, gloo), so a CPU
machine checks everything but the device, the precision and the size.  Exit status 0 = the check passed.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

#: 7B-shaped layers (LLaVA-1.5-7B / Vicuna-7B): d 4096, MLP 11008, 32 heads; 2 layers so one GPU holds it fast.
SEVEN_B = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=2, num_attention_heads=32)


def result(check: str, ok: bool, **fields) -> int:
    print("RESULT " + json.dumps({"check": check, "ok": ok, **fields}, sort_keys=True), flush=True)
    return 0 if ok else 1


def check_layer(args) -> int:
    """The layer's sparse path against its dense path on the device (fp32 and bf16), and the fp32 device
    result against an fp64 CPU reference, training with TAG + RSR (values and gradients) and inference."""
    import torch
    from torch import nn

    from llava_dymoe.config import DyMoEConfig
    from llava_dymoe.core import DyMoEContext, DyMoELinear, attach_context
    from llava_dymoe.core.layer import DENSE_ENV

    device = "cpu" if args.dry_run else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        return result("layer", False, error="torch.cuda.is_available() is False")
    torch.manual_seed(0)
    d, n = (256, 512) if args.dry_run else (4096, 2048)
    ref = DyMoELinear(nn.Linear(d, d, dtype=torch.float64), DyMoEConfig(lora_dropout=0.0))
    ref.weight.requires_grad_(False)
    for _ in range(3):
        ref.add_task(dtype=torch.float64)
        with torch.no_grad():
            ref.dymoe_B[ref.task_keys()[-1]].normal_(0, 0.02)
    x64 = torch.randn(n, d, dtype=torch.float64)
    gy64 = torch.randn(n, d, dtype=torch.float64)
    fields = {"device": device}

    def run(layer, x, gy, dense, training):
        os.environ[DENSE_ENV] = "1" if dense else "0"
        try:
            layer.train(training)
            xi = x.clone().requires_grad_(training)
            with torch.set_grad_enabled(training):
                y = layer(xi)
            if not training:
                return [y.detach().double().cpu()]
            y.backward(gy)
            grads = [xi.grad] + [p.grad for p in layer.parameters() if p.requires_grad]
            for p in layer.parameters():
                p.grad = None
            return [t.detach().double().cpu() for t in [y] + grads]
        finally:
            os.environ.pop(DENSE_ENV, None)

    def maxrel(a, b):
        return max(float((u - v).abs().max() / v.abs().max().clamp_min(1e-30)) for u, v in zip(a, b))

    ok = True
    for training in (True, False):
        mode = "train" if training else "eval"
        attach_context(ref, DyMoEContext(rho=1.0) if training else None)
        want = run(ref, x64, gy64, True, training)
        for dt, name, tol in ((torch.float32, "fp32", 1e-4), (torch.bfloat16, "bf16", 5e-2)):
            layer = DyMoELinear(nn.Linear(d, d), ref.dymoe_config)
            layer.load_state_dict({k: v.to(dt) for k, v in ref.state_dict().items()}, strict=False)
            layer.load_banks({k: v for k, v in ref.bank_state_dict().items()}, dtype=dt)
            layer.set_trainable_tasks([layer.task_keys()[-1]])
            layer.weight.requires_grad_(False)
            layer = layer.to(device=device, dtype=dt)
            attach_context(layer, DyMoEContext(rho=1.0) if training else None)
            x, gy = x64.to(device=device, dtype=dt), gy64.to(device=device, dtype=dt)
            sparse, dense = run(layer, x, gy, False, training), run(layer, x, gy, True, training)
            fields[f"{mode}_{name}_sparse_vs_dense"] = maxrel(sparse, dense)
            fields[f"{mode}_{name}_vs_fp64"] = maxrel(sparse, want)
            ok &= fields[f"{mode}_{name}_sparse_vs_dense"] <= tol and fields[f"{mode}_{name}_vs_fp64"] <= tol
    return result("layer", ok, **{k: (f"{v:.1e}" if isinstance(v, float) else v) for k, v in fields.items()})


def check_sequence(args) -> int:
    """Task 1 then task 2 through upstream train() under ZeRO-2; task 1's banks must be bit-identical in task
    2's checkpoint and task 2's own bank must have moved."""
    import torch
    from safetensors.torch import load_file

    from llava_dymoe.integration import checkpoint as ckpt
    from llava_dymoe.integration.llava_args import (DYMOE_TRAIN_MODULE, dymoe_flags, llava_train_argv,
                                                    run_python, single_rank_env)
    from llava_dymoe.smoke_data import write_smoke_dataset
    from llava_dymoe.tiny import TinySizes, build_tiny_llava

    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    sizes = TinySizes() if args.dry_run else TinySizes(**SEVEN_B)
    tiny = build_tiny_llava(os.path.join(out, "model"), sizes=sizes)
    data = write_smoke_dataset(os.path.join(out, "data"), n_train=16, n_test=4, seed=0)
    try:
        import flash_attn  # noqa: F401
        attn = "flash_attention_2" if not args.dry_run else "sdpa"
    except ImportError:
        attn = "sdpa"
    bf16 = not args.dry_run
    overrides = {"bf16": bf16, "tf32": bf16, "attn_implementation": attn, "per_device_train_batch_size": 2}
    ds = os.path.join(REPO, "scripts", "zero2.json")
    t1, t2 = os.path.join(out, "1_task_llava_dymoe"), os.path.join(out, "2_task_llava_dymoe")
    times = {}
    for task, path, prev in ((1, t1, None), (2, t2, t1)):
        argv = llava_train_argv(tiny.llm, tiny.clip, data.train_json, data.image_folder, path, lora=False,
                                max_steps=args.steps, deepspeed=ds, overrides=overrides,
                                extra=dymoe_flags("dymoe", task, prev))
        start = time.time()
        try:
            run_python(DYMOE_TRAIN_MODULE, argv, module=True, env=single_rank_env(), log_path=path + ".log",
                       timeout=args.timeout)
        except RuntimeError as e:
            return result("sequence", False, task=task, error=str(e).splitlines()[0], log=path + ".log")
        times[f"task{task}_s"] = round(time.time() - start, 1)
    a = load_file(os.path.join(t1, ckpt.EXPERTS))
    b = load_file(os.path.join(t2, ckpt.EXPERTS))
    old_same = bool(a) and set(a) < set(b) and all(torch.equal(a[k], b[k]) for k in a)
    new_moved = all(b[k].abs().sum() > 0 for k in b if k.endswith("dymoe_B.t1"))
    dtypes = sorted({str(v.dtype).replace("torch.", "") for v in b.values()})
    return result("sequence", old_same and new_moved, old_banks_bit_identical=old_same, new_bank_moved=new_moved,
                  attn=attn, precision="bf16" if bf16 else "fp32", zero=2, layers=sizes.num_hidden_layers,
                  hidden=sizes.hidden_size, bank_dtypes=",".join(dtypes), **times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("check", choices=("layer", "sequence"))
    ap.add_argument("--dry-run", action="store_true", help="the same checks on the CPU, small and in fp32")
    ap.add_argument("--out", default="gpu_check_out")
    ap.add_argument("--steps", type=int, default=4, help="training steps per task (sequence)")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per training run (sequence)")
    args = ap.parse_args(argv)
    return {"layer": check_layer, "sequence": check_sequence}[args.check](args)


if __name__ == "__main__":
    sys.exit(main())
