"""``DyMoELinear``: an ``nn.Linear`` with one LoRA-expert bank per task and a cosine router.

    y = W0 x + b + (alpha / r) * sum_e g_e(x) B_e A_e dropout(x)              (method.md §1.3–§1.4)

r = experts_per_task * expert_rank is the rank of one task's bank; expert e is a contiguous rank slice
(``expert_rank`` rows of A, columns of B).  Banks are kept per task in ``ParameterDict``s keyed
``"t0", "t1", ...`` (``dymoe_A`` [r, in], ``dymoe_B`` [out, r], ``dymoe_router`` [experts, in]); the base
``weight``/``bias`` are the wrapped layer's own Parameters (no copy; state-dict names unchanged).

Routing (fp32 whatever the input dtype): cosine logits over all experts; the config's token-to-bank rule
(``core/rules``, one class per rule, chosen by ``rules.make_rule``) says which experts each token may use
(the paper's: while training task >= 2 the TAG mask, method.md §3.1, restricts each token to the old or to
the new group) or how much each bank weighs (``given``); then top-k + softmax(z / T).
The "new" group is always the last bank.  Eval mode (the paper's rule) routes over all experts with no TAG
and no aux.
Baselines reuse the layer through ``DyMoEConfig``: ``router="linear"`` (dot-product logits, MoELoRA's
dense softmax gate), ``router="none"`` (every expert weight 1: the banks are summed, LoRA / O-LoRA),
``c_orth`` (O-LoRA's orthogonality loss between the trainable bank's A and the frozen ones).
RSR (and the optional balance loss) are computed on the unmasked logits and their gradient is injected
on the layer output (``transport.py``) when a ``DyMoEContext`` is attached (``attach_context``); without a
context the layer computes no aux terms.  Routing statistics (``stats.py``) are recorded only when a
``RoutingStats`` is attached (``attach_stats``); otherwise the forward pays one attribute check.

Speed: no Python loop over experts.  Per forward, contiguous frozen banks are concatenated into one part
(cached in eval mode under no_grad, i.e. inference; the cache is keyed on the parameters' storage and
version counters and dropped by ``train()``) and each trainable bank is its own part, so weight
gradients are only formed for trainable banks: x_a = dropout(x) A_part^T, gate on the rank dimension
(view [N, E, r] * g[..., None]), delta = sum_parts x_a B_part^T.

Exact savings (``_mix_sparse``, the default): a bank's contribution to a token whose gate weights in that
bank are all exactly 0 is exactly 0, so it is not computed.  While training with TAG each token lives in
one group, so the frozen banks run only on the old/ambiguous tokens and the trainable bank only on the new
ones; at inference frozen banks no token of the batch routes to are skipped, and a bank used by few tokens
(cascade routing, softmax underflow at T = 0.01) runs on the gathered rows of its tokens.  The maths is
unchanged; the float results can differ from ``_mix`` in the last bits where rows are gathered (measured
max |sparse - dense| / max |dense| over output and input gradient: fp32 <= 3e-7, bf16 3e-3, i.e. one bf16
rounding; benchmarks/bench_layer.py "maxrel", scripts/gpu_check.py layer).  ``LLAVA_DYMOE_DENSE=1`` forces
``_mix``, which reproduces earlier results bit for bit.  On CUDA the sparse path synchronises once per layer
(token counts are read on the host).  A per-expert gathered path (tokens sorted by expert, rank-4
GEMMs) was measured 6-12x slower than the dense banks on CPU at d = 1024, 4096 tokens, top-16 of 128, so it
is not used (benchmarks/bench_layer.py ``--gathered``).
"""
from __future__ import annotations

import math
import os
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import DyMoEConfig
from .losses import masked_mean, new_expert_balance_loss, orthogonality_loss, rsr_losses
from .routing import banked_gate, cosine_logits_parts, gate, routing_dtype
from .rules import Rule, RuleInput, make_rule, rule_key
from .stats import RoutingStats
from .transport import DyMoEContext, inject_aux

_BANKS = ("dymoe_A", "dymoe_B", "dymoe_router")

