"""The experiment grid of ``make results`` (issue: methods, ablation ladder, tau sweep, width study).

An ``Experiment`` is one continual run configuration (a method recipe plus ``--dymoe_*`` values, at one
LLM width); each is run for every seed.  Groups:

* ``methods``: the baselines ``lora``, ``moelora``, ``olora``, then ``incmoelora`` and ``dymoe``;
* ``ladder``: method.md §6.2's cumulative ladder, IncMoELoRA -> +aux -> +TAG -> +exc -> +spe;
* ``tau``: ``dymoe`` with tau in TAU_SWEEP (0.2, the paper's value, is the ``methods`` run);
* ``width``: ``incmoelora`` vs ``dymoe`` at other LLM hidden sizes, each from its own base model,
  with the paper's recipe unchanged (router temperature 0.01 and steps are **not** scaled with d);
* ``variants``: the beyond-the-paper recipes (``methods.VARIANTS``) next to ``incmoelora``, ``olora`` and
  ``dymoe`` (the plasticity issue); ``variants_width``: the same baselines and the first round's recipe at d = 256;
  ``order``: them again on the second task order (``ORDERS["reversed"]``); ``causes``: the audit's cause tests
  (``dymoe`` without L_spe, and ``dymoe`` / ``incmoelora`` with the projector trained); ``routers``: the second
  round, the first round's recipe with fixed router rows, re-centred rows or refreshed bank keys, and the third,
  those keys deciding one bank per sequence (``dymoe_seqbank``), at all three looks;
  ``third_order``: the baselines and the third round's recipe on a third task order (``ORDERS["shuffled"]``).

The seed varies the training (new-bank init, data order); the base model and the suite are fixed
(seed 0 each), so the spread is the training's.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from llava_dymoe import methods as _methods

#: Default LLM hidden size of the embedded base model (``synthetic.base.default_sizes``).
DEFAULT_WIDTH = 128
TAU_SWEEP = (0.1, 0.3, 0.5)
WIDTHS = (64, 256, 512)
LADDER = ("incmoelora", "incmoelora_aux", "incmoelora_aux_tag", "incmoelora_aux_tag_exc", "dymoe_aux")
METHODS = ("lora", "moelora", "olora", "incmoelora", "dymoe")
#: The groups ``make results`` runs by default (all on the default synthetic suite).
DEFAULT_GROUPS = ("methods", "ladder", "tau", "width", "variants", "variants_width", "order", "causes", "routers",
                  "third_order")
#: ``harder`` (issue 26) runs on the ``coin_shaped`` suite, so it is studied on its own: ``make results-harder``.
GROUPS = DEFAULT_GROUPS + ("harder", "harder_candidates")
#: The harder suite's study: every method on ``HARDER_SUITE`` in CoIN's order and the drawn order, including the
#: baselines a task selector must face (``hide_selector`` and ``prism_selector``, two published selectors over the same
#: banks and anchors, the second added 2026-12-07 after seed 0; ``oracle_bank``, the upper bound).  ``anchored_keys`` is
#: ``dymoe_plus`` since the rule adopted it over ``key_selector`` (2026-12-07), which the rule had adopted over
#: ``dymoe_seqbank`` (the study's earlier ``dymoe_plus`` runs) the same day.
HARDER_SUITE = "coin_shaped"
HARDER_METHODS = ("lora", "moelora", "olora", "incmoelora", "dymoe", "dymoe_seqbank", "key_selector", "anchored_keys",
                  "hide_selector", "prism_selector", "oracle_bank")
HARDER_ORDERS = ("default", "drawn")
#: Item 5 of issue 26: changes to ``dymoe_plus`` on the harder suite, each compared with the recipe it would replace
#: (``harder.RULE_BASELINE``) paired by seed in CoIN's order only (the selection rule of docs/beyond-the-paper.md
#: section 8, written before their runs); group ``harder_candidates``, beside ``harder`` in ``make results-harder``.
#: ``key_selector`` was adopted (2026-12-07) and is now also a method of ``harder`` (the same runs): its drawn-order
#: runs there are the rule's held-out look.
#: ``anchored_keys`` (candidate 2, pre-registered 2026-12-07) is judged against ``key_selector``, the ``dymoe_plus`` of
#: its day (``harder.RULE_BASELINES``); adopted, it is a method of ``harder`` too, with its drawn-order runs held out.
HARDER_CANDIDATES = ("key_selector", "anchored_keys")
#: Every group that runs on ``HARDER_SUITE``.
HARDER_GROUPS = ("harder", "harder_candidates")
#: The methods of the harder study that are given the true task id: never "the best method given no task id".
TOLD_THE_TASK = ("oracle_bank",)
DEFAULT_SUITE = "synthetic"
#: What the beyond-the-paper variants are measured against, paired by seed (the plasticity issue).
VARIANT_BASELINES = ("incmoelora", "olora", "dymoe")
#: The width and the task order of the variants' second and third look.
VARIANT_WIDTH = 256
SECOND_ORDER = "reversed"
#: The third round's held-out look: a third task order, drawn before any run on it (``ORDERS``).
THIRD_ORDER = "shuffled"
#: Cause tests of the plasticity audit, each against ``dymoe`` (shared-plasticity-audit.md causes 2-3 and
#: the projector): ``(name, method, dymoe_args)``.
CAUSES = (("dymoe c_spe=0", "dymoe", (("c_spe", "0"),)),
          ("dymoe, projector trained", "dymoe", (("train_projector", "True"),)),
          ("incmoelora, projector trained", "incmoelora", (("train_projector", "True"),)))
#: Second round of the plasticity issue: the bank decision's rows on top of the first round's ``dymoe_plus``
#: (``router_train``, ``router_refresh``, ``bank_keys``) and their scope (``bank_scope``, the third round), each at
#: the three looks ``(width, order)`` next to the baselines and the first round's recipe (the same run folders as
#: the variants / variants_width / order groups).
#: The third round's recipe (``methods.SEQUENCE_BANK``, registered as ``dymoe_plus``) as flags on the first round's
#: recipe, spelled as the study passes them: fixed rows, keys fitted at the start and re-centred at the end of the
#: task, one bank per sequence.
SEQUENCE_BANK = tuple(sorted((k, str(v)) for k, v in _methods.SEQUENCE_BANK.items()
                             if k not in _methods.VARIANTS[_methods.FIRST_ROUND_PLUS][0]))
ROUTER_VARIANTS = (("fixed router rows", (("router_train", "False"),)),
                   ("fixed rows re-centred at task end", (("router_refresh", "True"), ("router_train", "False"))),
                   ("fixed rows + refreshed bank keys", (("bank_keys", "refreshed"), ("router_train", "False"))),
                   ("fixed rows + refreshed keys, one bank per sequence",
                    (("bank_keys", "refreshed"), ("bank_scope", "sequence"), ("router_train", "False"))),
                   ("fixed rows + fitted keys, one bank per sequence", SEQUENCE_BANK))
LOOKS = ((128, "default"), (256, "default"), (128, "reversed"))
#: Task orders of the study: the suite's own (CoIN-like) and the reverse, chosen before any result was seen
#: (the plasticity issue asks for a second order; nothing is tuned to either).
ORDERS = {"default": ("choice", "read", "classify", "vqa", "ground"),
          "reversed": ("ground", "vqa", "classify", "read", "choice"),
          # random.Random(1).sample of the suite's order, drawn for the third round before any run on it
          "shuffled": ("read", "choice", "ground", "vqa", "classify")}
#: The harder suite's second task order (issue 26), as indices into CoIN's order: random.Random(26).sample(range(8), 8),
#: drawn on 2026-12-06 before any run on the suite (docs/beyond-the-paper.md section 8).
COIN_SHAPED_DRAWN = (3, 5, 1, 7, 0, 4, 6, 2)


@dataclass(frozen=True)
class Experiment:
    group: str
    name: str
    method: str
    dymoe_args: Tuple[Tuple[str, str], ...] = ()
    width: int = DEFAULT_WIDTH
    #: task order: a key of ``orders_for(suite)`` ("default" = the suite's own order)
    order: str = "default"
    #: the synthetic suite (``llava_dymoe.synthetic.suites``); one plan runs on one suite
    suite: str = DEFAULT_SUITE

    @property
    def key(self) -> str:
        """Folder name, unique over the plan; equal configurations in two groups share one key."""
        parts = [self.method] + [f"{k}{v}" for k, v in self.dymoe_args]
        if self.width != DEFAULT_WIDTH:
            parts.append(f"d{self.width}")
        if self.order != "default":
            parts.append(f"order-{self.order}")
        if self.suite != DEFAULT_SUITE:
            parts.append(f"suite-{self.suite}")
        return "_".join(parts)


@dataclass(frozen=True)
class Profile:
    """Sizes of one results profile (``full`` for docs/results.md, ``quick`` for the tests)."""

    name: str
    base_steps: int
    task_steps: int
    n_train: int
    n_test: int
    seeds: Tuple[int, ...] = (0, 1, 2)
    train_args: Dict[str, str] = field(default_factory=dict)
    dymoe_args: Dict[str, str] = field(default_factory=dict)
    #: ``cli run --oracle-routing`` for the methods with one bank per task: the matrix with routing
    #: restricted to each task's own banks, i.e. the accuracy left when drift is taken away.
    oracle_routing: bool = True
    #: ``--dymoe_log_routing True`` for the methods with one routed bank per task: each checkpoint then
    #: holds ``routing_stats.json``, what TAG saw on that task's training tokens (token types at tau,
    #: c_old/c_new, gate mass on the new bank).  Bitwise the same training (tests/core), about 2 % slower.
    log_routing: bool = False
    #: the suite's tasks to generate and train, in the suite's order (None = all of them); the demo's ``--quick``
    #: mode trains three of the five, which is enough to show the pipeline (several banks, forgetting, the matrix)
    tasks: Optional[Tuple[str, ...]] = None


#: The per-task training recipe of the tiny model.  LLaVA-1.5's lr 2e-4 at global batch 128 is the
#: 7B recipe; at d=128 with batch 2 and 150 steps nothing is learned (measured: most tasks at or below
#: their majority answer), so the embedded default uses lr 2e-3, batch 8 and no gradient
#: checkpointing (nothing to save at this size).  The same recipe for every method.
TINY_TRAIN_ARGS = {"learning_rate": "2e-3", "per_device_train_batch_size": "8", "gradient_checkpointing": "False"}
#: The projector stays as the base stage left it (the base stage is the alignment stage): forgetting
#: in the expanding methods then comes from routing alone (old banks, LLM and projector are frozen,
#: so restricting routing to the old banks gives R[i, i] back exactly, tests/protocol).  Whether the
#: paper trains it is unknown (method.md §1.1 [?]); ``--train-projector`` turns it on for every method.
TINY_DYMOE_ARGS = {"train_projector": "False"}

PROFILES = {
    "full": Profile("full", base_steps=4000, task_steps=150, n_train=1200, n_test=40, train_args=TINY_TRAIN_ARGS,
                    dymoe_args=TINY_DYMOE_ARGS, log_routing=True),
    "quick": Profile("quick", base_steps=4, task_steps=2, n_train=12, n_test=2, seeds=(0, 1),
                     train_args=TINY_TRAIN_ARGS, dymoe_args=TINY_DYMOE_ARGS, oracle_routing=False),
}


def orders_for(suite: str) -> Dict[str, Tuple[str, ...]]:
    """The task orders of ``suite`` by name: ``ORDERS`` for the default suite; CoIN's and the drawn one
    (``COIN_SHAPED_DRAWN``) for ``coin_shaped``."""
    if suite == DEFAULT_SUITE:
        return dict(ORDERS)
    from llava_dymoe.synthetic.suites import get_suite

    names = tuple(t.name for t in get_suite(suite).tasks)
    orders = {"default": names}
    if suite == HARDER_SUITE:
        orders["drawn"] = tuple(names[i] for i in COIN_SHAPED_DRAWN)
    return orders


def plan_suite(plan: Sequence["Experiment"]) -> str:
    """The one suite every experiment of ``plan`` runs on (``ValueError`` for a mix: study them apart)."""
    suites = sorted({e.suite for e in plan}) or [DEFAULT_SUITE]
    if len(suites) > 1:
        raise ValueError(f"the plan mixes suites {suites}: run the group 'harder' ({HARDER_SUITE}) in its own study "
                         "command (make results-harder), the other groups without it")
    return suites[0]


def build_plan(groups: Sequence[str] = DEFAULT_GROUPS, widths: Sequence[int] = WIDTHS,
               taus: Sequence[float] = TAU_SWEEP) -> List[Experiment]:
    """The experiments of ``groups`` in a stable order (unknown group -> ``ValueError``)."""
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        raise ValueError(f"unknown results group(s) {unknown}; choose from {list(GROUPS)}")
    plan: List[Experiment] = []
    for group in groups:
        if group == "methods":
            plan += [Experiment(group, m, m) for m in METHODS]
        elif group == "ladder":
            names = ("IncMoELoRA", "+aux", "+TAG", "+exc", "+spe (DyMoE + aux)")
            plan += [Experiment(group, n, m) for n, m in zip(names, LADDER)]
        elif group == "tau":
            plan += [Experiment(group, f"tau={t:g}", "dymoe", (("tau", f"{t:g}"),)) for t in taus]
        elif group == "width":
            for w in widths:
                plan += [Experiment(group, f"{m} d={w}", m, width=w) for m in ("incmoelora", "dymoe")]
        elif group == "variants":
            plan += [Experiment(group, m, m) for m in VARIANT_BASELINES + variant_methods()]
        elif group == "variants_width":
            plan += [Experiment(group, f"{m} d={VARIANT_WIDTH}", m, width=VARIANT_WIDTH)
                     for m in VARIANT_BASELINES + (best_variant(),)]
        elif group == "order":
            plan += [Experiment(group, f"{m} ({SECOND_ORDER})", m, order=SECOND_ORDER)
                     for m in VARIANT_BASELINES + (best_variant(),)]
        elif group == "causes":
            plan += [Experiment(group, name, m, args) for name, m, args in CAUSES]
        elif group == "routers":
            plus = best_variant()
            for w, order in LOOKS:
                look = f"d={w}" + (f", {order}" if order != "default" else "")
                plan += [Experiment(group, f"{'first-round dymoe_plus' if m == plus else m} ({look})", m, width=w,
                                    order=order) for m in VARIANT_BASELINES + (plus,)]
                plan += [Experiment(group, f"first-round dymoe_plus + {name}"
                                    + (" = dymoe_seqbank" if args == SEQUENCE_BANK else "") + f" ({look})", plus, args,
                                    width=w, order=order) for name, args in ROUTER_VARIANTS]
        elif group == "third_order":
            plan += [Experiment(group, f"{m} ({THIRD_ORDER})", m, order=THIRD_ORDER) for m in VARIANT_BASELINES]
            plan += [Experiment(group, f"dymoe_seqbank = first-round dymoe_plus + fixed rows + fitted keys, one bank "
                                f"per sequence ({THIRD_ORDER})", best_variant(), SEQUENCE_BANK, order=THIRD_ORDER)]
        elif group == "harder":
            plan += [Experiment(group, m if o == "default" else f"{m} ({o})", m, order=o, suite=HARDER_SUITE)
                     for o in HARDER_ORDERS for m in HARDER_METHODS]
        elif group == "harder_candidates":
            plan += [Experiment(group, f"{m} (candidate)", m, suite=HARDER_SUITE) for m in HARDER_CANDIDATES]
    return plan


def variant_methods() -> Tuple[str, ...]:
    """The beyond-the-paper recipes (``methods.VARIANTS``), in registration order."""
    from llava_dymoe.methods import VARIANTS

    return tuple(VARIANTS)


def best_variant() -> str:
    """The first round's best recipe (``methods.FIRST_ROUND_PLUS``), which the study's later groups build on; it
    was ``dymoe_plus`` until the third round's recipe (``methods.SEQBANK``) took that name, which ``methods.PLUS``
    holds since 2026-12-07."""
    return _methods.FIRST_ROUND_PLUS


def widths_needed(plan: Sequence[Experiment]) -> List[int]:
    return sorted({e.width for e in plan})
