"""Routing functions of DyMoE: cosine router logits, TAG mask, top-k tempered softmax gate.

Pure functions over tensors (torch only).  All of them work in fp32 whatever the input dtype
(bf16/fp16 inputs are up-cast; fp64 inputs stay fp64 so ``torch.autograd.gradcheck`` can be used):
cosine logits divided by T_route = 0.01 reach +-100, which half precision cannot softmax safely
(llava-integration.md §6.2).  That holds inside an autocast region too (HF's CPU AMP under ``--bf16 True``
without DeepSpeed, CUDA AMP): autocast would run the router's matmul in bf16/fp16 on the up-cast fp32
operands (a cosine off by ~2^-8, i.e. ~0.4 before the division by T_route = 0.01), so
``full_precision`` turns it off around that product.

Notation: N tokens, d features, E experts; the first ``n_old`` expert columns are the frozen experts of
earlier tasks ("old group"), the remaining ones the current task's experts ("new group").
"""
from __future__ import annotations

import contextlib
from typing import Optional, Sequence

import torch
from torch import Tensor

#: Norms below this value are replaced by it in the cosine router (x / max(||x||, NORM_EPS)).
NORM_EPS = 1e-6


def routing_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32 for half/bf16/fp32 inputs, fp64 for fp64 inputs."""
    return torch.promote_types(dtype, torch.float32)


def full_precision(t: Tensor):
    """A context in which autocast is off on ``t``'s device (a null context where that device has none)."""
    device = t.device.type
    try:
        if torch.is_autocast_enabled(device):
            return torch.autocast(device_type=device, enabled=False)
    except (RuntimeError, TypeError):  # a device type autocast does not know, or an older torch
        pass
    return contextlib.nullcontext()


def cosine_logits(x: Tensor, router_weight: Tensor, scale: float = 1.0) -> Tensor:
    """Cosine router logits (method.md §1.4).

    ``z[n, e] = scale * <x_n / max(||x_n||, eps), w_e / max(||w_e||, eps)>`` with eps = ``NORM_EPS``;
    if ``scale <= 0`` the plain dot product ``z[n, e] = <x_n, w_e>`` is used (upstream fallback).

    Args:
        x: ``[..., d]`` token features (any float dtype; leading dims are flattened).
        router_weight: ``[E, d]`` one row per expert.
    Returns:
        ``[N, E]`` logits in fp32 (fp64 for fp64 inputs), N = prod(leading dims of x).
    """
    return cosine_logits_parts(x, [router_weight], scale)


def cosine_logits_parts(x: Tensor, router_weights: Sequence[Tensor], scale: float = 1.0) -> Tensor:
    """``cosine_logits(x, cat(router_weights))`` without concatenating the weights.

    Used by the layer so that the weight gradient is only formed for router parts that need one
    (frozen old routers are a separate part).  The token norm is computed once.
    """
    if x.dim() < 1:
        raise ValueError("cosine_logits: x must have a feature dimension")
    if not router_weights:
        raise ValueError("cosine_logits: no router weights given")
    d = x.shape[-1]
    for w in router_weights:
        if w.dim() != 2 or w.shape[1] != d:
            raise ValueError(f"cosine_logits: router weight must be [E, {d}], got {tuple(w.shape)}")
    dt = routing_dtype(x.dtype)
    with full_precision(x):
        xf = x.reshape(-1, d).to(dt)
        outs = []
        for w in router_weights:
            wf = w.to(dt)
            if scale > 0:
                wf = wf / wf.norm(dim=1, keepdim=True).clamp_min(NORM_EPS)
            outs.append(xf @ wf.t())
        z = outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)
        if scale > 0:
            inv = xf.norm(dim=1, keepdim=True).clamp_min(NORM_EPS).reciprocal()
            z = z * (inv * float(scale))
    return z


@torch.no_grad()
def new_token_mask(logits: Tensor, n_old: int, tau: float, gap: str = "similarity", scale: float = 1.0) -> Tensor:
    """Per-token TAG decision ``use_new`` (method.md §2, §3.1), bool ``[N]``.

    ``c_old = max_{e<n_old} z_e``, ``c_new = max_{e>=n_old} z_e``,
    ``D_rel = |c_new - c_old| / max(|c_new|, |c_old|)`` (defined as 0 when both maxima are 0),
    ``use_new = (D_rel > tau) & (c_new > c_old)``.  All False when there is no old or no new group.
    ``gap``/``scale``: how D_rel is measured (``relative_gap``; the paper's by default).
    """
    _check_logits(logits)
    n, e = logits.shape
    _check_n_old(n_old, e, allow_all_old=True)
    if n_old == 0 or n_old == e:
        return torch.zeros(n, dtype=torch.bool, device=logits.device)
    c_old, c_new, d_rel = group_scores(logits, n_old, gap, scale)
    return (d_rel > tau) & (c_new > c_old)


