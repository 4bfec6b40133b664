"""``assign_rule="given"``, ``bank_scope="sequence"`` (the ``key_selector`` method; beyond the paper, issue 26):
the banks of ``oracle_bank`` and ``hide_selector``, chosen at inference by ``dymoe_plus``'s decision.

* Training: as ``given.GivenRule``: every token uses the newest bank, so each bank learns its own task's data
  alone and the same seed trains the same banks as ``oracle_bank`` (the keys are fitted after the task trained
  and are never read in training).
* Inference: ``sequence.SequenceBankRule``'s decision (the mean of the prompt tokens' scores against the fitted
  keys, the cascade's test with margin ``sequence_tau``) picks one bank per sequence and projection, kept for the
  KV-cache decoding steps of the same sequences; the chosen bank gets weight 1 and the gate inside it is the one
  ``oracle_bank`` uses (``routing.banked_gate``).  With the right bank everywhere it answers as ``oracle_bank``.

So ``oracle_bank`` minus ``key_selector`` is what choosing the bank by keys costs on identical banks, and
``key_selector`` against ``hide_selector`` compares two selectors and nothing else.

``anchored_keys`` (``task_selector="shortlist"``, issue 26 candidate 2): a model-level selector puts a shortlist in
``DyMoEContext.bank_weights`` (``[B, T]``, weight 1 on each sequence's ``k`` shortlisted banks, 0 elsewhere); the
keys' decision then runs on those banks alone.  Without ``bank_weights`` the keys choose among every bank.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .base import Assignment, RuleInput
from .given import GivenRule
from .sequence import SequenceBankRule


class KeySelectorRule(SequenceBankRule):
    """Newest bank while training; one bank per sequence by the keys at inference, as one-hot bank weights."""

    def __init__(self, scorer=None):
        super().__init__(scorer)
        self.training_rule = GivenRule()

    def assign(self, inp: RuleInput) -> Assignment:
        if inp.training:
            self.reset()
            return self.training_rule.assign(inp)
        if inp.num_tasks < 2:
            seq = torch.zeros(inp.batch_shape[0] if inp.batch_shape else 1, dtype=torch.long,
                              device=inp.logits.device)
        else:
            seq = self.decide(inp)
        return Assignment(bank_weights=one_hot_rows(seq, inp.num_tasks, inp.logits))

    def shortlist(self, inp: RuleInput) -> Optional[Tensor]:
        """The banks of positive weight in ``ctx.bank_weights`` per sequence (ascending), or None when unset."""
        w = inp.ctx.bank_weights if inp.ctx is not None else None
        if w is None:
            return None
        batch = inp.batch_shape[0]
        if w.dim() != 2 or tuple(w.shape) != (batch, inp.num_tasks):
            raise ValueError(f"key_selector: DyMoEContext.bank_weights (the shortlist) has shape {tuple(w.shape)}, "
                             f"expected [{batch}, {inp.num_tasks}] (the batch x the layer's banks)")
        allowed = w > 0
        k = allowed.sum(dim=1)
        if bool((k < 1).any()) or bool((k != k[0]).any()):
            raise ValueError(f"key_selector: every sequence's shortlist must name the same number (>= 1) of banks; "
                             f"the bank_weights rows name {k.tolist()}")
        idx = torch.arange(inp.num_tasks, device=w.device).expand(batch, -1)
        return idx[allowed].view(batch, int(k[0])).to(inp.logits.device)


def one_hot_rows(seq: Tensor, num_tasks: int, logits: Tensor) -> Tensor:
    """``[N, T]`` bank weights in ``logits``' dtype: weight 1 on each token's sequence's bank ``seq`` ``[B]``."""
    n = logits.shape[0]
    if n % seq.shape[0]:
        raise ValueError(f"{n} tokens are not {seq.shape[0]} sequences of equal length")
    rows = torch.nn.functional.one_hot(seq, num_tasks).to(logits.dtype)
    return rows.repeat_interleave(n // seq.shape[0], dim=0)
