"""``assign_rule="cascade"``, ``bank_scope="sequence"`` (beyond the paper; docs/beyond-the-paper.md section 7):
the cascade's test once per sequence and projection, on the mean of its prompt tokens' bank scores.

Which tokens are pooled (``DyMoEContext.token_prompt``): the valid ones (attention mask after LLaVA's splice) that
carry no label (label == IGNORE_INDEX after the splice), i.e. the prompt; an answer's tokens are never seen at
inference, so they are not pooled in training or key fitting either.  With no context every token is pooled.

At inference the decision is kept for the tokens generated after the prompt, but only by forwards that continue
the prompt's KV cache: the context records, from the LLM body's inputs, how many tokens the cache held before the
forward (``past_len``); a forward reuses the kept decision when ``past_len`` is where the kept sequences ended and
the batch is the same.  Any other forward (a fresh prompt of any length, a one-token forward without a cache,
contrastive search's re-batched candidates) decides anew on its own tokens.
"""
from __future__ import annotations

from typing import Optional

from torch import Tensor

from ..routing import sequence_cascade_assignment
from .base import Assignment, Rule, RuleInput
from .cascade import _banked
from .scores import RouterScores


class SequenceBankRule(Rule):
    """One bank per sequence (``routing.sequence_cascade_assignment``, margin ``sequence_tau``), broadcast to its
    tokens; the input must be ``[B, S, in]`` (a flattened batch would be decided as one sequence)."""

    sequence_scoped = True

    def __init__(self, scorer=None):
        self.scorer = scorer or RouterScores()
        self.kept: Optional[Tensor] = None  # int64 [B]: the kept prompt's banks (inference only)
        self.kept_end = 0  # the cache length after the last forward of the kept sequences

    def reset(self) -> None:
        self.kept, self.kept_end = None, 0

    def assign(self, inp: RuleInput) -> Assignment:
        if inp.num_tasks < 2:
            return Assignment()
        seq = self.decide(inp)
        return _banked(inp, seq.repeat_interleave(inp.batch_shape[1]))

    def shortlist(self, inp: RuleInput) -> Optional[Tensor]:
        """int64 ``[B, k]``: the banks each sequence may choose from (ascending), or None = every bank."""
        return None

    def decide(self, inp: RuleInput) -> Tensor:
        """int64 ``[B]``: each sequence's bank (the kept one for a KV-cache decoding step of the kept sequences)."""
        if len(inp.batch_shape) != 2:
            raise ValueError(f"bank_scope='sequence' decides one bank per sequence, so the layer input must be "
                             f"[batch, seq_len, features]; got leading dims {tuple(inp.batch_shape)}. Do not "
                             "flatten or pack sequences before a DyMoE layer (or use bank_scope='token')")
        batch, seq_len = inp.batch_shape
        ctx = inp.ctx
        past = ctx.past_len if ctx is not None else None
        if (not inp.training and self.kept is not None and past and past == self.kept_end
                and self.kept.shape[0] == batch):
            self.kept_end = past + seq_len  # a decoding step of the kept sequences
            return self.kept
        cfg = inp.cfg
        n = inp.logits.shape[0]
        pool = ctx.token_prompt(n, inp.logits.device) if ctx is not None else None
        seq = sequence_cascade_assignment(self.scorer(inp), batch, inp.experts_per_task, cfg.sequence_tau,
                                          cfg.tag_gap, cfg.router_scale, pool, self.shortlist(inp))
        if inp.training:
            self.reset()
        else:
            self.kept, self.kept_end = seq, (past or 0) + seq_len
        return seq