#: How TAG measures the gap between two group scores (``DyMoEConfig.tag_gap``); "similarity" is method.md's.
TAG_GAPS = ("similarity", "distance")


def relative_gap(c_a: Tensor, c_b: Tensor, gap: str = "similarity", scale: float = 1.0) -> Tensor:
    """``D_rel`` between two group scores (elementwise, 0 where the denominator is 0).

    * ``"similarity"`` (method.md §2): ``|c_a - c_b| / max(|c_a|, |c_b|)``, the gap relative to the larger
      cosine score;
    * ``"distance"`` (beyond the paper): ``|c_a - c_b| / max(s - c_a, s - c_b)``, the same gap relative to the
      larger cosine *distance* ``s - c`` (``s`` = the cosine router's scale, the largest possible score).  It
      reads "the token is at least tau closer to one group than to the other"; unlike the similarity form it
      does not shrink when every score is high (rows warm-started on the task's own tokens score ~0.85).
    """
    if gap == "similarity":
        denom = torch.maximum(c_a.abs(), c_b.abs())
    elif gap == "distance":
        if not scale > 0:
            raise ValueError(f"relative_gap: gap='distance' needs a cosine router scale > 0, got {scale!r}")
        denom = (float(scale) - torch.minimum(c_a, c_b)).clamp_min(0.0)
    else:
        raise ValueError(f"relative_gap: gap must be one of {list(TAG_GAPS)}, got {gap!r}")
    return torch.where(denom > 0, (c_a - c_b).abs() / denom.clamp_min(torch.finfo(denom.dtype).tiny),
                       torch.zeros_like(denom))


@torch.no_grad()
def group_scores(logits: Tensor, n_old: int, gap: str = "similarity", scale: float = 1.0):
    """``(c_old, c_new, d_rel)``, each ``[N]`` in fp32 (method.md §2); needs ``0 < n_old < E``.

    ``c_old = max_{e<n_old} z_e``, ``c_new = max_{e>=n_old} z_e``, ``D_rel = relative_gap(c_new, c_old)``:
    ``|c_new - c_old| / max(|c_new|, |c_old|)`` (0 when both maxima are 0) with the paper's ``gap``.
    """
    _check_logits(logits)
    _check_n_old(n_old, logits.shape[1], allow_all_old=False)
    if n_old == 0:
        raise ValueError("group_scores: n_old must be >= 1 (there is no old group)")
    z = logits.to(routing_dtype(logits.dtype))
    c_old = z[:, :n_old].amax(dim=1)
    c_new = z[:, n_old:].amax(dim=1)
    return c_old, c_new, relative_gap(c_new, c_old, gap, scale)


@torch.no_grad()
def tag_mask(logits: Tensor, n_old: int, tau: float) -> Tensor:
    """Token Assignment Guidance mask (method.md §3.1), bool ``[N, E]``, True where allowed.

    Mutually exclusive partition: a "new" token (``new_token_mask``) may use only the new experts,
    every other token (old or ambiguous) only the old experts.  ``n_old == 0`` allows every expert.
    """
    _check_logits(logits)
    n, e = logits.shape
    _check_n_old(n_old, e, allow_all_old=True)
    if n_old == 0 or n_old == e:
        return torch.ones(n, e, dtype=torch.bool, device=logits.device)
    use_new = new_token_mask(logits, n_old, tau)
    is_new_col = torch.arange(e, device=logits.device) >= n_old
    return use_new[:, None] == is_new_col[None, :]


