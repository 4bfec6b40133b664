"""Aux-loss transport: gradient injection on the layer output + a detached per-step collector.

Why (llava-integration.md §6.3 item 4): the RSR losses are computed inside every DyMoE layer.  Returning
them to ``compute_loss`` through a side buffer breaks under reentrant gradient checkpointing (its first
forward runs under ``no_grad``) and under ZeRO-3 (parameters must not be touched outside their module's
forward).  Instead each layer attaches its aux loss to its own output with ``AuxLossInjector`` (the
pattern of Megatron-Core's aux-loss auto-scaler): forward returns the output unchanged; backward passes
``grad_output`` through and hands the aux loss the constant gradient ``scale``, so that

    d(total)/d(theta) = d(main)/d(theta) + scale * d(aux)/d(theta),
    scale = rho * grad_scale / (grad_accum * num_modules)

exactly as if ``scale * aux`` had been added to the loss.  ``1/grad_accum`` is needed because HF/DeepSpeed
divide the *returned* loss by the accumulation steps, not injected gradients; ``num_modules`` turns the
per-layer sum into the mean over adapted projections of method.md §3.2; ``grad_scale`` is the fp16 loss
scale (1 for bf16/fp32).  Under ``no_grad`` (the first pass of a reentrant checkpoint, eval) it is inert;
in the recompute pass and without checkpointing it is part of the graph.

Logging goes through ``AuxCollector``, which only stores detached values and only while its window is
open (see ``AuxCollector``): this makes the count check independent of checkpointing.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Dict, Iterator, Optional

import torch
from torch import Tensor


class AuxLossInjector(torch.autograd.Function):
    """``out = AuxLossInjector.apply(output, aux, scale)``: identity on ``output``; backward gives ``aux``
    the gradient ``scale`` (a float fixed at forward time)."""

    @staticmethod
    def forward(ctx, output: Tensor, aux: Tensor, scale: float) -> Tensor:  # type: ignore[override]
        ctx.scale = float(scale)
        ctx.aux_meta = (aux.shape, aux.dtype, aux.device)
        return output.view_as(output)

    @staticmethod
    def backward(ctx, grad_output: Tensor):  # type: ignore[override]
        shape, dtype, device = ctx.aux_meta
        return grad_output, torch.full(shape, ctx.scale, dtype=dtype, device=device), None


def inject_aux(output: Tensor, aux: Tensor, scale: float) -> Tensor:
    """Attach ``scale * aux`` to the backward of ``output`` (no-op when grad is off or nothing to do)."""
    if aux.dim() != 0:
        raise ValueError(f"inject_aux: aux must be a scalar, got shape {tuple(aux.shape)}")
    if not torch.is_grad_enabled() or not aux.requires_grad or scale == 0.0:
        return output
    if not output.requires_grad:
        raise RuntimeError("inject_aux: the output does not require grad, so the aux gradient would be lost; "
                           "inject on a tensor that is part of the loss graph")
    return AuxLossInjector.apply(output, aux, scale)


class AuxCollector:
    """Detached per-step record of the aux terms of every DyMoE layer, for logging.

    The trainer opens a *window* around the model forward inside ``compute_loss`` and closes it before
    ``backward``::

        collector.reset()
        with collector.window():
            out = model(**inputs)
        stats = collector.summary(expected=n_dymoe_layers)   # raises on a count mismatch

    Layers record once per forward while the window is open, whether grad is enabled or not.  So:
    without checkpointing each layer records once; with reentrant checkpointing the first (no-grad) pass
    records and the recompute during backward (window closed) does not; with non-reentrant checkpointing
    likewise.  A window left open during backward, or a layer that did not run, makes the count differ
    from the number of layers, which ``summary(expected=...)`` reports.  With gradient accumulation call
    ``summary`` per micro-batch (or pass ``expected = n_layers * micro_batches``).
    """

    def __init__(self) -> None:
        self.active = False
        self.count = 0
        self._sums: Dict[str, Tensor] = {}
        self._counts: Dict[str, int] = {}

    def reset(self) -> None:
        self.count = 0
        self._sums.clear()
        self._counts.clear()

    @contextlib.contextmanager
    def window(self) -> Iterator["AuxCollector"]:
        self.active = True
        try:
            yield self
        finally:
            self.active = False

    def record(self, terms: Dict[str, Tensor]) -> None:
        """Add one layer's terms (scalars; stored detached).  Ignored while the window is closed."""
        if not self.active:
            return
        self.count += 1
        for key, value in terms.items():
            v = value.detach().float() if isinstance(value, Tensor) else torch.tensor(float(value))
            self._sums[key] = self._sums[key] + v if key in self._sums else v
            self._counts[key] = self._counts.get(key, 0) + 1

    def summary(self, expected: Optional[int] = None) -> Dict[str, float]:
        """Mean of every recorded term over the layers that recorded it; checks the record count."""
        if expected is not None and self.count != expected:
            raise RuntimeError(
                f"AuxCollector: {self.count} layer records this step, expected {expected}. More means a "
                f"forward was recorded twice (window left open during backward, so a checkpoint recompute "
                f"was recorded, or two forwards per window); fewer means DyMoE layers did not run in "
                f"training mode or the context is not attached to them")
        return {k: float(self._sums[k].item()) / self._counts[k] for k in sorted(self._sums)}


