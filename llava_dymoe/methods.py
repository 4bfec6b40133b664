"""Method recipes: named selections of components, registered in ``METHODS`` (style.md §6.5).

A recipe holds no logic: it names the layer family and the ``DyMoEConfig`` values that define the
method.  ``--dymoe_method NAME`` selects one; explicit ``--dymoe_<field>`` flags override the
recipe's values, and the recipe's values override ``DyMoEConfig``'s defaults.

* ``dymoe``: the full method of method.md (TAG + RSR exclusivity + specialisation, c = 1e-3,
  tau 0.2, RSR ramp from 50 %, c_aux 0 as in the reference code, method.md §3.3).
* ``incmoelora``: the same expandable experts and cosine router, old banks frozen, but TAG off and
  the RSR weights 0 (method.md §6.1: "IncMoELoRA == the DyMoE layer with TAG off and RSR weights 0").
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Dict, Mapping

from .config import DyMoEConfig
from .registry import Registry


@dataclass(frozen=True)
class Method:
    """A method recipe.

    Attributes:
        name: registry key.
        layer: layer family; ``"dymoe"`` = ``llava_dymoe.core.DyMoELinear`` (expandable banks).
        config: ``DyMoEConfig`` field values that define the method (everything else: defaults/flags).
        description: one line for ``--help`` and reports.
    """

    name: str
    layer: str = "dymoe"
    config: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""

    def __post_init__(self):
        object.__setattr__(self, "config", MappingProxyType(dict(self.config)))
        DyMoEConfig(**self.config)  # fail at registration for an invalid recipe

    def build_config(self, overrides: Mapping[str, Any] = ()) -> DyMoEConfig:
        """``DyMoEConfig`` = defaults <- recipe <- ``overrides`` (explicit user flags)."""
        values: Dict[str, Any] = dict(self.config)
        values.update(dict(overrides))
        return DyMoEConfig(**values)


METHODS: Registry[Method] = Registry("method")


def register_method(method: Method, **kw) -> Method:
    return METHODS.add(method.name, method, **kw)


register_method(Method(
    "dymoe", config={},
    description="LLaVA-DyMoE: expandable MoE-LoRA + TAG + RSR (exclusivity, specialisation); method.md"))
register_method(Method(
    "incmoelora", config={"use_tag": False, "c_exc": 0.0, "c_spe": 0.0, "c_aux": 0.0},
    description="IncMoELoRA: the same expandable experts with TAG off and RSR weights 0 (method.md §6.1)"))


def get_method(name: str) -> Method:
    """The recipe registered as ``name``; ``KeyError`` lists the known methods."""
    return METHODS.get(name)