def gate(logits: Tensor, top_k: int, temperature: float, allowed: Optional[Tensor] = None) -> Tensor:
    """Routing weights: masked logits -> top-k -> ``softmax(z / temperature)`` (method.md §1.4).

    ``g[n] = softmax_{e in TopK_n}(z[n, e] / T)`` and 0 outside the top-k, where TopK_n are the
    ``top_k`` largest logits among the allowed experts (``allowed`` False -> logit -inf).
    ``top_k >= E`` is a plain (masked) softmax.  Rows sum to 1, except rows where no expert is allowed:
    those are all zero (the token gets no expert) and carry zero gradient, never NaN.

    Returns ``[N, E]`` in fp32 (fp64 for fp64 logits).
    """
    _check_logits(logits)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"gate: top_k must be an int >= 1, got {top_k!r}")
    if not temperature > 0:
        raise ValueError(f"gate: temperature must be > 0, got {temperature!r}")
    z = logits.to(routing_dtype(logits.dtype))
    n, e = z.shape
    if allowed is not None:
        if allowed.shape != z.shape or allowed.dtype != torch.bool:
            raise ValueError(f"gate: allowed must be a bool tensor of shape {tuple(z.shape)}, "
                             f"got {allowed.dtype} {tuple(allowed.shape)}")
        z = z.masked_fill(~allowed, float("-inf"))
    if top_k < e:
        vals, idx = torch.topk(z, top_k, dim=1)
    else:
        vals, idx = z, None
    # rows whose best logit is -inf (nothing allowed) or NaN: softmax a dummy row, then zero it
    ok = torch.isfinite(vals.amax(dim=1, keepdim=True)) if n else vals.new_ones(0, 1, dtype=torch.bool)
    safe = torch.where(ok, vals, torch.zeros_like(vals))
    p = torch.softmax(safe / temperature, dim=1) * ok
    if idx is None:
        return p
    return torch.zeros_like(z).scatter(1, idx, p)


