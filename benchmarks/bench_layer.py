"""Speed of ``DyMoELinear`` against ``nn.Linear`` and a plain rank-64 LoRA on the same frozen base.

    python benchmarks/bench_layer.py --threads 2 --repeats 10

d_in = d_out = 1024, 4096 tokens (4 x 1024), fp32, 1/4/8 tasks (16 experts x rank 4 per task, top-16,
dropout 0.05, alpha 128).  "fwd+bwd": training mode, the input requires grad (hidden states of an LLM do),
the base weight is frozen; with >= 2 tasks the DyMoE time includes TAG and the RSR losses with their
injected gradient.  "inference": eval mode under ``torch.no_grad``.  Variants are timed interleaved in
the same run (warmup, then the median of ``--repeats`` rounds), and printed as ratios.
Issue 3 target: 1 task fwd+bwd <= 1.3x the rank-64 LoRA.

Exact savings (issue 20): "dymoe" is the default sparse path (``DyMoELinear._mix_sparse``), "dense" the same
layer with ``LLAVA_DYMOE_DENSE=1`` (every bank for every token, the path before issue 20), timed in the same
rounds; "maxrel" is the largest |sparse - dense| / max|dense| over the output and the input gradient.  With
random routers TAG calls ~3% of the tokens new; ``--new-share 0.5`` places half of the tokens next to
the new bank's router rows so that TAG sends them there (the share a trained router reaches is not known).
Goal (issue 20): at 8 tasks fwd+bwd and inference <= 1.3x the rank-64 LoRA.

``--gathered`` also times, for inference, a per-expert gathered path (tokens sorted by expert, one rank-4
GEMM pair per expert, ``index_add_`` back) against the dense banks at the same shape: the grouped path for
"top-k is a small share of the experts".  ``--profile`` prints the top operators of one DyMoE step.

The beyond-the-paper variants (``llava_dymoe.methods.VARIANTS``) are timed in the same rounds:
``cascade`` (``assign_rule="cascade"``: TAG's test bank by bank, at training and at inference) as a ratio
to ``dymoe``; ``keys`` (the cascade with ``bank_keys="refreshed"``: the bank decided on separate key rows, one
more cosine product per forward) as a ratio to ``cascade``; ``plus`` (today's ``dymoe_plus``: keys, fixed rows and
one bank per sequence of ``x``'s four) as a ratio to ``dymoe``; ``router_train=False`` only freezes rows (not
timed); ``spe_target="tag"`` changes only which target the specialisation BCE reads (no extra work,
not timed); ``router_init="centroids"`` is a one-off per task and projection, so its spherical k-means on
``MAX_TOKENS`` tokens is reported against one ``dymoe`` fwd+bwd step (the calibration forward it also
needs is ``--dymoe_router_init_batches`` inference passes of the previous model).
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from llava_dymoe.config import DyMoEConfig
from llava_dymoe.core import DyMoEContext, DyMoELinear, attach_context
from llava_dymoe.core.layer import DENSE_ENV
from llava_dymoe.methods import get_method


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


def step_fn(module: nn.Module, x: torch.Tensor, gy: torch.Tensor, mode: str, dense: bool = False):
    params = [p for p in module.parameters() if p.requires_grad]

    def run():
        if dense:
            os.environ[DENSE_ENV] = "1"
            try:
                return step_fn(module, x, gy, mode)()
            finally:
                os.environ.pop(DENSE_ENV, None)
        if mode == "fwd+bwd":
            module.train()
            x.grad = None
            for p in params:
                p.grad = None
            module(x).backward(gy)
        else:
            module.eval()
            with torch.no_grad():
                return module(x)
    return run


def place_new_tokens(layer: DyMoELinear, x: torch.Tensor, share: float) -> torch.Tensor:
    """A copy of ``x`` whose first ``share`` of tokens lie next to the last bank's router rows (TAG: new)."""
    if share <= 0:
        return x
    flat = x.detach().reshape(-1, x.shape[-1]).clone()
    k = int(share * flat.shape[0])
    rows = layer.dymoe_router[layer.task_keys()[-1]].detach()
    pick = rows[torch.arange(k) % rows.shape[0]]
    flat[:k] = pick / pick.norm(dim=1, keepdim=True) * flat[:k].norm(dim=1, keepdim=True) + 0.3 * flat[:k]
    return flat.view_as(x).requires_grad_(x.requires_grad)


