"""What the cascade's bank decision scores a token against (``DyMoEConfig.bank_keys``).

``RouterScores`` (``bank_keys="router"``): the router logits the gate uses.  ``KeyScores`` (``"refreshed"``,
``"fitted"``): cosine scores against the layer's ``dymoe_key`` rows, never trained, so that the decision and the
gate inside the chosen bank can differ (docs/beyond-the-paper.md sections 6-7).
"""
from __future__ import annotations

from torch import Tensor

from ..routing import cosine_logits_parts
from .base import RuleInput


class RouterScores:
    """The decision scores are the router logits."""

    def __call__(self, inp: RuleInput) -> Tensor:
        return inp.logits


class KeyScores:
    """The decision scores are the cosine scores of the tokens against the per-bank keys ``inp.keys``."""

    def __call__(self, inp: RuleInput) -> Tensor:
        if not inp.keys:
            raise ValueError("bank_keys: the layer has no dymoe_key rows to score against; build it with the "
                             "config that has bank_keys != 'router'")
        return cosine_logits_parts(inp.xf, list(inp.keys), inp.scale)


def make_scorer(bank_keys: str):
    """The scorer of a ``bank_keys`` value."""
    return RouterScores() if bank_keys == "router" else KeyScores()
