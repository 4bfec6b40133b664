"""Token-to-bank rules, one per module, behind one interface (``base.Rule``: ``RuleInput`` in, ``Assignment``
out), chosen from the config by ``make_rule``:

==========================================  ================================  ===============================
``assign_rule`` / ``bank_scope``             rule                              module
==========================================  ================================  ===============================
``paper`` (method.md)                        TAG mask while training task >= 2  ``paper.PaperRule``
``cascade`` / ``token``                      TAG's test bank by bank, per token ``cascade.TokenCascadeRule``
``cascade`` / ``sequence``                   the cascade per sequence           ``sequence.SequenceBankRule``
``given``                                    newest bank / the context's rows   ``given.GivenRule``
``given`` / ``sequence``                     newest bank / one bank by the keys ``key_selector.KeySelectorRule``
==========================================  ================================  ===============================

``bank_keys`` picks what the cascade rules score against (``scores.make_scorer``: the router rows or the keys).
"""
from __future__ import annotations

from typing import Callable, Tuple

from ...config import DyMoEConfig
from ...registry import Registry
from .base import Assignment, Rule, RuleInput, bank_mask
from .cascade import TokenCascadeRule
from .given import GivenRule
from .key_selector import KeySelectorRule
from .paper import PaperRule
from .scores import KeyScores, RouterScores, make_scorer
from .sequence import SequenceBankRule

#: ``rule_name(cfg)`` -> a factory ``scorer -> Rule``.
RULES: Registry[Callable[..., Rule]] = Registry("token-to-bank rule")
RULES.add("paper", lambda scorer: PaperRule())
RULES.add("cascade", TokenCascadeRule)
RULES.add("cascade_sequence", SequenceBankRule)
RULES.add("given", lambda scorer: GivenRule())
RULES.add("given_sequence", KeySelectorRule)


def rule_name(cfg: DyMoEConfig) -> str:
    """The registry name of the config's rule: ``assign_rule``, suffixed by a ``bank_scope`` other than token."""
    return cfg.assign_rule if cfg.bank_scope == "token" else f"{cfg.assign_rule}_{cfg.bank_scope}"


def rule_key(cfg: DyMoEConfig) -> Tuple[str, str, str]:
    """The config fields a rule is built from (a layer rebuilds its rule when they change)."""
    return cfg.assign_rule, cfg.bank_scope, cfg.bank_keys


def make_rule(cfg: DyMoEConfig) -> Rule:
    """A fresh rule for ``cfg`` (``assign_rule``, ``bank_scope``; its scorer from ``bank_keys``)."""
    return RULES.get(rule_name(cfg))(make_scorer(cfg.bank_keys))


__all__ = ["Assignment", "GivenRule", "KeyScores", "KeySelectorRule", "PaperRule", "RULES", "RouterScores", "Rule",
           "RuleInput", "SequenceBankRule", "TokenCascadeRule", "bank_mask", "make_rule", "make_scorer", "rule_key",
           "rule_name"]