def paths_diff(layer: DyMoELinear, x: torch.Tensor, gy: torch.Tensor) -> float:
    """max |sparse - dense| / max |dense| over the training output and the input gradient (same dropout)."""
    out = {}
    for dense in (False, True):
        torch.manual_seed(123)
        layer.train()
        xi = x.detach().clone().requires_grad_(True)
        if dense:
            os.environ[DENSE_ENV] = "1"
        try:
            y = layer(xi)
            y.backward(gy)
        finally:
            os.environ.pop(DENSE_ENV, None)
        out[dense] = (y.detach(), xi.grad)
    return max(float((a - b).abs().max() / b.abs().max()) for a, b in zip(out[False], out[True]))


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
    ap.add_argument("--new-share", type=float, nargs="+", default=[0.0],
                    help="shares of tokens placed next to the new bank's router rows (0: random tokens)")
    ap.add_argument("--gathered", action="store_true", help="time the per-expert gathered inference path")
    ap.add_argument("--profile", action="store_true", help="print the top operators of one DyMoE step")
    ap.add_argument("--no-centroids", action="store_true", help="skip the router_init=centroids timing")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    base = nn.Linear(args.dim, args.dim).requires_grad_(False)
    x = torch.randn(4, args.tokens // 4, args.dim, requires_grad=True)
    gy = torch.randn(4, args.tokens // 4, args.dim)
    lora = PlainLoRA(base)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, tokens {args.tokens}, d {args.dim}, "
          f"fp32, median of {args.repeats} (warmup {args.warmup}); times in ms")
    print(f"{'tasks':>5} {'new':>5} {'mode':>9} {'linear':>8} {'lora64':>8} {'dymoe':>8} {'dense':>8} "
          f"{'cascade':>8} {'keys':>8} {'plus':>8} {'dymoe/lora':>10} {'dense/lora':>10} {'dymoe/dense':>11} "
          f"{'cascade/lora':>12} {'keys/cascade':>12} {'plus/dymoe':>10} {'maxrel':>8}")
    for tasks in args.tasks:
        dymoe = make_dymoe(base, tasks)
        cascade = make_dymoe(base, tasks, assign_rule="cascade")
        keys = make_dymoe(base, tasks, assign_rule="cascade", router_init="centroids", bank_keys="refreshed")
        plus = make_dymoe(base, tasks, **get_method("dymoe_plus").build_config().__dict__)
        with torch.no_grad():  # the same banks: only the rule differs (the keys start as the rows)
            for layer in (cascade, keys, plus):
                keyed = ("dymoe_key",) if layer is not cascade else ()
                for name in ("dymoe_A", "dymoe_B", "dymoe_router") + keyed:
                    for k, p in getattr(layer, name).items():
                        p.copy_(getattr(dymoe, name if name != "dymoe_key" else "dymoe_router")[k])
        for share in args.new_share:
            xs = place_new_tokens(dymoe, x, share)
            diff = paths_diff(dymoe, xs, gy)
            for mode in ("fwd+bwd", "inference"):
                t = bench({"linear": step_fn(base, xs, gy, mode), "lora": step_fn(lora, xs, gy, mode),
                           "dymoe": step_fn(dymoe, xs, gy, mode), "dense": step_fn(dymoe, xs, gy, mode, dense=True),
                           "cascade": step_fn(cascade, xs, gy, mode), "keys": step_fn(keys, xs, gy, mode),
                           "plus": step_fn(plus, xs, gy, mode)},
                          args.warmup, args.repeats)
                print(f"{tasks:>5} {share:5.2f} {mode:>9} {t['linear']:8.1f} {t['lora']:8.1f} {t['dymoe']:8.1f} "
                      f"{t['dense']:8.1f} {t['cascade']:8.1f} {t['keys']:8.1f} {t['plus']:8.1f} "
                      f"{t['dymoe'] / t['lora']:10.2f} {t['dense'] / t['lora']:10.2f} {t['dymoe'] / t['dense']:11.2f} "
                      f"{t['cascade'] / t['lora']:12.2f} {t['keys'] / t['cascade']:12.2f} "
                      f"{t['plus'] / t['dymoe']:10.2f} {diff:8.1e}", flush=True)
        if args.profile and tasks == max(args.tasks):
            profile(dymoe, x, gy)
    if args.gathered:
        gathered_cost(make_dymoe(base, max(args.tasks)), x, lora, args)
    if not args.no_centroids:
        centroid_cost(base, x, gy, args)


def profile(layer: DyMoELinear, x: torch.Tensor, gy: torch.Tensor) -> None:
    from torch.profiler import profile as torch_profile
    for mode in ("fwd+bwd", "inference"):
        fn = step_fn(layer, x, gy, mode)
        fn()
        with torch_profile() as prof:
            fn()
        print(f"profile: {mode}, {layer.num_tasks} tasks (self CPU time)")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


def gathered_experts(layer: DyMoELinear, x: torch.Tensor) -> torch.Tensor:
    """Inference output with the per-expert gathered path: tokens sorted by expert, for each expert with
    tokens one [n_e, d] x [d, r] and one [n_e, r] x [r, d] GEMM, ``index_add_`` into the base output."""
    from llava_dymoe.core.routing import cosine_logits_parts, gate
    cfg = layer.dymoe_config
    xf = x.reshape(-1, layer.in_features)
    keys = layer.task_keys()
    g = gate(cosine_logits_parts(xf, [layer.dymoe_router[k] for k in keys], cfg.router_scale), cfg.top_k,
             cfg.router_temperature)
    vals, idx = g.topk(min(cfg.top_k, g.shape[1]), dim=1)
    a = torch.cat([layer.dymoe_A[k] for k in keys]).view(layer.num_experts, layer.expert_rank, -1)
    b = torch.cat([layer.dymoe_B[k] for k in keys], 1).t().reshape(layer.num_experts, layer.expert_rank, -1)
    flat = idx.reshape(-1)
    order = flat.argsort(stable=True)
    tok = order // idx.shape[1]
    gs = vals.reshape(-1)[order] * layer.scaling
    out = torch.empty(tok.shape[0], layer.out_features)
    o = 0
    for e, c in enumerate(torch.bincount(flat, minlength=layer.num_experts).tolist()):
        if c:
            h = xf.index_select(0, tok[o:o + c]) @ a[e].t()
            torch.mm(h * gs[o:o + c, None], b[e], out=out[o:o + c])
            o += c
    return F.linear(xf, layer.weight, layer.bias).index_add_(0, tok, out).view(*x.shape[:-1], -1)


def gathered_cost(layer: DyMoELinear, x: torch.Tensor, lora: nn.Module, args) -> None:
    layer.eval()
    with torch.no_grad():
        y = layer(x)
        rel = float((gathered_experts(layer, x) - y).abs().max() / y.abs().max())
        t = bench({"dense": lambda: layer(x), "gathered": lambda: gathered_experts(layer, x),
                   "lora": step_fn(lora, x, x, "inference")}, args.warmup, args.repeats)
    print(f"per-expert gathered inference, {layer.num_tasks} tasks: gathered {t['gathered']:.1f} ms, banks "
          f"{t['dense']:.1f} ms ({t['gathered'] / t['dense']:.2f}x), lora64 {t['lora']:.1f} ms; maxrel {rel:.1e}")


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
