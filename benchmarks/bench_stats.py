"""Cost of the routing statistics (``core/stats.py``): the same ``DyMoELinear`` with stats off and on.

    python benchmarks/bench_stats.py --threads 2 --repeats 10

Same layer sizes as ``bench_layer.py`` (d = 1024, 4096 tokens, fp32, 16 experts x rank 4 per task).
"off" = no ``RoutingStats`` attached (the default; the forward checks one attribute), "on" = one
attached and active.  Both variants run on the same layer, interleaved in the same rounds (warmup, then
the median of ``--repeats``); printed as times and the on/off ratio.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_layer import bench, make_dymoe, step_fn  # noqa: E402

from llava_dymoe.core import RoutingStats, attach_stats  # noqa: E402


def with_stats(layer: nn.Module, stats, fn):
    def run():
        attach_stats(layer, stats)
        fn()
    return run


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--tasks", type=int, nargs="+", default=[1, 4])
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    d = 1024
    print(f"DyMoELinear d={d}, {args.tokens} tokens, fp32, median of {args.repeats}; times in ms")
    print(f"{'tasks':>5} {'mode':>9} {'off':>9} {'on':>9} {'on/off':>7}")
    for tasks in args.tasks:
        base = nn.Linear(d, d).requires_grad_(False)
        layer = make_dymoe(base, tasks)
        x = torch.randn(4, args.tokens // 4, d, requires_grad=True)
        gy = torch.randn(4, args.tokens // 4, d)
        for mode in ("fwd+bwd", "inference"):
            fn = step_fn(layer, x, gy, mode)
            t = bench({"off": with_stats(layer, None, fn), "on": with_stats(layer, RoutingStats(), fn)},
                      args.warmup, args.repeats)
            print(f"{tasks:>5} {mode:>9} {t['off']:9.2f} {t['on']:9.2f} {t['on'] / t['off']:7.3f}")
        attach_stats(layer, None)


if __name__ == "__main__":
    main()
