"""Method recipes: named selections of components, registered in ``METHODS`` (style.md §6.5).

A recipe holds no logic: it names the layer family and the ``DyMoEConfig`` values that define the
method.  ``--dymoe_method NAME`` selects one; explicit ``--dymoe_<field>`` flags override the
recipe's values, and the recipe's values override ``DyMoEConfig``'s defaults.

* ``dymoe``: the full method of method.md (TAG + RSR exclusivity + specialisation, c = 1e-3,
  tau 0.2, RSR ramp from 50 %, c_aux 0 as in the reference code, method.md §3.3).
* ``incmoelora``: the same expandable experts and cosine router, old banks frozen, but TAG off and
  the RSR weights 0 (method.md §6.1: "IncMoELoRA == the DyMoE layer with TAG off and RSR weights 0").
* The cumulative ablation ladder of method.md §6.2: ``incmoelora_aux`` (+ L_aux),
  ``incmoelora_aux_tag`` (+ TAG), ``incmoelora_aux_tag_exc`` (+ L_exc), ``dymoe_aux`` (+ L_spe: the
  full method plus L_aux).  The paper gives no lambda for L_aux ([?] in method.md §3.3); the ladder
  uses ``AUX_LADDER_COEF`` = 0.01 (the usual Switch/MoE-LLaVA balance coefficient, [I]).  With the
  default top-16 over 16 new experts the balance loss is a constant (every new-group token activates
  all new experts), so "+aux" only acts with ``--dymoe_top_k`` below ``--dymoe_experts_per_task``.
* A tau sweep needs no recipe: ``--dymoe_tau 0.1`` etc. on ``dymoe``.

Baselines of method.md §6.1 (Table 1), as configurations of the same layer family, so that training,
checkpoints and evaluation are shared.  Their sizes are not given by the paper: ours are labelled [I].

* ``lora``: LLaVA's LoRA fine-tuned sequentially, one adapter carried forward (``expand=False``,
  one expert of rank 64 with ``router="none"``, i.e. ``y = W0 x + (alpha/r) B A dropout(x)``, the
  peft LoRA forward; a test compares it with peft).  Rank 64 / alpha 128 = the per-task rank and
  scaling of DyMoE's bank [I] (LLaVA-1.5's own recipe is r 128, alpha 256: pass
  ``--dymoe_expert_rank 128 --dymoe_lora_alpha 256``).
* ``moelora``: CoIN's MoELoRA, a fixed set of experts behind a dense softmax router shared by all
  tasks: ``expand=False``, 16 experts of rank 4 (the layout of one DyMoE bank [I]),
  ``router="linear"`` (gate logits ``x W_g^T``), temperature 1, all experts (``top_k`` = 16).
* ``olora``: O-LoRA: a new LoRA per task (rank 8, alpha 16 = 2r [I]; O-LoRA's rank is 8), the old
  ones frozen, all summed (``router="none"``), plus ``lambda_1 * sum |A_new A_old^T|`` over
  projections with O-LoRA's lambda_1 = 0.5 (its lambda_2 = 0, so no L2 term).
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

_NO_DYMOE = {"use_tag": False, "c_exc": 0.0, "c_spe": 0.0, "c_aux": 0.0}
register_method(Method(
    "lora", config={**_NO_DYMOE, "experts_per_task": 1, "expert_rank": 64, "top_k": 1, "router": "none",
                    "expand": False},
    description="baseline: sequential LoRA, one adapter (rank 64) trained on every task in turn"))
register_method(Method(
    "moelora", config={**_NO_DYMOE, "router": "linear", "router_temperature": 1.0, "expand": False},
    description="baseline: CoIN's MoELoRA, 16 fixed rank-4 experts, dense softmax router shared by all tasks"))
OLORA_LAMBDA = 0.5
register_method(Method(
    "olora", config={**_NO_DYMOE, "experts_per_task": 1, "expert_rank": 8, "lora_alpha": 16.0, "top_k": 1,
                     "router": "none", "c_orth": OLORA_LAMBDA},
    description="baseline: O-LoRA, a rank-8 LoRA per task (old ones frozen, all summed) + orthogonality loss"))


AUX_LADDER_COEF = 0.01
_OFF = {"use_tag": False, "c_exc": 0.0, "c_spe": 0.0}
for _name, _cfg, _what in (
        ("incmoelora_aux", {**_OFF, "c_aux": AUX_LADDER_COEF}, "IncMoELoRA + L_aux"),
        ("incmoelora_aux_tag", {**_OFF, "use_tag": True, "c_aux": AUX_LADDER_COEF}, "+ TAG"),
        ("incmoelora_aux_tag_exc", {"c_spe": 0.0, "c_aux": AUX_LADDER_COEF}, "+ L_exc"),
        ("dymoe_aux", {"c_aux": AUX_LADDER_COEF}, "+ L_spe = LLaVA-DyMoE with L_aux")):
    register_method(Method(_name, config=_cfg, description=f"ablation ladder (method.md §6.2): {_what}"))


# ---- beyond the paper (opt-in; docs/results.md "Beyond the paper" measures each against ``dymoe``) ------------
#: Variants of ``dymoe`` for the plasticity issue: the paper's recipe plus one or more of the config fields
#: ``assign_rule`` (TAG's test bank by bank, at training and inference), ``router_init`` (new router rows
#: from centroids of the task's inputs) and ``spe_target`` (L_spe's target = TAG's decision).
VARIANTS = {
    "dymoe_cascade": ({"assign_rule": "cascade"},
                      "beyond the paper: DyMoE with TAG's test applied bank by bank at training and inference"),
    "dymoe_warm": ({"router_init": "centroids"},
                   "beyond the paper: DyMoE with new router rows warm-started from centroids of the task's inputs"),
    "dymoe_cascade_warm": ({"assign_rule": "cascade", "router_init": "centroids"},
                           "beyond the paper: dymoe_cascade + dymoe_warm"),
    "dymoe_cascade_spetag": ({"assign_rule": "cascade", "spe_target": "tag"},
                             "beyond the paper: dymoe_cascade with L_spe's target = TAG's decision"),
    "dymoe_cascade_warm_spetag": ({"assign_rule": "cascade", "router_init": "centroids", "spe_target": "tag"},
                                  "beyond the paper: all three changes (cascade, warm start, L_spe target)"),
    "dymoe_cascade_warm_spetag_distance": ({"assign_rule": "cascade", "router_init": "centroids",
                                            "spe_target": "tag", "tag_gap": "distance"},
                                           "beyond the paper: dymoe_cascade_warm_spetag with TAG's gap measured "
                                           "in cosine distance"),
}
#: The first round's best variant on the look it was chosen on (mean MFN, d = 128, the suite's own order, seeds
#: 0-2); it did not hold on the reversed order or at d = 256 (docs/beyond-the-paper.md).  The second and third
#: rounds' fields are measured as flags on top of it (study groups ``routers`` and ``third_order``).
FIRST_ROUND_PLUS = "dymoe_cascade_warm_spetag"
for _name, (_cfg, _what) in VARIANTS.items():
    register_method(Method(_name, config=_cfg, description=_what))

#: The third round (docs/beyond-the-paper.md section 7): the first round's recipe with the new bank's router rows
#: fixed at the centroids of its task's inputs, separate bank keys fitted through the model that trains (before the
#: first step and again at the end of the task) and one bank per sequence and projection, chosen by the mean of
#: the sequence's token scores.  No task id.  It was ``dymoe_plus`` until 2026-12-07, when the rule of
#: docs/beyond-the-paper.md section 8 adopted ``key_selector`` over it on the CoIN-shaped suite.
SEQUENCE_BANK = {**VARIANTS[FIRST_ROUND_PLUS][0], "router_train": False, "bank_keys": "fitted",
                 "bank_scope": "sequence"}
SEQBANK = "dymoe_seqbank"
register_method(Method(SEQBANK, config=SEQUENCE_BANK,
                       description="beyond the paper (third round; dymoe_plus until 2026-12-07): "
                                   "dymoe_cascade_warm_spetag with fixed router rows, bank keys fitted through the "
                                   "model that trains, one bank per sequence"))
#: What the alias ``dymoe_plus`` meant before a given date (run folders record the alias they were started with):
#: ``(recipe, until)``; ``protocol/options.py`` refuses to resume such a folder under today's meaning.
FORMER_ALIASES = {"dymoe_plus": (SEQBANK, "2026-12-07")}


#: Task-identity baselines for ``dymoe_plus`` (issue 26; docs/beyond-the-paper.md section 7): one bank per task,
#: trained alone on its task (``assign_rule="given"``: every training token uses the newest bank only; inside a
#: bank the cosine router's top-k softmax, as in ``dymoe``), no TAG or RSR.  The two recipes differ only in
#: ``task_selector``, which acts at inference alone (and, for ``hide``, in a pass over the task's data after
#: training that reads no bank), so the same seed trains bit-identical banks (tested).
GIVEN_BANK = {**_NO_DYMOE, "assign_rule": "given"}
TASK_BASELINES = ("oracle_bank", "hide_selector")
register_method(Method(
    "oracle_bank", config={**GIVEN_BANK, "task_selector": "oracle"},
    description="UPPER BOUND, not a method: one bank per task, trained alone; at evaluation the true task "
                "(DYMOE_EVAL_TASK_ID, set by cli run) picks its bank (banks trained bit-identically to hide_selector)"))
register_method(Method(
    "hide_selector", config={**GIVEN_BANK, "task_selector": "hide"},
    description="baseline: HiDe-LLaVA's task selector over one bank per task: softmax(mean image/text cosine to "
                "each task's anchors / 0.1) weighs the banks in every projection (banks trained bit-identically to "
                "oracle_bank)"))

#: Item 5 of issue 26 (docs/beyond-the-paper.md section 8, the candidate pre-registered 2026-12-07): ``dymoe_plus``'s
#: bank decision (one bank per sequence and projection, the mean of the prompt's scores against keys fitted at the
#: end of each task) over the banks of ``oracle_bank`` and ``hide_selector`` (each trained alone on its task).  The
#: three differ only in who picks the bank at inference, so ``oracle_bank`` minus ``key_selector`` is the cost of
#: the keys' choice on the same banks.  No task id at evaluation.
KEY_SELECTOR = {**GIVEN_BANK, "bank_scope": "sequence", "bank_keys": "fitted"}
#: Adopted by that rule on seeds 0-2 of CoIN's order (2026-12-07): ``--dymoe_method dymoe_plus`` was this recipe
#: until candidate 2 (``anchored_keys``, below) was adopted over it the same day.
register_method(Method(
    "key_selector", config=KEY_SELECTOR,
    description="beyond the paper (issue 26; dymoe_plus from its adoption over dymoe_seqbank until anchored_keys was "
                "adopted over it, both 2026-12-07): one bank per task trained alone (the banks of oracle_bank / "
                "hide_selector), chosen per sequence and projection by keys fitted after each task; no task id at "
                "evaluation"))

#: A second published selector over the same banks and anchors (added 2026-12-07, docs/beyond-the-paper.md section 8):
#: Prism's port of HiDe-LLaVA takes the argmax of the same image/text similarity where HiDe-LLaVA mixes the banks by
#: softmax(similarity / 0.1).  Its banks and anchors are hide_selector's, bit for bit, for the same seed.
register_method(Method(
    "prism_selector", config={**GIVEN_BANK, "task_selector": "prism"},
    description="baseline: Prism's port of HiDe-LLaVA's selector over one bank per task: the bank of the task whose "
                "anchors are most similar (mean image/text cosine, argmax) alone (banks and anchors bit-identical "
                "to hide_selector's)"))
TASK_BASELINES = TASK_BASELINES + ("prism_selector",)

#: Candidate 2 of item 5 (docs/beyond-the-paper.md section 8, pre-registered 2026-12-07 before its first run): the two
#: cues fail on different tasks, so the anchors (HiDe-LLaVA's, fitted as for ``prism_selector``) name each prompt's
#: two most similar tasks and ``key_selector``'s fitted keys choose one bank among them, per sequence and projection.
#: Banks and keys are ``key_selector``'s and anchors ``hide_selector``'s, bit for bit, for the same seed.
#: Adopted by the rule over ``key_selector`` on seeds 0-2 of CoIN's order (2026-12-07): ``--dymoe_method dymoe_plus``
#: is this recipe.
ANCHORED_KEYS = {**KEY_SELECTOR, "task_selector": "shortlist"}
PLUS = "anchored_keys"
register_method(Method(
    PLUS, config=ANCHORED_KEYS,
    description="beyond the paper (issue 26, candidate 2; = dymoe_plus since 2026-12-07, adopted over key_selector by "
                "the pre-registered rule): key_selector's banks and keys; at inference HiDe-LLaVA's anchors shortlist "
                "each prompt's 2 most similar tasks and the keys choose one bank among them, per sequence and "
                "projection; no task id at evaluation"),
    aliases=("dymoe_plus",))

#: Recipes that are told what no deployed model knows (the task at evaluation): reports name them as upper bounds.
UPPER_BOUNDS = ("oracle_bank",)


def report_name(method: str) -> str:
    """How reports name a run of ``method``: an upper bound carries the label, every other name is unchanged."""
    return f"{method} (UPPER BOUND: told the task)" if method in UPPER_BOUNDS else method


def get_method(name: str) -> Method:
    """The recipe registered as ``name``; ``KeyError`` lists the known methods."""
    return METHODS.get(name)
