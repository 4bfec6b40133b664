"""Routing statistics of DyMoE layers, collected on demand (torch only).

``RoutingStats`` accumulates, per ``DyMoELinear`` (keyed by its module name), over the *valid* tokens
of every forward it sees:

* ``n_tokens``;
* ``bank_mass[b]``: the sum of the gate weights ``g`` over the experts of bank (task) ``b``;
* ``top1[e]``: how often expert ``e`` has the largest gate weight (ties: the lowest index);
* with >= 2 banks (old group = every bank but the last, new group = the last one, as in the layer):
  the sums of ``c_old``, ``c_new``, ``D_rel`` and the token-type counts ``new`` / ``old`` /
  ``ambiguous`` at ``tau`` (method.md §2: new = D_rel > tau and c_new > c_old, old = D_rel > tau and
  c_old > c_new, ambiguous = D_rel <= tau), computed on the raw (unmasked) router logits;
* the same counts and bank masses split by token kind when the layer's ``DyMoEContext`` carries an
  int ``token_kind`` mask ``[B, S]`` (``KIND_NAMES``: 0 image, 1 instruction, 2 answer; < 0 ignored).

Collection is off by default: a layer only records when ``layer.attach_stats`` gave it a ``RoutingStats``
(the layer's forward checks one attribute).  ``stats.active`` (or the ``window()`` context) pauses
recording, e.g. so that the recompute pass of gradient checkpointing is not counted twice.
Sums stay on the logits' device in fp64 (no host sync per forward); ``summary()`` converts them.
With ``keep_top1=True`` the per-token top-1 expert of every forward is also kept (``top1_tokens``),
to compare two models token by token.
"""
from __future__ import annotations

import contextlib
from typing import Dict, Iterator, List, Optional

import torch
from torch import Tensor

from .routing import group_scores

#: Token kinds of a ``token_kind`` mask (index = value in the mask).
KIND_NAMES = ("image", "instruction", "answer")
#: Token types of method.md §2, in the order of the ``types`` counters.
TYPE_NAMES = ("new", "old", "ambiguous")
#: Upper end of the D_rel histogram: |a - b| / max(|a|, |b|) <= 2.
D_REL_MAX = 2.0


class _Acc:
    """Sums of one layer (and one token kind)."""

    def __init__(self, n_banks: int, n_experts: int, device: torch.device, with_top1: bool = True):
        z = dict(dtype=torch.float64, device=device)
        self.n_tokens = torch.zeros((), **z)
        self.bank_mass = torch.zeros(n_banks, **z)
        self.top1 = torch.zeros(n_experts, **z) if with_top1 else None
        self.scores = torch.zeros(3, **z)  # sums of c_old, c_new, D_rel
        self.types = torch.zeros(3, **z)   # new, old, ambiguous
        self.n_scored = torch.zeros((), **z)

    def add(self, g: Tensor, bank_of: Tensor, scores: Optional[Tensor], types: Optional[Tensor]) -> None:
        n_banks = self.bank_mass.numel()
        self.n_tokens += g.shape[0]
        self.bank_mass += torch.zeros(n_banks, dtype=torch.float64, device=g.device).index_add_(
            0, bank_of, g.sum(0, dtype=torch.float64))
        if self.top1 is not None and g.shape[0]:
            self.top1 += torch.bincount(g.argmax(1), minlength=self.top1.numel()).double()
        if scores is not None:
            self.scores += scores.sum(0, dtype=torch.float64)
            self.types += types.sum(0, dtype=torch.float64)
            self.n_scored += scores.shape[0]

    def merge(self, other: "_Acc") -> None:
        for name in ("n_tokens", "bank_mass", "top1", "scores", "types", "n_scored"):
            a, b = getattr(self, name), getattr(other, name)
            if a is not None and b is not None:
                setattr(self, name, a + b.to(a.device))

    def summary(self) -> Dict[str, object]:
        n = float(self.n_tokens)
        mass = self.bank_mass.tolist()
        total = sum(mass)
        out: Dict[str, object] = {"n_tokens": int(n), "bank_mass": mass,
                                  "bank_share": [m / total if total > 0 else 0.0 for m in mass]}
        if self.top1 is not None:
            out["top1_hist"] = [int(v) for v in self.top1.tolist()]
        k = float(self.n_scored)
        if k > 0:
            c_old, c_new, d_rel = (v / k for v in self.scores.tolist())
            out.update(mean_c_old=c_old, mean_c_new=c_new, mean_d_rel=d_rel,
                       mean_g_new=mass[-1] / n if n else 0.0,
                       **{f"frac_{t}": v / k for t, v in zip(TYPE_NAMES, self.types.tolist())})
        return out


