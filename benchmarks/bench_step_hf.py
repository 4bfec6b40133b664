"""HF-native hosts: one training step and one ``generate`` call, DyMoE at 1 and 4 tasks against peft LoRA on
the same host (``hf-llava``: LlavaForConditionalGeneration, ``qwen2_5_vl``: Qwen2_5_VLForConditionalGeneration).

    .venv-hf/bin/python benchmarks/bench_step_hf.py --quick     # tiny sizes, about a minute on 2 CPU threads
    .venv-hf/bin/python benchmarks/bench_step_hf.py             # + a mid size (d 512, MLP 1376, 4 layers)

Runs in ``.venv-hf`` (transformers 5.x, peft 0.21.2; docs/hosts.md). Models are the tiny hosts of
``llava_dymoe.hosts.hf_tiny`` (built from configs, no download) at the chosen LLM size; the batch is the smoke
dataset's LLaVA JSON through the host's processor and chat template (``hosts/hf_data.py``), so image tokens,
masking and padding are the real ones.  Methods, all on q/k/v/o/gate/up/down of every decoder layer of the
LLM (never the vision tower): ``lora64`` (peft LoRA r 64 / alpha 128 / dropout 0.05), ``dymoe1`` and
``dymoe4`` (DyMoE with 1 or 4 task banks of the default 16 rank-4 experts, training the last one; non-zero B
in every bank).  Per method, interleaved in the same rounds: "train" = forward + backward + AdamW step (median
ms), "gen" = greedy ``generate`` of ``--new-tokens`` tokens after one prompt with its image (median ms); ratios
are to ``lora64``.  Each method's trainable adapter parameters are checked against the formula (LoRA:
r x (in + out) per projection; DyMoE: the new bank's A, B and router rows) and the script fails on a mismatch.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from typing import Dict, List

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_layer import bench  # noqa: E402  (median ms of interleaved rounds)

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LLM_TARGETS = r"model\.language_model\.layers\.\d+\.(self_attn|mlp)\.(" + "|".join(TARGETS) + ")"
HOSTS = ("hf-llava", "qwen2_5_vl")
METHODS = ("lora64", "dymoe1", "dymoe4")
SIZES = {"tiny": dict(), "mid": dict(hidden_size=512, intermediate_size=1376, num_hidden_layers=4,
                                     num_attention_heads=8)}


def build(host: str, size: str, root: str):
    """``(model folder, processor)`` of the tiny ``host`` at ``size``."""
    from llava_dymoe.hosts import get_host
    from llava_dymoe.hosts.hf_tiny import BUILDERS
    from llava_dymoe.tiny import TinySizes

    folder = BUILDERS[host](os.path.join(root, f"{host}-{size}"), sizes=TinySizes(**SIZES[size]))
    return folder, get_host(host).load_processor(folder)


def make_method(host: str, folder: str, method: str):
    """``(model, expected adapter parameter count)`` for ``method``; only the adapter (and the projector) train."""
    from llava_dymoe.core import DyMoEContext, dymoe_layers
    from llava_dymoe.config import DyMoEConfig
    from llava_dymoe.hosts import get_host
    from llava_dymoe.integration.inject import add_task, inject

    torch.manual_seed(0)
    model = get_host(host).load_model(folder, attn_implementation="sdpa")
    model.requires_grad_(False)
    linears = [m for n, m in model.named_modules() if n.rsplit(".", 1)[-1] in TARGETS
               and n.startswith("model.language_model.layers.")]
    if method.startswith("lora"):
        from peft import LoraConfig, get_peft_model

        r = int(method[4:])
        model = get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.05, bias="none",
                                                 target_modules=LLM_TARGETS))
        expected = sum(r * (m.in_features + m.out_features) for m in linears)
        adapter = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and "lora_" in n)
    else:
        cfg = DyMoEConfig()
        inject(model, cfg)
        for _ in range(int(method[5:])):
            add_task(model)
            with torch.no_grad():  # non-zero B: every old bank does real work
                for _, layer in dymoe_layers(model):
                    layer.dymoe_B[layer.task_keys()[-1]].normal_(0, 0.01)
        rank = cfg.expert_rank * cfg.experts_per_task
        expected = sum(rank * (m.in_features + m.out_features) + cfg.experts_per_task * m.in_features
                       for m in linears)
        adapter = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and "dymoe_" in n)
        get_host(host).install_context_hooks(model, DyMoEContext(rho=1.0, num_modules=len(linears)))
    if adapter != expected:
        raise SystemExit(f"{host} {method}: {adapter} trainable adapter parameters, the formula says {expected}")
    projector = get_host(host).projector(model.get_base_model() if hasattr(model, "get_base_model") else model)
    projector.requires_grad_(True)
    return model, adapter


def batches(processor, n: int):
    from llava_dymoe.hosts.hf_data import LlavaJsonDataset, PadCollator
    from llava_dymoe.smoke_data import write_smoke_dataset

    data = write_smoke_dataset(tempfile.mkdtemp(prefix="bench_hf_data_"), n_train=max(n, 2), n_test=1)
    ds = LlavaJsonDataset(data.train_json, processor, data.image_folder, 512)
    collate = PadCollator(processor.tokenizer.pad_token_id)
    train = collate([ds[i] for i in range(n)])
    prompt = collate([ds[0]])
    prompt.pop("labels")
    cut = int((ds[0]["labels"] == -100).sum())  # the prompt part only
    prompt = {k: (v[:, :cut] if k in ("input_ids", "attention_mask") else v) for k, v in prompt.items()}
    return train, prompt


def run(hosts, sizes, batch: int, new_tokens: int, repeats: int, warmup: int) -> List[Dict]:
    rows = []
    with tempfile.TemporaryDirectory() as root:
        for host in hosts:
            for size in sizes:
                folder, processor = build(host, size, root)
                train, prompt = batches(processor, batch)
                fns, params = {}, {}
                for method in METHODS:
                    model, params[method] = make_method(host, folder, method)
                    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

                    def step(model=model, opt=opt):
                        model.train()
                        model(**train).loss.backward()
                        opt.step()
                        opt.zero_grad(set_to_none=True)

                    def gen(model=model):
                        model.eval()
                        with torch.no_grad():
                            model.generate(**prompt, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                           do_sample=False)

                    fns[f"{method}/train"], fns[f"{method}/gen"] = step, gen
                ms = bench(fns, warmup, repeats)
                for method in METHODS:
                    rows.append({"host": host, "size": size, "method": method, "adapter": params[method],
                                 "train_ms": ms[f"{method}/train"], "gen_ms": ms[f"{method}/gen"]})
    return rows


def table(rows: List[Dict]) -> str:
    lines = ["| host | size | method | adapter params | train step ms | x lora64 | generate ms | x lora64 |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ref = next(x for x in rows if x["host"] == r["host"] and x["size"] == r["size"] and x["method"] == "lora64")
        lines.append(f"| {r['host']} | {r['size']} | {r['method']} | {r['adapter']:,} | {r['train_ms']:.1f} | "
                     f"{r['train_ms'] / ref['train_ms']:.2f} | {r['gen_ms']:.1f} | {r['gen_ms'] / ref['gen_ms']:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes only")
    ap.add_argument("--hosts", nargs="+", choices=HOSTS, default=list(HOSTS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--new-tokens", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = run(args.hosts, ["tiny"] if args.quick else list(SIZES), args.batch, args.new_tokens, args.repeats,
               args.warmup)
    print(f"torch {torch.__version__}, {args.threads} threads, batch {args.batch}, {args.new_tokens} new tokens")
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
