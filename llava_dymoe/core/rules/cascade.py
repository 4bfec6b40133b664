"""``assign_rule="cascade"``, ``bank_scope="token"`` (beyond the paper): TAG's test bank by bank, newest first,
per token, at training and inference (``routing.cascade_assignment``)."""
from __future__ import annotations

from .base import Assignment, Rule, RuleInput, bank_mask
from ..routing import cascade_assignment
from .scores import RouterScores


class TokenCascadeRule(Rule):
    """Each token in the newest bank that claims it on the scores of ``scorer`` (else bank 0); while training with an
    old group, ``use_new`` = the tokens in the newest bank.  One bank: every expert."""

    def __init__(self, scorer=None):
        self.scorer = scorer or RouterScores()

    def assign(self, inp: RuleInput) -> Assignment:
        if inp.num_tasks < 2:
            return Assignment()
        cfg = inp.cfg
        bank = cascade_assignment(self.scorer(inp), inp.experts_per_task, cfg.tau, cfg.tag_gap, cfg.router_scale)
        return _banked(inp, bank)


def _banked(inp: RuleInput, bank) -> Assignment:
    """The assignment of one bank per token (``use_new`` while training with an old group)."""
    return Assignment(allowed=bank_mask(inp, bank), use_new=bank == inp.num_tasks - 1 if inp.n_old > 0 else None)