#: Environment switch: ``LLAVA_DYMOE_DENSE=1`` computes every bank for every token (``_mix``), the path of
#: llava_dymoe before the exact savings, bit for bit; unset/0 = the sparse path (``_mix_sparse``).
DENSE_ENV = "LLAVA_DYMOE_DENSE"
#: A group of banks of total rank R used by m of a forward's n tokens runs on the gathered rows of its tokens
#: when (n - m) * R > GATHER_ROW_COST * m, i.e. when the skipped GEMM work beats the row copies (gather in,
#: scatter out, and their backward), which cost about GATHER_ROW_COST rank-units per gathered row on CPU
#: (benchmarks/bench_layer.py --new-share: one rank-64 bank at half the tokens is slower gathered).
GATHER_ROW_COST = 128
#: ...and only for groups of at least this total rank: on CPU a rank-64 GEMM on 500 gathered rows of 4096 took
#: as long as on all 4096 rows (d = 1024), so single banks (cascade's per-bank groups, the trainable bank)
#: never paid; a 7-bank frozen run (rank 448) on half the tokens did (fwd+bwd 0.77x of the dense path).
GATHER_MIN_RANK = 256
#: ...and only in forwards of at least this many tokens: below it the index bookkeeping costs about what it
#: saves, and tiny batches (decoding, unit tests) keep ``_mix``'s rounding (a GEMM's per-row result depends on
#: its row count, so gathered rows differ from ``_mix`` in the last bits).
GATHER_MIN_TOKENS = 256
#: A run of frozen banks is computed bank by bank (each on its own tokens) when its tokens are spread over its
#: banks: sum of per-bank token counts <= this share of (run tokens x banks); else as one concatenated group.
SPLIT_MAX_SHARE = 0.5