class RoutingStats:
    """Accumulator of routing statistics for every layer it is attached to (see module docstring).

    Args:
        tau: D_rel threshold for the token types; None = each layer's ``dymoe_config.tau``.
        keep_top1: also keep the per-token top-1 expert of every forward (``top1_tokens[name]``).
        d_rel_bins: > 0 also counts D_rel in that many equal bins over [0, D_REL_MAX] (``d_rel_hist``).
        active: whether recording starts enabled.
    """

    def __init__(self, tau: Optional[float] = None, keep_top1: bool = False, active: bool = True,
                 d_rel_bins: int = 0):
        if tau is not None and not tau >= 0:
            raise ValueError(f"RoutingStats: tau must be >= 0, got {tau!r}")
        if d_rel_bins < 0:
            raise ValueError(f"RoutingStats: d_rel_bins must be >= 0, got {d_rel_bins!r}")
        self.d_rel_bins = d_rel_bins
        self.d_rel_hist: Dict[str, Tensor] = {}
        self.tau = tau
        self.keep_top1 = keep_top1
        self.active = active
        self.layers: Dict[str, _Acc] = {}
        self.kinds: Dict[str, Dict[int, _Acc]] = {}
        self.top1_tokens: Dict[str, List[Tensor]] = {}
        self.experts_per_task: Dict[str, int] = {}

    @contextlib.contextmanager
    def window(self) -> Iterator["RoutingStats"]:
        """Record only inside this block (``active`` is restored afterwards)."""
        before, self.active = self.active, True
        try:
            yield self
        finally:
            self.active = before

    def reset(self) -> None:
        self.layers.clear()
        self.kinds.clear()
        self.top1_tokens.clear()
        self.d_rel_hist.clear()

    @torch.no_grad()
    def record(self, name: str, logits: Tensor, g: Tensor, experts_per_task: int, tau: float,
               valid: Optional[Tensor] = None, kind: Optional[Tensor] = None, gap: str = "similarity",
               scale: float = 1.0) -> None:
        """Add one forward of layer ``name``: raw logits and gate weights ``[N, E]``, optional bool
        ``valid`` and int ``kind`` ``[N]``.  The last ``experts_per_task`` columns are the new group; ``gap``
        and ``scale`` say how D_rel is measured (``routing.relative_gap``, the layer's ``tag_gap``)."""
        if not self.active:
            return
        n, e = logits.shape
        if e % experts_per_task:
            raise ValueError(f"RoutingStats: {e} experts is not a multiple of {experts_per_task} per task")
        tau = self.tau if self.tau is not None else tau
        if valid is not None:
            logits, g = logits[valid], g[valid]
            kind = kind[valid] if kind is not None else None
        g = g.detach()
        n_banks = e // experts_per_task
        bank_of = torch.arange(e, device=g.device) // experts_per_task
        scores = types = None
        if n_banks >= 2:
            c_old, c_new, d_rel = group_scores(logits.detach(), e - experts_per_task, gap, scale)
            sure = d_rel > tau
            types = torch.stack([sure & (c_new > c_old), sure & (c_old > c_new), ~sure], 1).double()
            scores = torch.stack([c_old, c_new, d_rel], 1).double()
            if self.d_rel_bins:
                h = torch.histc(d_rel.double(), self.d_rel_bins, 0.0, D_REL_MAX)
                self.d_rel_hist[name] = self.d_rel_hist[name] + h if name in self.d_rel_hist else h
        acc = self.layers.get(name)
        if acc is None or acc.bank_mass.numel() != n_banks:
            acc = self.layers[name] = _Acc(n_banks, e, g.device)
            self.kinds[name] = {}
            self.experts_per_task[name] = experts_per_task
        acc.add(g, bank_of, scores, types)
        if kind is not None:
            per_kind = self.kinds[name]
            for k in range(len(KIND_NAMES)):
                sel = kind == k
                if k not in per_kind:
                    per_kind[k] = _Acc(n_banks, e, g.device, with_top1=False)
                per_kind[k].add(g[sel], bank_of, None if scores is None else scores[sel],
                                None if types is None else types[sel])
        if self.keep_top1:
            self.top1_tokens.setdefault(name, []).append(g.argmax(1).cpu())

    def merge(self, other: "RoutingStats") -> None:
        """Add ``other``'s sums into this accumulator (``top1_tokens`` are not merged)."""
        for name, acc in other.layers.items():
            mine = self.layers.get(name)
            if mine is None or mine.bank_mass.numel() != acc.bank_mass.numel():
                self.layers[name] = _Acc(acc.bank_mass.numel(), acc.top1.numel(), acc.bank_mass.device)
                self.kinds[name] = {}
                self.experts_per_task[name] = other.experts_per_task[name]
            self.layers[name].merge(acc)
            for k, kacc in other.kinds.get(name, {}).items():
                if k not in self.kinds[name]:
                    self.kinds[name][k] = _Acc(acc.bank_mass.numel(), 0, acc.bank_mass.device, with_top1=False)
                self.kinds[name][k].merge(kacc)

    def summary(self) -> Dict[str, Dict[str, object]]:
        """Per layer name: ``n_tokens``, ``bank_mass``/``bank_share``, ``top1_hist`` and, with >= 2 banks,
        ``mean_c_old``, ``mean_c_new``, ``mean_d_rel``, ``mean_g_new``, ``frac_new/old/ambiguous``;
        ``by_kind`` (kind name -> the same without ``top1_hist``) when kinds were given."""
        out = {}
        for name, acc in self.layers.items():
            row = acc.summary()
            kinds = {KIND_NAMES[k]: a.summary() for k, a in sorted(self.kinds.get(name, {}).items())
                     if float(a.n_tokens) > 0}
            if kinds:
                row["by_kind"] = kinds
            if name in self.d_rel_hist:
                row["d_rel_hist"] = [int(v) for v in self.d_rel_hist[name].tolist()]
            out[name] = row
        return out

    def layer_mean(self, keys=("frac_new", "frac_old", "frac_ambiguous", "mean_g_new")) -> Dict[str, float]:
        """Mean over layers of each key in ``keys`` (layers lacking a key, e.g. with one bank, are skipped)."""
        return _mean_over(list(self.summary().values()), keys)

    def layer_mean_by_kind(self, keys=("frac_new", "frac_old", "frac_ambiguous", "mean_g_new", "n_tokens")
                           ) -> Dict[str, Dict[str, float]]:
        """``{kind name: layer_mean of the tokens of that kind}`` (kinds that were recorded)."""
        rows = [r.get("by_kind", {}) for r in self.summary().values()]
        kinds = [k for k in KIND_NAMES if any(k in r for r in rows)]
        return {k: _mean_over([r[k] for r in rows if k in r], keys) for k in kinds}


def _mean_over(rows, keys) -> Dict[str, float]:
    out = {}
    for key in keys:
        vals = [float(r[key]) for r in rows if key in r]
        if vals:
            out[key] = sum(vals) / len(vals)
    return out