@dataclass
class DyMoEContext:
    """State shared by every DyMoE layer of a model, set by the trainer (``attach_context``).

    Fields:
        rho: RSR schedule factor for the current step (``rsr_schedule(progress, cfg.rsr_start)``);
            the default 1.0 is full strength, the trainer overwrites it every step.
        grad_accum: gradient-accumulation steps (the injected gradient is divided by it).
        num_modules: number of DyMoE layers the aux losses are averaged over (n_layers * n_targets).
        grad_scale: fp16 loss scale applied to the main loss (1.0 for bf16/fp32).
        valid_mask: bool ``[B, S]`` token validity (post-splice attention mask) or None = all valid;
            keep it on the model's device (it is read by every layer).
        collector: ``AuxCollector`` for logging, or None.
        token_kind: int ``[B, S]`` token kinds for the routing statistics (``core/stats.py``
            ``KIND_NAMES``: 0 image, 1 instruction, 2 answer, < 0 none) or None.
        supervised: bool ``[B, S]``, True where the token has a label after LLaVA's splice (label !=
            IGNORE_INDEX: the answers), or None = no labels (inference).  The sequence bank pools the valid tokens
            that are not supervised, the prompt (``token_prompt``).
        past_len: tokens the KV cache held before this forward (from the LLM body's inputs; 0 = no cache), or
            None = unknown.  The sequence bank reuses a prompt's decision only for forwards that continue its
            cache (``core/rules/sequence.py``).
        bank_weights: float ``[B, T]`` per-sequence weights of the T task banks for ``assign_rule="given"`` at
            inference (one row per sequence of the batch; one-hot = a known task, a softmax over task
            similarities = a selector), set by a model-level selector before the LLM forward; it stays valid for
            the KV-cache decoding steps of the same B sequences.  None = not given (the rule then refuses).
    """

    rho: float = 1.0
    grad_accum: int = 1
    num_modules: int = 1
    grad_scale: float = 1.0
    valid_mask: Optional[Tensor] = None
    collector: Optional[AuxCollector] = None
    token_kind: Optional[Tensor] = None
    supervised: Optional[Tensor] = None
    past_len: Optional[int] = None
    bank_weights: Optional[Tensor] = None

    def aux_grad_scale(self) -> float:
        """``rho * grad_scale / (grad_accum * num_modules)``."""
        if self.grad_accum < 1 or self.num_modules < 1:
            raise ValueError(f"DyMoEContext: grad_accum ({self.grad_accum}) and num_modules "
                             f"({self.num_modules}) must be >= 1")
        return float(self.rho) * float(self.grad_scale) / (self.grad_accum * self.num_modules)

    def sum_grad_scale(self) -> float:
        """``grad_scale / grad_accum``: the injection scale of a loss that is summed over the adapted
        projections and not ramped (O-LoRA's orthogonality term)."""
        if self.grad_accum < 1:
            raise ValueError(f"DyMoEContext: grad_accum ({self.grad_accum}) must be >= 1")
        return float(self.grad_scale) / self.grad_accum

    def token_valid(self, n_tokens: int, device: torch.device) -> Optional[Tensor]:
        """The validity mask flattened to ``[n_tokens]`` (None = all valid)."""
        return _flat(self.valid_mask, "valid_mask", n_tokens, device, torch.bool,
                     "from the attention mask of the current (post-splice) batch")

    def token_prompt(self, n_tokens: int, device: torch.device) -> Optional[Tensor]:
        """The prompt tokens flattened to ``[n_tokens]``: valid and not supervised (None = all tokens)."""
        valid = self.token_valid(n_tokens, device)
        sup = _flat(self.supervised, "supervised", n_tokens, device, torch.bool,
                    "from the labels of the current (post-splice) batch")
        if sup is None:
            return valid
        return ~sup if valid is None else valid & ~sup

    def token_kinds(self, n_tokens: int, device: torch.device) -> Optional[Tensor]:
        """The token-kind mask flattened to ``[n_tokens]`` (None = no kinds given)."""
        return _flat(self.token_kind, "token_kind", n_tokens, device, torch.long, "for the current (post-splice) batch")

    @property
    def recording(self) -> bool:
        return self.collector is not None and self.collector.active


def _flat(mask: Optional[Tensor], name: str, n_tokens: int, device: torch.device, dtype: torch.dtype,
          hint: str) -> Optional[Tensor]:
    """``mask`` flattened to ``[n_tokens]`` on ``device`` in ``dtype`` (None stays None); a size mismatch raises."""
    if mask is None:
        return None
    if mask.numel() != n_tokens:
        raise ValueError(f"DyMoEContext.{name} has {mask.numel()} elements (shape {tuple(mask.shape)}) but the layer "
                         f"input has {n_tokens} tokens; set it {hint}")
    return mask.reshape(-1).to(device=device, dtype=dtype)
