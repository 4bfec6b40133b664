"""The interface every token-to-bank rule implements (``core/rules``; chosen by ``make_rule``).

A rule reads one forward's routing inputs (``RuleInput``) and says which experts each token may use and how
much each bank counts (``Assignment``); the layer keeps the banks, computes the gate from the assignment and
mixes the experts.  A rule may keep state between forwards of its layer (the sequence bank keeps a prompt's
decision while decoding); ``reset`` drops it (``DyMoELinear.train`` calls it).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor

from ...config import DyMoEConfig
from ..transport import DyMoEContext


@dataclass
class RuleInput:
    """One forward of one ``DyMoELinear``, as the rules see it.

    Fields:
        xf: ``[N, in]`` token features (the layer input, leading dims flattened).
        logits: ``[N, E]`` router logits, fp32 (fp64 for fp64 inputs); E = num_tasks * experts_per_task.
        batch_shape: the layer input's leading dims (``x.shape[:-1]``): ``(B, S)`` for a batch of sequences.
        training: the layer is in training mode.
        num_tasks: banks in the layer; the last one is the newest (trainable while training).
        experts_per_task: experts per bank (bank b owns columns ``b*ept .. (b+1)*ept - 1``).
        n_old: the old group's expert count while training task >= 2, else 0 (TAG, the aux losses).
        cfg: the layer's config (read at every forward).
        ctx: the attached ``DyMoEContext`` (validity / prompt masks, bank weights, cache length) or None.
        keys: per-bank key rows ``[ept, in]`` (``bank_keys`` != "router"), empty when the layer has none.
        scale: the router's cosine scale (<= 0: dot product), for scoring against the keys.
    """

    xf: Tensor
    logits: Tensor
    batch_shape: Tuple[int, ...]
    training: bool
    num_tasks: int
    experts_per_task: int
    n_old: int
    cfg: DyMoEConfig
    ctx: Optional[DyMoEContext] = None
    keys: Sequence[Tensor] = ()
    scale: float = 1.0

    @property
    def num_experts(self) -> int:
        return self.num_tasks * self.experts_per_task

    def bank_of_expert(self) -> Tensor:
        """int64 ``[E]``: the bank of each expert column."""
        return torch.arange(self.num_experts, device=self.logits.device) // self.experts_per_task


@dataclass
class Assignment:
    """A rule's answer for one forward.

    Fields:
        allowed: bool ``[N, E]``, True where the token may use the expert; None = every expert.
        use_new: bool ``[N]``, the tokens sent to the new (trainable) bank, for the aux losses and their logging
            (TAG's decision); None where the rule has none (inference, one bank).
        bank_weights: ``[N, T]`` per-token bank weights (``given``); the gate becomes the bank's weight times the
            top-k softmax inside the bank (``routing.banked_gate``).  None = one softmax over the allowed experts.
    """

    allowed: Optional[Tensor] = None
    use_new: Optional[Tensor] = None
    bank_weights: Optional[Tensor] = None


def bank_mask(inp: RuleInput, bank: Tensor) -> Tensor:
    """The allowed mask ``[N, E]`` of one bank per token (``bank`` int64 ``[N]``)."""
    return bank[:, None] == inp.bank_of_expert()[None, :]


class Rule:
    """A token-to-bank rule: ``assign(inp) -> Assignment``; ``reset()`` drops state kept between forwards."""

    #: The rule decides per sequence: the layer input must be ``[B, S, in]``.
    sequence_scoped = False

    def assign(self, inp: RuleInput) -> Assignment:  # pragma: no cover - interface
        raise NotImplementedError

    def reset(self) -> None:
        """Drop whatever the rule kept between forwards (nothing by default)."""