class _GatherRows(torch.autograd.Function):
    """``t.index_select(0, idx)`` for *unique* ``idx`` whose backward writes the rows back with ``index_copy_``
    (``index_select``'s own backward accumulates with ``index_add_``, several times slower on CPU)."""

    @staticmethod
    def forward(ctx, t: Tensor, idx: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(idx)
        ctx.rows = t.shape[0]
        return t.index_select(0, idx)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (idx,) = ctx.saved_tensors
        out = grad.new_zeros((ctx.rows, *grad.shape[1:]))
        return out.index_copy_(0, idx, grad), None


def gather_rows(t: Tensor, idx: Tensor) -> Tensor:
    """Rows ``idx`` (unique, int64) of ``t``; plain ``index_select`` when no gradient is needed."""
    if torch.is_grad_enabled() and t.requires_grad:
        return _GatherRows.apply(t, idx)
    return t.index_select(0, idx)


def compute_dtype(bank_dtype: torch.dtype, device: torch.device) -> torch.dtype:
    """The dtype of the expert products: the banks' own, or autocast's inside an autocast region.

    HF's Trainer runs a ``--bf16 True`` forward without DeepSpeed under ``torch.autocast`` (CPU AMP), with
    the banks kept fp32 (master weights) next to the bf16 base: autocast makes every ``F.linear`` bf16, but not
    the in-place ``addmm_`` / ``index_put_`` that accumulate the banks, so the products are cast explicitly to
    autocast's dtype (fp64 banks are never autocast).  Routing is not affected (``routing.full_precision``)."""
    try:
        if bank_dtype != torch.float64 and torch.is_autocast_enabled(device.type):
            return torch.get_autocast_dtype(device.type)
    except (RuntimeError, TypeError):  # a device type autocast does not know
        pass
    return bank_dtype


def dense_forced() -> bool:
    """True when ``LLAVA_DYMOE_DENSE`` is set to a value other than "", "0", "false", "no"."""
    return os.environ.get(DENSE_ENV, "").strip().lower() not in ("", "0", "false", "no")


class DyMoELinear(nn.Linear):
    """DyMoE wrapper around an existing ``nn.Linear`` (see module docstring).

    Architecture fields (experts_per_task, expert_rank, lora_alpha, lora_dropout) are fixed at
    construction; routing fields (top_k, temperatures, tau, use_tag, coefficients) are read from
    ``self.dymoe_config`` at every forward, so one shared config object steers all layers.
    """

    adapter_layer_names = _BANKS
    _dymoe_stats: Optional[RoutingStats] = None  # set by ``attach_stats`` below; None = no statistics
    _dymoe_stats_name = ""

    def __init__(self, base: nn.Linear, cfg: DyMoEConfig):
        if not isinstance(base, nn.Linear):
            raise TypeError(f"DyMoELinear wraps an nn.Linear, got {type(base).__name__}")
        if isinstance(base, DyMoELinear):
            raise ValueError("DyMoELinear: the layer is already a DyMoELinear; call add_task() to extend it")
        if not isinstance(cfg, DyMoEConfig):
            raise TypeError(f"DyMoELinear needs a DyMoEConfig, got {type(cfg).__name__}")
        nn.Module.__init__(self)  # not nn.Linear.__init__: it would allocate a second weight
        self.in_features = base.in_features  # never read weight.shape (ZeRO-3 partitions it to [0])
        self.out_features = base.out_features
        self.weight = base.weight
        if base.bias is None:
            self.register_parameter("bias", None)
        else:
            self.bias = base.bias
        self.dymoe_config = cfg
        self.experts_per_task = cfg.experts_per_task
        self.expert_rank = cfg.expert_rank
        self.scaling = cfg.scaling
        self.dymoe_A = nn.ParameterDict()
        self.dymoe_B = nn.ParameterDict()
        self.dymoe_router = nn.ParameterDict()
        # bank_keys="refreshed" (beyond the paper): per-bank key rows for the cascade's bank decision, never trained
        self.dymoe_key = nn.ParameterDict()
        self.bank_names: Tuple[str, ...] = _BANKS + (("dymoe_key",) if cfg.bank_keys != "router" else ())
        self.dymoe_dropout = nn.Dropout(cfg.lora_dropout) if cfg.lora_dropout > 0 else nn.Identity()
        self._dymoe_ctx: Optional[DyMoEContext] = None
        self._dymoe_cache: Dict[Tuple[str, ...], Tuple[tuple, Tuple[Tensor, Tensor, Tensor]]] = {}
        self._dymoe_rule: Optional[Tuple[Tuple[str, str, str], Rule]] = None  # (rule_key, rule): ``_rule()``

    @classmethod
    def from_linear(cls, base: nn.Linear, cfg: DyMoEConfig) -> "DyMoELinear":
        return cls(base, cfg)

    # ------------------------------------------------------------------ structure
    @property
    def num_tasks(self) -> int:
        return len(self.dymoe_A)

    @property
    def num_experts(self) -> int:
        return self.num_tasks * self.experts_per_task

    @property
    def bank_rank(self) -> int:
        return self.experts_per_task * self.expert_rank

    def task_keys(self) -> List[str]:
        return list(self.dymoe_A.keys())

    def dymoe_parameters(self) -> Iterator[nn.Parameter]:
        for name in self.bank_names:
            yield from getattr(self, name).values()

    def add_task(self, dtype: Optional[torch.dtype] = None) -> str:
        """Freeze every existing bank and add a trainable one; returns its key ``"t{k}"``.

        New A and router rows ~ kaiming_uniform(a=sqrt(5)), B = 0 (method.md §1.3), created on the base
        weight's device in ``dtype`` (fp32 by default).  The base weight's ``requires_grad`` is untouched.
        """
        for p in self.dymoe_parameters():
            p.requires_grad_(False)
        key = f"t{self.num_tasks}"
        kw = dict(device=self.weight.device, dtype=dtype or torch.float32)
        a = torch.empty(self.bank_rank, self.in_features, **kw)
        router = torch.empty(self.experts_per_task, self.in_features, **kw)
        nn.init.kaiming_uniform_(a, a=math.sqrt(5))
        nn.init.kaiming_uniform_(router, a=math.sqrt(5))
        self.dymoe_A[key] = nn.Parameter(a)
        self.dymoe_B[key] = nn.Parameter(torch.zeros(self.out_features, self.bank_rank, **kw))
        self.dymoe_router[key] = nn.Parameter(router)
        if "dymoe_key" in self.bank_names:  # keys start as the router rows; set_bank_keys moves them
            self.dymoe_key[key] = nn.Parameter(router.detach().clone(), requires_grad=False)
        self._dymoe_cache.clear()
        return key

    def set_trainable_tasks(self, keys: Sequence[str]) -> None:
        """``requires_grad`` True for the banks in ``keys``, False for the others."""
        unknown = set(keys) - set(self.task_keys())
        if unknown:
            raise ValueError(f"set_trainable_tasks: unknown task keys {sorted(unknown)}; have {self.task_keys()}")
        for name in _BANKS:
            for k, p in getattr(self, name).items():
                p.requires_grad_(k in keys)

    def expected_bank_shapes(self) -> Dict[str, Tuple[int, int]]:
        shapes = {"dymoe_A": (self.bank_rank, self.in_features), "dymoe_B": (self.out_features, self.bank_rank),
                  "dymoe_router": (self.experts_per_task, self.in_features)}
        if "dymoe_key" in self.bank_names:
            shapes["dymoe_key"] = (self.experts_per_task, self.in_features)
        return shapes

    def bank_state_dict(self, keys: Optional[Sequence[str]] = None) -> Dict[str, Tensor]:
        """Banks (all, or the tasks in ``keys``) as detached tensors ``{"dymoe_A.t0": ..., ...}`` (storage
        shared; under ZeRO-3 gather the parameters first)."""
        return {f"{name}.{k}": p.detach() for name in self.bank_names for k, p in getattr(self, name).items()
                if keys is None or k in keys}

    def load_banks(self, state: Mapping[str, Tensor], dtype: Optional[torch.dtype] = torch.float32) -> int:
        """Rebuild frozen banks ``t0..t{n-1}`` from ``bank_state_dict()``-style tensors; returns n.

        The layer must have no bank yet.  Keys must be exactly ``{dymoe_A,dymoe_B,dymoe_router}.t{k}`` (and
        ``dymoe_key.t{k}`` with ``bank_keys="refreshed"``; when no bank has keys, each starts as its router rows)
        for k = 0..n-1 and shapes must match the config (structure is never inferred from shapes).
        """
        if self.num_tasks:
            raise ValueError(f"load_banks: the layer already has {self.num_tasks} bank(s)")
        if "dymoe_key" in self.bank_names and not any(k.startswith("dymoe_key.") for k in state):
            # banks saved without keys (an earlier task trained with bank_keys="router"): their keys start as
            # their router rows, which is what the cascade scored them with until now
            state = {**state, **{f"dymoe_key.{k.split('.', 1)[1]}": t for k, t in state.items()
                                 if k.startswith("dymoe_router.")}}
        n = len({k.split(".", 1)[1] for k in state if "." in k})
        expected = {f"{name}.t{i}" for name in self.bank_names for i in range(n)}
        if set(state) != expected:
            raise ValueError(f"load_banks: expected keys {sorted(expected)}; missing "
                             f"{sorted(expected - set(state))}, unexpected {sorted(set(state) - expected)}")
        shapes = self.expected_bank_shapes()
        for key, t in state.items():
            want = shapes[key.split(".", 1)[0]]
            if tuple(t.shape) != want:
                raise ValueError(f"load_banks: {key} has shape {tuple(t.shape)}, the config expects {want}")
        for i in range(n):
            for name in self.bank_names:
                t = state[f"{name}.t{i}"]
                p = t.detach().to(device=self.weight.device, dtype=dtype or t.dtype, copy=True)
                getattr(self, name)[f"t{i}"] = nn.Parameter(p, requires_grad=False)
        self._dymoe_cache.clear()
        return n

    def merge(self, *args, **kwargs):
        raise NotImplementedError("DyMoELinear.merge: token-routed experts cannot be merged into the base "
                                  "weight (the mixture weights depend on each token); keep the DyMoE layers")

    def to_linear(self) -> nn.Linear:
        """A plain ``nn.Linear`` sharing this layer's base weight and bias (experts dropped)."""
        lin = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None, device="meta")
        lin.weight, lin.bias = self.weight, self.bias
        return lin

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"tasks={self.num_tasks}, experts={self.num_experts}, expert_rank={self.expert_rank}, "
                f"top_k={self.dymoe_config.top_k}")

    def train(self, mode: bool = True):
        if mode:  # the no-grad concatenation cache is for inference; free it when training resumes
            self._dymoe_cache.clear()
        if self._dymoe_rule is not None:  # e.g. the sequence bank: a prompt's decision never outlives a mode change
            self._dymoe_rule[1].reset()
        return super().train(mode)

    # ------------------------------------------------------------------ forward
    def forward(self, x: Tensor) -> Tensor:
        if self.num_tasks == 0:
            return F.linear(x, self.weight, self.bias)
        if x.shape[-1] != self.in_features:
            raise ValueError(f"DyMoELinear: input has {x.shape[-1]} features, expected {self.in_features}")
        cfg = self.dymoe_config
        xf = x.reshape(-1, self.in_features)
        parts = self._parts()
        n_old = self.num_experts - self.experts_per_task if self.training and self.num_tasks >= 2 else 0
        use_new = logits = None
        if cfg.router == "none":  # LoRA / O-LoRA: every expert (bank) with weight 1
            g = torch.ones(xf.shape[0], self.num_experts, dtype=routing_dtype(xf.dtype), device=xf.device)
        else:
            scale = cfg.router_scale if cfg.router == "cosine" else 0.0  # scale <= 0: dot product
            logits = cosine_logits_parts(xf, [p[2] for p in parts], scale)  # fp32 [N, E]
            keys = [self.dymoe_key[k] for k in self.task_keys()] if "dymoe_key" in self.bank_names else ()
            a = self._rule().assign(RuleInput(xf, logits, tuple(x.shape[:-1]), self.training, self.num_tasks,
                                              self.experts_per_task, n_old, cfg, self._dymoe_ctx, keys, scale))
            use_new = a.use_new
            if a.bank_weights is not None:
                g = banked_gate(logits, self.experts_per_task, cfg.top_k, cfg.router_temperature, a.bank_weights)
            else:
                g = gate(logits, cfg.top_k, cfg.router_temperature, a.allowed)
            if self._dymoe_stats is not None:
                self._record_stats(logits, g)
        aux: List[Tuple[Tensor, float]] = []
        if self.training and self._dymoe_ctx is not None:
            aux = self._aux(logits, n_old, use_new)
        if cfg.router == "none" or dense_forced():  # router "none": every bank has weight 1, nothing to skip
            y = self._mix(xf, g, parts, aux)
        else:
            y = self._mix_sparse(xf, g, parts, aux)
        return y.view(*x.shape[:-1], self.out_features)

    def _rule(self) -> Rule:
        """The token-to-bank rule of the config (``core/rules``), rebuilt when its fields change."""
        key = rule_key(self.dymoe_config)
        if self._dymoe_rule is None or self._dymoe_rule[0] != key:
            self._dymoe_rule = (key, make_rule(self.dymoe_config))
        return self._dymoe_rule[1]

    @property
    def _dymoe_seq_bank(self) -> Optional[Tensor]:
        """``bank_scope="sequence"`` at inference: the kept prompt's bank per sequence, int64 ``[B]`` (or None)."""
        return getattr(self._dymoe_rule[1], "kept", None) if self._dymoe_rule is not None else None

    def _record_stats(self, logits: Tensor, g: Tensor) -> None:
        """Hand this forward's routing to the attached ``RoutingStats`` (valid tokens/kinds from the context)."""
        ctx, n = self._dymoe_ctx, logits.shape[0]
        valid = ctx.token_valid(n, logits.device) if ctx is not None else None
        kind = ctx.token_kinds(n, logits.device) if ctx is not None else None
        cfg = self.dymoe_config
        self._dymoe_stats.record(self._dymoe_stats_name, logits, g, self.experts_per_task, cfg.tau, valid, kind,
                                 gap=cfg.tag_gap, scale=cfg.router_scale)

    def _mix(self, xf: Tensor, g: Tensor, parts, aux: Sequence[Tuple[Tensor, float]]) -> Tensor:
        """``W0 x + b + sum_parts (dropout(x) A^T  *_rank  g*scaling) B^T``; the expert part runs in the
        banks' dtype and is cast back to the input dtype.  Each ``(loss, scale)`` of ``aux`` is injected
        on the gated activations of the last (trainable) part."""
        dt = compute_dtype(self.dymoe_A[self.task_keys()[-1]].dtype, xf.device)
        base = F.linear(xf, self.weight, self.bias)
        fused = base.dtype == dt  # accumulate the expert products straight into the base output (addmm)
        xd = self.dymoe_dropout(xf.to(dt))
        gs = (g * self.scaling).to(dt)
        n, r = xf.shape[0], self.expert_rank
        acc, offset = (base if fused else None), 0
        for i, (a, b, _, ne) in enumerate(parts):
            xa = (F.linear(xd, a.to(dt)).view(n, ne, r) * gs[:, offset:offset + ne, None]).view(n, ne * r)
            if i == len(parts) - 1:
                for term in aux:
                    xa = inject_aux(xa, *term)
            if acc is None:
                acc = F.linear(xa, b.to(dt))
            else:  # in place: neither the base product nor earlier addmm_ results are saved for backward
                acc = acc.addmm_(xa, b.to(dt).t())
            offset += ne
        return acc if fused else base + acc.to(base.dtype)

    def _mix_sparse(self, xf: Tensor, g: Tensor, parts, aux: Sequence[Tuple[Tensor, float]]) -> Tensor:
        """``_mix`` computing each bank only for the tokens that route to it (same maths, see module doc).

        A token's row of bank b is skipped when all its gate weights in b are exactly 0 (outside the top-k,
        masked away by TAG / cascade, or softmax underflow at T = 0.01): its contribution is exactly 0.
        Groups come from ``_sparse_groups``: groups used by most tokens are computed over every row (as
        ``_mix``), the others on the gathered rows of their tokens (rows in, ``index_put_(accumulate=True)`` out); frozen banks
        no token uses are skipped; the trainable bank always runs (on 0 rows if need be), so its parameters
        get a gradient (zeros) as in ``_mix``.  Results equal ``_mix``'s up to float rounding (bit for bit
        when every group runs on every row); ``LLAVA_DYMOE_DENSE=1`` forces ``_mix``."""
        keys = self.task_keys()
        dt = compute_dtype(self.dymoe_A[keys[-1]].dtype, xf.device)
        base = F.linear(xf, self.weight, self.bias)
        fused = base.dtype == dt
        xd = self.dymoe_dropout(xf.to(dt))  # over every row: the same dropout draw as ``_mix``
        gs = (g * self.scaling).to(dt)
        n, r, ept = xf.shape[0], self.expert_rank, self.experts_per_task
        # [N, T]: token n has a non-zero weight in bank t (gs >= 0: one amax pass instead of ne + any)
        used = gs.view(n, len(keys), ept).amax(2) > 0
        counts = used.sum(0).tolist()
        acc = base if fused else None
        injected = not aux
        groups = self._sparse_groups(used, counts)
        known, start = {}, 0  # the (A, B) the forward's ``_parts`` already built, by bank range
        for pa, pb, _, ne in parts:
            known[(start, start + ne // ept)] = (pa, pb)
            start += ne // ept
        for i, (b0, b1, gather) in enumerate(groups):
            a, b = known.get((b0, b1)) or self._group_banks(keys[b0:b1])
            if a.dtype != dt:  # fp32 banks under autocast: the in-place addmm_/index_put_ are not autocast
                a, b = a.to(dt), b.to(dt)
            off, ne = b0 * ept, (b1 - b0) * ept
            last = i == len(groups) - 1 and b1 == len(keys)
            if not gather:
                xa = (F.linear(xd, a).view(n, ne, r) * gs[:, off:off + ne, None]).view(n, ne * r)
                if last:
                    for term in aux:
                        xa = inject_aux(xa, *term)
                    injected = True
                acc = F.linear(xa, b) if acc is None else acc.addmm_(xa, b.t())
                continue
            idx = (used[:, b0] if b1 - b0 == 1 else used[:, b0:b1].any(1)).nonzero().squeeze(1)
            m = idx.shape[0]
            xa = (F.linear(gather_rows(xd, idx), a).view(m, ne, r)
                  * gather_rows(gs.narrow(1, off, ne), idx)[:, :, None]).view(m, ne * r)
            if last:
                for term in aux:
                    xa = inject_aux(xa, *term)
                injected = True
            if acc is None:
                acc = base.new_zeros(n, self.out_features, dtype=dt)
            # rounding: product then add, not addmm's fused add.  index_put_(accumulate) rather than index_add_,
            # which took 10x longer on CPU (a few hundred rows into [4096, 1024]: 318 ms against 32 ms)
            acc = acc.index_put_((idx,), F.linear(xa, b), accumulate=True)
        y = base if acc is None else acc if fused else base + acc.to(base.dtype)
        if not injected:  # the last bank was skipped (frozen, no token): the aux gradient rides on the output
            for term in aux:
                y = inject_aux(y, *term)
        return y

    def _sparse_groups(self, used: Tensor, counts: Sequence[int]) -> List[Tuple[int, int, bool]]:
        """``(first bank, end bank, gather)`` groups for ``_mix_sparse`` (see ``used``/``counts`` there).

        A trainable bank (grad enabled) is a group of its own and always present.  Frozen banks no token
        uses are dropped; the others form runs of consecutive banks.  A run is split into single banks when
        its tokens are spread over its banks (sum of the banks' token counts <= ``SPLIT_MAX_SHARE`` x run
        tokens x banks, e.g. cascade routing, each token in one bank), else it is one group over the union of
        its tokens.  A group is gathered when that saves more GEMM work than the row copies cost
        (``GATHER_ROW_COST``) and the forward has ``GATHER_MIN_TOKENS`` tokens or more, else it runs on every
        row."""
        grad = torch.is_grad_enabled()
        keys = self.task_keys()
        n, nb = used.shape
        big = n >= GATHER_MIN_TOKENS
        rank = self.bank_rank

        def gather(m: int, banks: int) -> bool:
            return (big and m < n and banks * rank >= GATHER_MIN_RANK
                    and (n - m) * banks * rank > GATHER_ROW_COST * m)

        def trainable(t: int) -> bool:
            return grad and any(getattr(self, nm)[keys[t]].requires_grad for nm in _BANKS)

        groups: List[Tuple[int, int, bool]] = []
        t = 0
        while t < nb:
            if trainable(t):
                groups.append((t, t + 1, gather(counts[t], 1)))
                t += 1
                continue
            if counts[t] == 0:
                t += 1
                continue
            s = t
            while t < nb and counts[t] > 0 and not trainable(t):
                t += 1
            union = counts[s] if t - s == 1 else int(used[:, s:t].any(1).sum())
            if (big and t - s > 1 and rank >= GATHER_MIN_RANK
                    and sum(counts[s:t]) <= SPLIT_MAX_SHARE * union * (t - s)):
                groups.extend((b, b + 1, gather(counts[b], 1)) for b in range(s, t))
            else:
                groups.append((s, t, gather(union, t - s)))
        return groups

    def _group_banks(self, keys: Sequence[str]) -> Tuple[Tensor, Tensor]:
        """(A, B) of consecutive banks: the parameters themselves for one bank, else their concatenation
        (cached for inference as in ``_parts``, only for the run of every bank: one copy at most)."""
        if len(keys) == 1:
            return self.dymoe_A[keys[0]], self.dymoe_B[keys[0]]
        whole = len(keys) == self.num_tasks
        a, b, _ = self._frozen_cat(tuple(keys), cache=whole and not torch.is_grad_enabled() and not self.training)
        return a, b

    def _parts(self) -> List[Tuple[Tensor, Tensor, Tensor, int]]:
        """(A, B, router, n_experts) per part: runs of frozen banks concatenated, trainable banks alone
        (with grad disabled every bank counts as frozen)."""
        grad = torch.is_grad_enabled()
        runs: List[Tuple[bool, List[str]]] = []
        for k in self.task_keys():
            trainable = grad and any(getattr(self, n)[k].requires_grad for n in _BANKS)
            if runs and not trainable and not runs[-1][0]:
                runs[-1][1].append(k)
            else:
                runs.append((trainable, [k]))
        parts = []
        for _, keys in runs:
            ne = self.experts_per_task * len(keys)
            if len(keys) == 1:
                k = keys[0]
                parts.append((self.dymoe_A[k], self.dymoe_B[k], self.dymoe_router[k], ne))
            else:
                # cache only for inference (eval mode, no grad); the no-grad first pass of a reentrant
                # checkpoint runs in training mode and must not pin a copy of the banks (ZeRO-3 memory)
                parts.append((*self._frozen_cat(tuple(keys), cache=not grad and not self.training), ne))
        return parts

    def _frozen_cat(self, keys: Tuple[str, ...], cache: bool) -> Tuple[Tensor, Tensor, Tensor]:
        params = [(self.dymoe_A[k], self.dymoe_B[k], self.dymoe_router[k]) for k in keys]
        sig = tuple((p.data_ptr(), p._version, p.dtype, p.device, tuple(p.shape)) for ps in params for p in ps)
        hit = self._dymoe_cache.get(keys)
        if hit is not None and hit[0] == sig:
            return hit[1]
        out = (torch.cat([p[0] for p in params], 0), torch.cat([p[1] for p in params], 1),
               torch.cat([p[2] for p in params], 0))
        if cache:
            self._dymoe_cache[keys] = (sig, out)
        return out

    def _aux(self, logits: Optional[Tensor], n_old: int,
             use_new: Optional[Tensor]) -> List[Tuple[Tensor, float]]:
        """Aux terms as ``[(loss, gradient scale), ...]`` for injection (empty when no gradient is wanted).

        * RSR / balance (n_old > 0 only while training task >= 2) on the unmasked ``logits``, scaled by
          the ramped ``ctx.aux_grad_scale()`` (mean over adapted projections, method.md §3.2–3.3);
        * O-LoRA's orthogonality ``sum_old |A_new A_old^T|`` (entrywise L1) when ``c_orth > 0`` and the
          last bank is trainable, scaled by ``ctx.sum_grad_scale()`` (no ramp; summed over projections
          as in O-LoRA).

        Records detached values in the context's collector while its window is open.
        """
        ctx, cfg = self._dymoe_ctx, self.dymoe_config
        multi = n_old > 0
        grad_on = torch.is_grad_enabled()
        out: List[Tuple[Tensor, float]] = []
        terms: Dict[str, Tensor] = {}
        if logits is not None:
            scale = ctx.aux_grad_scale()
            want = (multi and (cfg.c_exc > 0 or cfg.c_spe > 0)) or cfg.c_aux > 0
            grad_path = want and scale != 0.0 and grad_on
            if grad_path or ctx.recording:
                valid = ctx.token_valid(logits.shape[0], logits.device)
                with torch.set_grad_enabled(grad_path):
                    aux = logits.new_zeros(())
                    if multi:
                        target = None
                        if cfg.spe_target == "tag":  # TAG's own decision (all "not new" without TAG)
                            target = use_new if use_new is not None else torch.zeros(
                                logits.shape[0], dtype=torch.bool, device=logits.device)
                        exc, spe = rsr_losses(logits, n_old, cfg.top_k, cfg.rsr_temperature, valid, target)
                        terms.update(rsr_exc=exc, rsr_spe=spe)
                        aux = aux + cfg.c_exc * exc + cfg.c_spe * spe
                    if cfg.c_aux > 0:
                        bal_valid = valid
                        if use_new is not None:  # balance over the tokens TAG actually sends to the new experts
                            bal_valid = use_new if valid is None else use_new & valid
                        bal = new_expert_balance_loss(logits, n_old, cfg.top_k, cfg.router_temperature, bal_valid)
                        terms["balance"] = bal
                        aux = aux + cfg.c_aux * bal
                if use_new is not None:
                    terms["tag_new_frac"] = masked_mean(use_new.to(logits.dtype), valid)
                if grad_path:
                    out.append((aux, scale))
        if cfg.c_orth > 0 and self.num_tasks >= 2:
            keys = self.task_keys()
            a_new = self.dymoe_A[keys[-1]]
            grad_path = grad_on and a_new.requires_grad
            if grad_path or ctx.recording:
                with torch.set_grad_enabled(grad_path):
                    orth = orthogonality_loss(a_new, [self.dymoe_A[k] for k in keys[:-1]])
                terms["orth"] = orth
                if grad_path:
                    out.append((cfg.c_orth * orth, ctx.sum_grad_scale()))
        if ctx.recording:  # once per forward, even with no term (the collector counts layers)
            ctx.collector.record(terms)
        return out


def dymoe_layers(model: nn.Module) -> Iterator[Tuple[str, DyMoELinear]]:
    """``(name, layer)`` for every ``DyMoELinear`` in ``model``."""
    for name, m in model.named_modules():
        if isinstance(m, DyMoELinear):
            yield name, m


def attach_context(model: nn.Module, ctx: Optional[DyMoEContext]) -> int:
    """Point every DyMoE layer of ``model`` at ``ctx`` (None detaches); returns the number of layers."""
    n = 0
    for _, layer in dymoe_layers(model):
        layer._dymoe_ctx = ctx
        n += 1
    return n


def attach_stats(model: nn.Module, stats: Optional[RoutingStats]) -> int:
    """Make every DyMoE layer of ``model`` record into ``stats`` (None detaches); returns the layer count."""
    n = 0
    for name, layer in dymoe_layers(model):
        layer._dymoe_stats = stats
        layer._dymoe_stats_name = name
        n += 1
    return n
