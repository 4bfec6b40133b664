"""Auxiliary routing losses of DyMoE: RSR exclusivity / specialization and the new-expert balance loss.

Pure functions over router logits ``[N, E]`` (first ``n_old`` columns = frozen old experts, the rest =
the current task's new experts).  They must be given the **unmasked** logits (method.md §3.2 [C]: "RSR
sees the unmasked scores, the experts the TAG-masked ones").  Every loss is a masked mean over the
valid tokens (``valid``: bool with N elements, any shape; ``None`` = all valid).  With no valid token the
result is ``0.0`` and still carries a (zero) gradient path, never NaN.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from .routing import _check_logits, full_precision, gate, routing_dtype

#: Lower clamp of the probabilities inside the BCE logs (method.md §3.2 [C]).
LOG_EPS = 1e-8


def masked_mean(values: Tensor, valid: Optional[Tensor] = None) -> Tensor:
    """``sum_n valid_n * v_n / max(1, sum_n valid_n)``; ``values`` is ``[N]``."""
    if valid is None:
        return values.sum() / max(1, values.numel())
    v = _flat_valid(valid, values.numel(), values.device)
    total = torch.where(v, values, torch.zeros_like(values)).sum()
    return total / v.sum().clamp_min(1).to(values.dtype)


def rsr_weights(logits: Tensor, n_old: int, top_k: int, temperature: float) -> Tuple[Tensor, Tensor, Tensor]:
    """Soft RSR weights (method.md §3.2): ``w = softmax(topk(z) / T_rsr)`` over old+new experts.

    Returns ``(w [N, E], g_old [N], g_new [N])`` with ``g_old = sum_{e<n_old} w_e`` and
    ``g_new = sum_{e>=n_old} w_e`` (so ``g_old + g_new = 1``).
    """
    _check_logits(logits)
    _check_split(n_old, logits.shape[1], need_old=True)
    w = gate(logits, top_k, temperature)
    return w, w[:, :n_old].sum(dim=1), w[:, n_old:].sum(dim=1)


def exclusivity_from_weights(g_old: Tensor, g_new: Tensor, valid: Optional[Tensor] = None) -> Tensor:
    """``L_exc = mean_valid(g_old * g_new)`` (method.md §3.2)."""
    return masked_mean(g_old * g_new, valid)


def specialization_from_weights(w: Tensor, n_old: int, g_old: Tensor, g_new: Tensor,
                                valid: Optional[Tensor] = None, target: Optional[Tensor] = None) -> Tensor:
    """``L_spe = mean_valid(-[y log g_new + (1 - y) log(1 - g_new)])`` with the detached target
    ``y = clamp(1 - max_{e<n_old} w_e, 0, 1)`` (method.md §3.2), or ``y = target`` when a target is given
    (``[N]``, bool or float in [0, 1]; ``spe_target="tag"`` passes TAG's ``use_new``, beyond the paper).

    ``log(1 - g_new)`` is computed as ``log(max(g_old, 1e-8))``: ``1 - g_new = g_old`` exactly, whereas
    ``1 - clamp(g_new, 1e-8, 1 - 1e-8)`` is 0 in fp32 (1 - 1e-8 rounds to 1) and gives -inf/NaN
    (pilot-drift.md, "Numerical pitfall").
    """
    if target is None:
        y = (1.0 - w[:, :n_old].amax(dim=1)).clamp(0.0, 1.0).detach()
    else:
        if target.numel() != g_new.numel():
            raise ValueError(f"specialization target has {target.numel()} elements, expected {g_new.numel()}")
        y = target.reshape(-1).to(device=g_new.device, dtype=g_new.dtype).clamp(0.0, 1.0).detach()
    bce = -(y * g_new.clamp_min(LOG_EPS).log() + (1.0 - y) * g_old.clamp_min(LOG_EPS).log())
    return masked_mean(bce, valid)


def rsr_losses(logits: Tensor, n_old: int, top_k: int, temperature: float,
               valid: Optional[Tensor] = None, spe_target: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """``(L_exc, L_spe)`` sharing one soft-weight computation (what the layer uses); ``spe_target`` replaces
    the specialisation target (``specialization_from_weights``)."""
    w, g_old, g_new = rsr_weights(logits, n_old, top_k, temperature)
    return (exclusivity_from_weights(g_old, g_new, valid),
            specialization_from_weights(w, n_old, g_old, g_new, valid, spe_target))


def exclusivity_loss(logits: Tensor, n_old: int, top_k: int, temperature: float,
                     valid: Optional[Tensor] = None) -> Tensor:
    """RSR exclusivity loss (method.md §3.2): penalises splitting a token's mass across groups.

    ``w = softmax(topk_k(z) / T)``, ``L_exc = mean_valid(g_old * g_new)``.  Requires 1 <= n_old < E.
    """
    _, g_old, g_new = rsr_weights(logits, n_old, top_k, temperature)
    return exclusivity_from_weights(g_old, g_new, valid)


def specialization_loss(logits: Tensor, n_old: int, top_k: int, temperature: float,
                        valid: Optional[Tensor] = None) -> Tensor:
    """RSR specialization loss (method.md §3.2): BCE of ``g_new`` against ``y = 1 - max old weight``.

    See ``specialization_from_weights`` for the exact formula.  Requires 1 <= n_old < E.
    """
    w, g_old, g_new = rsr_weights(logits, n_old, top_k, temperature)
    return specialization_from_weights(w, n_old, g_old, g_new, valid)


def new_expert_balance_loss(logits: Tensor, n_old: int, top_k: int, temperature: float,
                            valid: Optional[Tensor] = None) -> Tensor:
    """Switch-style load balance over the new experts (method.md §3.3, L_aux; exact upstream form [?]).

    With the ``M = E - n_old`` new-expert logits ``u = z[:, n_old:]`` and ``k' = min(top_k, M)``:
    ``p_n = softmax(u_n / T)`` (full softmax over the new experts),
    ``f_e = 1/(k' V) sum_{valid n} [e in TopK'(u_n)]`` (dispatch fraction, non-differentiable, sums to 1),
    ``P_e = 1/V sum_{valid n} p_ne``, and ``L = M * sum_e f_e P_e`` (1 at perfect balance),
    V = number of valid tokens.  When ``k' = M`` (the default top-16 over 16 new experts) ``f_e = 1/M``
    and ``L = 1`` with zero gradient: the loss is degenerate, as method.md §3.3 notes.
    ``n_old = 0`` balances over all experts.  No valid token -> 0.
    """
    _check_logits(logits)
    e = logits.shape[1]
    _check_split(n_old, e, need_old=False)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"new_expert_balance_loss: top_k must be an int >= 1, got {top_k!r}")
    if not temperature > 0:
        raise ValueError(f"new_expert_balance_loss: temperature must be > 0, got {temperature!r}")
    u = logits[:, n_old:].to(routing_dtype(logits.dtype))
    m = u.shape[1]
    k = min(top_k, m)
    p = torch.softmax(u / temperature, dim=1)
    with torch.no_grad():
        sel = torch.zeros_like(u).scatter(1, torch.topk(u, k, dim=1).indices, 1.0 / k)
    if valid is not None:
        v = _flat_valid(valid, u.shape[0], u.device)[:, None]
        p = torch.where(v, p, torch.zeros_like(p))
        sel = sel * v
        count = v.sum().clamp_min(1).to(u.dtype)
    else:
        count = max(1, u.shape[0])
    f = sel.sum(dim=0) / count
    big_p = p.sum(dim=0) / count
    return m * (f * big_p).sum()


def _flat_valid(valid: Tensor, n: int, device: torch.device) -> Tensor:
    if valid.numel() != n:
        raise ValueError(f"valid mask has {valid.numel()} elements (shape {tuple(valid.shape)}) but there are "
                         f"{n} tokens")
    return valid.reshape(-1).to(device=device, dtype=torch.bool)


def _check_split(n_old: int, e: int, need_old: bool) -> None:
    lo = 1 if need_old else 0
    if isinstance(n_old, bool) or not isinstance(n_old, int) or not lo <= n_old <= e - 1:
        raise ValueError(f"n_old must be an int in [{lo}, {e - 1}] for {e} experts (at least one new expert"
                         f"{' and one old expert' if need_old else ''}), got {n_old!r}")


def orthogonality_loss(a_new: Tensor, a_old) -> Tensor:
    """O-LoRA's orthogonality loss for one projection: ``sum_i sum_{j,k} |(A_new A_i^T)_{jk}|``.

    ``a_new`` is the trainable bank's A ``[r, in]``, ``a_old`` the frozen banks' A matrices
    (``[r_i, in]`` each).  The entrywise L1 norm of the products is the O-LoRA reference code's form
    (its paper writes the squared Frobenius norm); computed in fp32 (fp64 stays fp64).  The sum over
    projections and the coefficient lambda_1 are applied by the caller.  No old bank -> 0.
    """
    if a_new.dim() != 2:
        raise ValueError(f"orthogonality_loss: a_new must be [r, in], got {tuple(a_new.shape)}")
    dt = routing_dtype(a_new.dtype)
    total = a_new.new_zeros((), dtype=dt)
    for a in a_old:
        if a.dim() != 2 or a.shape[1] != a_new.shape[1]:
            raise ValueError(f"orthogonality_loss: old A must be [r, {a_new.shape[1]}], got {tuple(a.shape)}")
        with full_precision(a_new):  # autocast (CPU AMP under --bf16) would run the product in bf16
            total = total + (a_new.to(dt) @ a.to(dt).t()).abs().sum()
    return total
