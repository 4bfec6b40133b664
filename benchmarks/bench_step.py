"""Whole upstream LLaVA training step and ``generate`` call: DyMoE at 1/4/8 tasks against LLaVA's LoRA.

    python benchmarks/bench_step.py --quick              # tiny + mid size, a few minutes on 2 CPU threads
    python benchmarks/bench_step.py                      # + 7B-shaped layers (d 4096, MLP 11008, 32 heads)
    python benchmarks/bench_step.py --device cuda --dtype bf16

Models are ``LlavaLlamaForCausalLM`` built from configs (no download): a Llama LLM of the chosen size, a tiny
CLIP vision tower (``llava_dymoe.tiny``; the same for every size and method, frozen) and LLaVA-1.5's
``mlp2x_gelu`` projector (trained, as in LLaVA's LoRA recipe).  Methods, all on q/k/v/o/gate/up/down of
every decoder layer (LLaVA's ``find_all_linear_names``), on the same frozen base weights (one copy, shared):

* ``lora128``: peft LoRA r 128 / alpha 256 / dropout 0.05 (LLaVA-1.5's ``finetune_lora.sh``);
* ``lora64``: the same at r 64 / alpha 128;
* ``dymoeT``: DyMoE with T task banks (16 rank-4 experts each), training the last one; with T >= 2 TAG and
  the RSR losses (ramp factor 1) run as in the second half of a task.

Per method, interleaved in the same rounds: "train" = forward + backward + AdamW step (median ms), "gen" =
``model.generate`` of ``--new-tokens`` greedy tokens after a prompt with one image (median ms), and memory:
on CUDA the peak allocated bytes of a train step beyond the shared model; on CPU (no allocator statistics)
the bytes of the activations saved for backward (``saved_tensors_hooks``, parameters excluded) plus the
trainable parameters, their gradients and AdamW's two moments.  Ratios are to ``lora128``.

The second table gives, at LLaVA-1.5-7B (32 layers, d 4096, MLP 11008, vocab 32000, CLIP-L/336 projector),
the trainable parameters, AdamW state and checkpoint bytes per task, computed from the shapes; the same
formula is checked against the parameters of a built model (the 7B-shaped layers when they are built, else
the mid size) and the script fails if they disagree.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Dict, List

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_layer import bench  # noqa: E402  (median ms of interleaved rounds)

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class Size:
    name: str
    hidden: int
    inter: int
    layers: int
    heads: int
    vocab: int
    seq: int
    batch: int


SIZES = {
    "tiny": Size("tiny", 64, 128, 2, 4, 1000, 64, 4),
    "mid": Size("mid", 1024, 2816, 4, 16, 32000, 256, 2),
    "7b": Size("7b", 4096, 11008, 2, 32, 32000, 128, 1),
}
#: peft target regex: the decoder layers' projections only (LLaVA's find_all_linear_names leaves out the
#: vision tower, whose CLIP layers also have q/k/v_proj, and the projector)
LLM_TARGETS = r"model\.layers\.\d+\.(self_attn|mlp)\.(" + "|".join(TARGETS) + ")"
QUICK_SIZES = ("tiny", "mid")
METHODS = ("lora128", "lora64", "dymoe1", "dymoe4", "dymoe8")


# ---------------------------------------------------------------------------------------------- models
def tiny_clip_dir(root: str) -> str:
    from llava_dymoe.tiny import build_tiny_llava
    return build_tiny_llava(os.path.join(root, "tiny")).clip


def build_base(size: Size, clip_dir: str, dtype: torch.dtype, device: str, seed: int = 0):
    """A LLaVA model of ``size`` with random weights (fp32 init, then cast) and the tiny CLIP tower."""
    from llava.model.language_model.llava_llama import LlavaConfig, LlavaLlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlavaConfig(vocab_size=size.vocab, hidden_size=size.hidden, intermediate_size=size.inter,
                      num_hidden_layers=size.layers, num_attention_heads=size.heads,
                      num_key_value_heads=size.heads, max_position_embeddings=2048, bos_token_id=1,
                      eos_token_id=2, pad_token_id=0, tie_word_embeddings=False)
    model = LlavaLlamaForCausalLM(cfg)
    model.get_model().initialize_vision_modules(model_args=SimpleNamespace(
        vision_tower=clip_dir, mm_vision_select_layer=-2, mm_vision_select_feature="patch",
        pretrain_mm_mlp_adapter=None, mm_patch_merge_type="flat", mm_projector_type="mlp2x_gelu"))
    model.config.image_aspect_ratio = "pad"
    model.config.mm_use_im_patch_token = False
    model.config.mm_use_im_start_end = False
    model.requires_grad_(False)
    return model.to(device=device, dtype=dtype)


def clone_sharing(base: nn.Module) -> nn.Module:
    """A second module tree whose parameters and buffers are the very tensors of ``base`` (no copy)."""
    import copy
    memo = {id(t): t for t in list(base.parameters()) + list(base.buffers())}
    return copy.deepcopy(base, memo)


def make_method(base: nn.Module, method: str, dtype: torch.dtype):
    """The model for ``method`` on the shared base weights; returns (model, trainable parameters)."""
    model = clone_sharing(base)
    if method.startswith("lora"):
        from peft import LoraConfig, get_peft_model
        r = int(method[4:])
        model = get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.05, bias="none",
                                                 target_modules=LLM_TARGETS, task_type="CAUSAL_LM"))
        for n, p in model.named_parameters():
            if "lora_" in n:
                p.data = p.data.to(dtype)
    else:
        from llava_dymoe.config import DyMoEConfig
        from llava_dymoe.core import DyMoEContext, attach_context
        from llava_dymoe.integration.inject import add_task, inject
        from llava_dymoe.core.layer import dymoe_layers
        tasks = int(method[5:])
        cfg = DyMoEConfig()
        inject(model, cfg)
        for _ in range(tasks):
            add_task(model, dtype=dtype)
            with torch.no_grad():  # non-zero B: every old bank does real work
                for _, layer in dymoe_layers(model):
                    layer.dymoe_B[layer.task_keys()[-1]].normal_(0, 0.01)
        attach_context(model, DyMoEContext(rho=1.0, num_modules=cfg_layers(model)))
    projector = model.get_model().mm_projector
    projector.requires_grad_(True)
    return model, [p for p in model.parameters() if p.requires_grad]


def cfg_layers(model: nn.Module) -> int:
    from llava_dymoe.core.layer import dymoe_layers
    return max(1, sum(1 for _ in dymoe_layers(model)))


# ---------------------------------------------------------------------------------------------- inputs
def make_batch(size: Size, clip_size: int, device: str, dtype: torch.dtype, seed: int = 1):
    from llava.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, size.vocab, (size.batch, size.seq), generator=g)
    ids[:, 1] = IMAGE_TOKEN_INDEX
    labels = ids.clone()
    labels[:, : size.seq // 2] = IGNORE_INDEX
    images = torch.randn(size.batch, 3, clip_size, clip_size, generator=g)
    return dict(input_ids=ids.to(device), labels=labels.to(device),
                attention_mask=torch.ones_like(ids, dtype=torch.bool).to(device),
                images=images.to(device=device, dtype=dtype))


def prompt(size: Size, clip_size: int, device: str, dtype: torch.dtype):
    from llava.constants import IMAGE_TOKEN_INDEX
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(3, size.vocab, (1, 32), generator=g)
    ids[0, 1] = IMAGE_TOKEN_INDEX
    return ids.to(device), torch.randn(1, 3, clip_size, clip_size, generator=g).to(device=device, dtype=dtype)


# ---------------------------------------------------------------------------------------------- timing
def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def train_step_fn(model, params, batch, device):
    opt = torch.optim.AdamW(params, lr=1e-5)

    def step():
        model.train()
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(device)
    return step, opt


def gen_fn(model, ids, image, new_tokens, device):
    def gen():
        model.eval()
        with torch.inference_mode():
            model.generate(ids, images=image, image_sizes=[tuple(image.shape[-2:])], do_sample=False,
                           max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=0)
        sync(device)
    return gen


def saved_activation_bytes(model, batch, params_all) -> int:
    """Bytes of the tensors autograd saves for backward in one train forward (parameters excluded)."""
    param_ptrs = {p.data_ptr() for p in params_all}
    seen: Dict[int, int] = {}

    def pack(t):
        try:
            ptr = t.untyped_storage().data_ptr()
            if ptr not in param_ptrs and ptr not in seen:
                seen[ptr] = t.untyped_storage().nbytes()
        except (RuntimeError, NotImplementedError):
            pass
        return t

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(**batch).loss
    del loss
    return sum(seen.values())


def nbytes(params) -> int:
    return sum(p.numel() * p.element_size() for p in params)


def bench_size(size: Size, methods, args, clip_dir: str, clip_size: int) -> List[dict]:
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    base = build_base(size, clip_dir, dtype, args.device)
    base_params = list(base.parameters())
    batch = make_batch(size, clip_size, args.device, dtype)
    ids, image = prompt(size, clip_size, args.device, dtype)
    models, train_fns, gen_fns, rows = {}, {}, {}, {}
    cuda = args.device.startswith("cuda")
    for m in methods:
        model, params = make_method(base, m, dtype)
        step, opt = train_step_fn(model, params, batch, args.device)
        models[m], train_fns[m], gen_fns[m] = model, step, gen_fn(model, ids, image, args.new_tokens, args.device)
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            step()
            step()  # the optimizer state exists from the first step on
            mem = torch.cuda.max_memory_allocated() - before + nbytes(params)
        else:
            step()
            state = sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values()
                        if torch.is_tensor(t) and t.dim() > 0)
            mem = saved_activation_bytes(model, batch, base_params + params) + 2 * nbytes(params) + state
        rows[m] = dict(size=size.name, method=m, trainable=sum(p.numel() for p in params), mem=mem)
    t_train = bench(train_fns, args.warmup, args.repeats)
    t_gen = bench(gen_fns, min(args.warmup, 1), args.repeats)
    for m in methods:
        rows[m].update(train_ms=t_train[m], gen_ms=t_gen[m])
    if size.name in ("7b", "mid"):
        check_formula(size, models)
    del models, train_fns, gen_fns, base
    return [rows[m] for m in methods]


# ---------------------------------------------------------------------------------------------- 7B figures
def projections(d: int, mlp: int):
    return {"q_proj": (d, d), "k_proj": (d, d), "v_proj": (d, d), "o_proj": (d, d),
            "gate_proj": (d, mlp), "up_proj": (d, mlp), "down_proj": (mlp, d)}


def adapter_params_per_layer(method: str, d: int, mlp: int, experts: int = 16, expert_rank: int = 4) -> int:
    """Trainable parameters of one decoder layer: a LoRA (r) or one DyMoE task bank (A, B, router rows)."""
    total = 0
    for fan_in, fan_out in projections(d, mlp).values():
        if method.startswith("lora"):
            total += int(method[4:]) * (fan_in + fan_out)
        else:
            total += experts * expert_rank * (fan_in + fan_out) + experts * fan_in
    return total


def projector_params(vision: int, d: int) -> int:
    return vision * d + d + d * d + d  # mlp2x_gelu: Linear(vision, d), GELU, Linear(d, d)


def check_formula(size: Size, models: Dict[str, nn.Module]) -> None:
    """The per-layer formula against the trainable LLM parameters of the built models (projector excluded)."""
    for m, model in models.items():
        got = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and "mm_projector" not in n)
        want = size.layers * adapter_params_per_layer(m if m.startswith("lora") else "dymoe", size.hidden, size.inter)
        if got != want:
            raise SystemExit(f"bench_step: {m} at {size.name}: built model has {got} trainable LLM parameters, "
                             f"the formula says {want}")
    print(f"checked: trainable parameters of the built {size.name} models match the per-layer formula "
          f"({', '.join(models)})")


def figures_7b(tasks=(1, 4, 8)) -> List[dict]:
    d, mlp, layers, vision = 4096, 11008, 32, 1024  # LLaVA-1.5-7B: Vicuna-7B + CLIP-L/336 (1024)
    proj = projector_params(vision, d)
    rows = []
    for method in ("lora128", "lora64", "dymoe"):
        per_task = layers * adapter_params_per_layer(method, d, mlp)
        trainable = per_task + proj
        row = dict(method=method, adapter=per_task, trainable=trainable,
                   adam_fp32=8 * trainable,            # two fp32 moments
                   zero_fp32_master=4 * trainable,     # DeepSpeed's fp32 master copy under bf16/fp16
                   ckpt_bf16=2 * trainable)
        if method == "dymoe":
            for t in tasks:  # every bank is saved (folded); the projector once
                row[f"ckpt_bf16_after_{t}"] = 2 * (t * per_task + proj)
                row[f"banks_after_{t}"] = t * per_task
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------- main
def fmt_mb(b: float) -> str:
    return f"{b / 2 ** 20:.1f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help=f"sizes {', '.join(QUICK_SIZES)} only, 2 repeats")
    ap.add_argument("--sizes", nargs="+", choices=sorted(SIZES), default=None)
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--new-tokens", type=int, default=8)
    ap.add_argument("--seq", type=int, default=None, help="override every size's sequence length")
    ap.add_argument("--workdir", default=None, help="where the tiny CLIP is built (default: a temp dir)")
    ap.add_argument("--figures-only", action="store_true", help="print the 7B figures table only")
    args = ap.parse_args(argv)
    for m in args.methods:
        if m not in ("lora128", "lora64") and not (m.startswith("dymoe") and m[5:].isdigit() and int(m[5:]) > 0):
            ap.error(f"unknown method {m!r} (lora128, lora64, dymoe<T>)")
    sizes = args.sizes or (list(QUICK_SIZES) if args.quick else list(SIZES))
    repeats = args.repeats or (2 if args.quick else 3)
    args.repeats = repeats
    torch.set_num_threads(args.threads)

    print_figures()
    if args.figures_only:
        return 0
    root = args.workdir or tempfile.mkdtemp(prefix="bench_step_")
    clip_dir = tiny_clip_dir(root)
    from transformers import CLIPVisionConfig
    clip_size = CLIPVisionConfig.from_pretrained(clip_dir).image_size
    dense = os.environ.get("LLAVA_DYMOE_DENSE", "")
    print(f"\ntorch {torch.__version__}, device {args.device}, {args.dtype}, threads {torch.get_num_threads()}, "
          f"median of {repeats} (warmup {args.warmup}), generate {args.new_tokens} tokens"
          f"{', LLAVA_DYMOE_DENSE=' + dense if dense else ''}; times in ms, memory in MiB "
          f"({'CUDA peak of a train step' if args.device.startswith('cuda') else 'saved activations + params, grads, AdamW state'})")
    head = f"{'size':>5} {'method':>8} {'trainable':>11} {'train':>9} {'x':>6} {'gen':>8} {'x':>6} {'mem':>9} {'x':>6}"
    print(head)
    failed = False
    for name in sizes:
        size = SIZES[name]
        if args.seq:
            size = Size(**{**size.__dict__, "seq": args.seq})
        try:
            rows = bench_size(size, args.methods, args, clip_dir, clip_size)
        except Exception as e:  # report and go on with the next size
            print(f"{name:>5} FAILED: {type(e).__name__}: {e}", flush=True)
            failed = True
            continue
        ref = rows[0]
        for r in rows:
            print(f"{r['size']:>5} {r['method']:>8} {r['trainable']:>11,} {r['train_ms']:9.1f} "
                  f"{r['train_ms'] / ref['train_ms']:6.2f} {r['gen_ms']:8.1f} {r['gen_ms'] / ref['gen_ms']:6.2f} "
                  f"{fmt_mb(r['mem']):>9} {r['mem'] / ref['mem']:6.2f}", flush=True)
    return 1 if failed else 0


def print_figures() -> None:
    rows = figures_7b()
    print("LLaVA-1.5-7B from shapes (32 layers x 7 projections, projector 1024->4096->4096 trained), per task:")
    print(f"{'method':>8} {'adapter params':>15} {'trainable':>13} {'AdamW fp32':>11} {'+fp32 master':>12} "
          f"{'ckpt bf16':>10} {'ckpt after 1/4/8 tasks (bf16)':>30}")
    gib = lambda b: f"{b / 2 ** 30:.2f}G"  # noqa: E731
    for r in rows:
        after = ("/".join(gib(r[f"ckpt_bf16_after_{t}"]) for t in (1, 4, 8)) if r["method"] == "dymoe"
                 else "same every task")
        print(f"{r['method']:>8} {r['adapter']:>15,} {r['trainable']:>13,} {gib(r['adam_fp32']):>11} "
              f"{gib(r['zero_fp32_master']):>12} {gib(r['ckpt_bf16']):>10} {after:>30}")


if __name__ == "__main__":
    sys.exit(main())