def _check_logits(logits: Tensor) -> None:
    if logits.dim() != 2:
        raise ValueError(f"logits must be [N, E], got shape {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise ValueError(f"logits must be floating point, got {logits.dtype}")


def _check_n_old(n_old: int, e: int, allow_all_old: bool) -> None:
    hi = e if allow_all_old else e - 1
    if isinstance(n_old, bool) or not isinstance(n_old, int) or not 0 <= n_old <= hi:
        raise ValueError(f"n_old must be an int in [0, {hi}] for {e} experts, got {n_old!r}")


@torch.no_grad()
def bank_scores(logits: Tensor, experts_per_bank: int) -> Tensor:
    """Per-bank group scores ``c[n, b] = max_{e in bank b} z[n, e]``, ``[N, B]`` in fp32 (fp64 stays fp64).

    Banks are consecutive runs of ``experts_per_bank`` columns (bank 0 = the first task's experts).
    """
    _check_logits(logits)
    n, e = logits.shape
    if isinstance(experts_per_bank, bool) or not isinstance(experts_per_bank, int) or experts_per_bank < 1 \
            or e % experts_per_bank:
        raise ValueError(f"bank_scores: {e} experts is not a whole number of banks of {experts_per_bank!r}")
    z = logits.to(routing_dtype(logits.dtype))
    return z.view(n, e // experts_per_bank, experts_per_bank).amax(dim=2)


@torch.no_grad()
def cascade_assignment(logits: Tensor, experts_per_bank: int, tau: float, gap: str = "similarity",
                       scale: float = 1.0) -> Tensor:
    """TAG's decision applied bank by bank, newest first (``assign_rule="cascade"``; beyond the paper).

    With bank scores ``c_b`` (``bank_scores``) and ``m_b = max_{b' < b} c_b'`` (the best earlier bank), bank
    ``b >= 1`` *claims* a token when TAG would have called it new while bank ``b`` was being trained against
    the banks before it::

        claims_b = (c_b > m_b) & (|c_b - m_b| / max(|c_b|, |m_b|) > tau)        (method.md §2, §3.1)

    The token is assigned to the newest bank that claims it, and to bank 0 when none does.  Returns the bank
    index per token, int64 ``[N]``.  For two groups (old = banks ``0..B-2``, new = bank ``B-1``) the newest
    bank claims exactly the tokens of ``new_token_mask(logits, n_old, tau)``, so the training-time TAG
    decision is unchanged; the rule only adds the same test among the older banks, and it needs no task id,
    so it is also the inference rule.  ``gap``/``scale``: how D_rel is measured (``relative_gap``).
    """
    return cascade_from_bank_scores(bank_scores(logits, experts_per_bank), tau, gap, scale)


@torch.no_grad()
def cascade_from_bank_scores(c: Tensor, tau: float, gap: str = "similarity", scale: float = 1.0) -> Tensor:
    """The cascade's decision on given bank scores ``c`` ``[N, B]`` (rows: tokens, or pooled sequences); int64
    ``[N]``, the newest bank that claims the row, else 0 (``cascade_assignment``)."""
    n, nb = c.shape
    if nb == 1:
        return torch.zeros(n, dtype=torch.long, device=c.device)
    m = torch.cummax(c, dim=1).values[:, :-1]  # m[:, b-1] = max_{b' < b} c_b'
    cb = c[:, 1:]
    d_rel = relative_gap(cb, m, gap, scale)
    claims = (d_rel > tau) & (cb > m)  # [N, B-1], column j = bank j+1
    claims = torch.cat([torch.ones(n, 1, dtype=torch.bool, device=c.device), claims], dim=1)
    # newest claiming bank: the last True column
    idx = torch.arange(nb, device=c.device).expand(n, nb)
    return torch.where(claims, idx, torch.zeros_like(idx)).amax(dim=1)


@torch.no_grad()
def sequence_cascade_assignment(logits: Tensor, batch: int, experts_per_bank: int, tau: float,
                                gap: str = "similarity", scale: float = 1.0,
                                valid: Optional[Tensor] = None, shortlist: Optional[Tensor] = None) -> Tensor:
    """The cascade's decision once per sequence (``bank_scope="sequence"``; beyond the paper).

    ``logits`` ``[batch * S, E]`` are the tokens of ``batch`` sequences of ``S`` tokens, row-major.  Each
    sequence's bank scores are the mean of its valid tokens' ``bank_scores`` (all its tokens when it has no
    valid one); the cascade's test (``cascade_from_bank_scores``) on these pooled scores gives one bank per
    sequence, int64 ``[batch]``.  ``valid``: bool with ``batch * S`` elements, or None = all valid.
    ``shortlist``: int64 ``[batch, k]``, the banks each sequence may choose from, ascending (task order); the
    cascade then runs on those ``k`` pooled scores alone (``anchored_keys``).  None = every bank.
    """
    c = bank_scores(logits, experts_per_bank)
    n, nb = c.shape
    if batch < 1 or n % batch:
        raise ValueError(f"sequence_cascade_assignment: {n} tokens are not {batch} sequences of equal length")
    c = c.view(batch, n // batch, nb)
    if valid is None:
        pooled = c.mean(dim=1)
    else:
        w = valid.reshape(batch, n // batch, 1).to(c.dtype)
        count = w.sum(dim=1)
        pooled = torch.where(count > 0, (c * w).sum(dim=1) / count.clamp_min(1.0), c.mean(dim=1))
    if shortlist is None:
        return cascade_from_bank_scores(pooled, tau, gap, scale)
    if shortlist.dim() != 2 or shortlist.shape[0] != batch or shortlist.shape[1] < 1:
        raise ValueError(f"sequence_cascade_assignment: shortlist must be [{batch}, k >= 1] bank indices, got "
                         f"{tuple(shortlist.shape)}")
    short = shortlist.to(device=pooled.device, dtype=torch.long)
    ascending = short.shape[1] == 1 or bool((short.diff(dim=1) > 0).all())
    if bool((short < 0).any()) or bool((short >= nb).any()) or not ascending:
        raise ValueError(f"sequence_cascade_assignment: each shortlist row must hold distinct bank indices in "
                         f"0..{nb - 1}, ascending; got {short.tolist()}")
    pick = cascade_from_bank_scores(pooled.gather(1, short), tau, gap, scale)
    return short.gather(1, pick[:, None]).squeeze(1)


def banked_gate(logits: Tensor, experts_per_bank: int, top_k: int, temperature: float,
                bank_weights: Tensor) -> Tensor:
    """Bank-weighted gate (``assign_rule="given"``): ``g[n, e] = w[n, bank(e)] * p[n, e]``, where ``p`` is
    ``gate`` applied inside each bank on its own (top ``min(top_k, experts_per_bank)`` of the bank's logits,
    ``softmax(z / temperature)``) and ``w`` ``[N, B]`` the per-token bank weights.  A bank of weight 0 gets exact
    zeros.  Returns ``[N, E]`` in fp32 (fp64 for fp64 logits)."""
    _check_logits(logits)
    n, e = logits.shape
    if e % experts_per_bank:
        raise ValueError(f"banked_gate: {e} experts is not a whole number of banks of {experts_per_bank}")
    nb = e // experts_per_bank
    if tuple(bank_weights.shape) != (n, nb):
        raise ValueError(f"banked_gate: bank_weights must be [{n}, {nb}], got {tuple(bank_weights.shape)}")
    p = gate(logits.reshape(n * nb, experts_per_bank), min(top_k, experts_per_bank), temperature)
    return p.view(n, e) * bank_weights.to(p.dtype).repeat_interleave(experts_per_bank, dim=1)
