"""Speed of ``DyMoELinear`` against ``nn.Linear`` and a plain rank-64 LoRA on the same frozen base.

    python benchmarks/bench_layer.py --threads 2 --repeats 10

d_in = d_out = 1024, 4096 tokens (4 x 1024), fp32, 1/4/8 tasks (16 experts x rank 4 per task, top-16,
dropout 0.05, alpha 128).  "fwd+bwd": training mode, the input requires grad (hidden states of an LLM do),
the base weight is frozen; with >= 2 tasks the DyMoE time includes TAG and the RSR losses with their
injected gradient.  "inference": eval mode under ``torch.no_grad``.  Variants are timed interleaved in
the same run (warmup, then the median of ``--repeats`` rounds), and printed as ratios.
Issue 3 target: 1 task fwd+bwd <= 1.3x the rank-64 LoRA.

The beyond-the-paper variants (``llava_dymoe.methods.VARIANTS``) are timed in the same rounds:
``cascade`` (``assign_rule="cascade"``: TAG's test bank by bank, at training and at inference) as a ratio
to ``dymoe``; ``spe_target="tag"`` changes only which target the specialisation BCE reads (no extra work,
not timed); ``router_init="centroids"`` is a one-off per task and projection, so its spherical k-means on
``MAX_TOKENS`` tokens is reported against one ``dymoe`` fwd+bwd step (the calibration forward it also
needs is ``--dymoe_router_init_batches`` inference passes of the previous model).
"""
from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from llava_dymoe.config import DyMoEConfig
from llava_dymoe.core import DyMoEContext, DyMoELinear, attach_context


class PlainLoRA(nn.Module):
    """y = W0 x + b + (alpha/r) B A dropout(x), rank r (the baseline)."""

    def __init__(self, base: nn.Linear, rank: int = 64, alpha: float = 128.0, dropout: float = 0.05):
        super().__init__()
        self.base = base
        self.A = nn.Parameter(torch.empty(rank, base.in_features))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
        self.B = nn.Parameter(torch.randn(base.out_features, rank) * 0.01)
        self.drop = nn.Dropout(dropout)
        self.scaling = alpha / rank

    def forward(self, x):
        return self.base(x) + F.linear(F.linear(self.drop(x), self.A), self.B) * self.scaling


def make_dymoe(base: nn.Linear, tasks: int, **cfg) -> DyMoELinear:
    layer = DyMoELinear(base, DyMoEConfig(**cfg))
    for _ in range(tasks):
        layer.add_task()
        with torch.no_grad():  # non-zero B so every bank does real work
            layer.dymoe_B[layer.task_keys()[-1]].normal_(0, 0.01)
    attach_context(layer, DyMoEContext(rho=1.0))
    return layer


def step_fn(module: nn.Module, x: torch.Tensor, gy: torch.Tensor, mode: str):
    params = [p for p in module.parameters() if p.requires_grad]

    def run():
        if mode == "fwd+bwd":
            module.train()
            x.grad = None
            for p in params:
                p.grad = None
            module(x).backward(gy)
        else:
            module.eval()
            with torch.no_grad():
                module(x)
    return run


def bench(fns: dict, warmup: int, repeats: int) -> dict:
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) * 1e3 for k, v in times.items()}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--tasks", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--dim", type=int, default=1024)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    base = nn.Linear(args.dim, args.dim).requires_grad_(False)
    x = torch.randn(4, args.tokens // 4, args.dim, requires_grad=True)
    gy = torch.randn(4, args.tokens // 4, args.dim)
    lora = PlainLoRA(base)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, tokens {args.tokens}, d {args.dim}, "
          f"fp32, median of {args.repeats} (warmup {args.warmup}); times in ms")
    print(f"{'tasks':>5} {'mode':>9} {'linear':>8} {'lora64':>8} {'dymoe':>8} {'cascade':>8} {'dymoe/lora':>10} "
          f"{'dymoe/linear':>12} {'lora/linear':>11} {'cascade/dymoe':>13}")
    for tasks in args.tasks:
        dymoe = make_dymoe(base, tasks)
        cascade = make_dymoe(base, tasks, assign_rule="cascade")
        with torch.no_grad():  # the same banks: only the rule differs
            for name in ("dymoe_A", "dymoe_B", "dymoe_router"):
                for k, p in getattr(cascade, name).items():
                    p.copy_(getattr(dymoe, name)[k])
        for mode in ("fwd+bwd", "inference"):
            t = bench({"linear": step_fn(base, x, gy, mode), "lora": step_fn(lora, x, gy, mode),
                       "dymoe": step_fn(dymoe, x, gy, mode), "cascade": step_fn(cascade, x, gy, mode)},
                      args.warmup, args.repeats)
            print(f"{tasks:>5} {mode:>9} {t['linear']:8.1f} {t['lora']:8.1f} {t['dymoe']:8.1f} {t['cascade']:8.1f} "
                  f"{t['dymoe'] / t['lora']:10.2f} {t['dymoe'] / t['linear']:12.2f} "
                  f"{t['lora'] / t['linear']:11.2f} {t['cascade'] / t['dymoe']:13.2f}", flush=True)
    centroid_cost(base, x, gy, args)


def centroid_cost(base: nn.Linear, x: torch.Tensor, gy: torch.Tensor, args) -> None:
    """router_init='centroids': one spherical k-means per projection and task, against one dymoe step."""
    from llava_dymoe.core.centroids import spherical_kmeans
    from llava_dymoe.trainer.router_init import MAX_TOKENS

    tokens = x.detach().reshape(-1, args.dim)[:MAX_TOKENS]
    step = step_fn(make_dymoe(base, 2), x, gy, "fwd+bwd")
    t = bench({"kmeans": lambda: spherical_kmeans(tokens, 16, generator=torch.Generator().manual_seed(0)),
               "step": step}, args.warmup, args.repeats)
    print(f"router_init=centroids: k-means of {tokens.shape[0]} tokens into 16 rows {t['kmeans']:.1f} ms = "
          f"{t['kmeans'] / t['step']:.2f}x one dymoe fwd+bwd step (2 tasks), once per task and projection")

if __name__ == "__main__":
    main()
