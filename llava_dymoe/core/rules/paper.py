"""``assign_rule="paper"`` (method.md §1.6, §3.1): TAG's old/new split while training task >= 2, no mask otherwise."""
from __future__ import annotations

import torch

from ..routing import new_token_mask
from .base import Assignment, Rule, RuleInput


class PaperRule(Rule):
    """While training with an old group (``n_old`` > 0) and ``use_tag``: a token TAG calls new may use only the new
    bank's experts, every other token only the old ones (``routing.new_token_mask``).  At inference, with one bank,
    or without TAG (IncMoELoRA): every expert, no ``use_new``."""

    def assign(self, inp: RuleInput) -> Assignment:
        cfg = inp.cfg
        if not (inp.n_old > 0 and cfg.use_tag):
            return Assignment()
        use_new = new_token_mask(inp.logits, inp.n_old, cfg.tau, cfg.tag_gap, cfg.router_scale)
        is_new = torch.arange(inp.num_experts, device=inp.logits.device) >= inp.n_old
        return Assignment(allowed=use_new[:, None] == is_new[None, :], use_new=use_new)
