"""Beyond the paper: the plasticity issue's comparisons, goal check and cause tests for the results doc.

For each look (d = 128 in the suite's order, d = ``VARIANT_WIDTH``, the second and third task orders), the
third round's recipe (``dymoe_seqbank``, ``dymoe_plus`` until 2026-12-07) and the first round's recipe are
paired by seed with
``incmoelora``, ``olora`` and ``dymoe``: ``metric(recipe) - metric(baseline)`` for MFN, BWT and MFT, mean ± std over
the seeds both finished.
The goal of the issue, checked on the means: MFN above every other method's, MFT within ``MFT_SLACK``
points of IncMoELoRA's, BWT at least DyMoE's.

The cause tests re-read finished runs: ``dymoe`` and ``incmoelora`` checkpoints answered again with TAG's
decision kept at inference (``protocol.reeval``, ``assign_rule=cascade``), and the per-stage, per-phase and
per-token-kind shares of tokens TAG calls new (``routing_stats.json``).
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Sequence, Tuple

from .numbers import fmt_ms, mean_std, paired_gap
from .execute import run_dir
from llava_dymoe.methods import SEQBANK

from .plan import SEQUENCE_BANK, VARIANT_BASELINES, Experiment, best_variant

#: The issue's plasticity tolerance: the best variant's MFT may be this many points under IncMoELoRA's.
MFT_SLACK = 3.0
LOOKS = (("variants", "d = 128, the suite's order"), ("variants_width", "d = 256, the suite's order"),
         ("order", "d = 128, the reversed order"))


def _look_keys(plan: Sequence[Experiment], group: str) -> Dict[str, str]:
    """``{method: experiment key}`` of one look's runs."""
    return {e.method: e.key for e in plan if e.group == group}


def _third_round_looks(plan: Sequence[Experiment]) -> List[Tuple[str, Dict[str, str], str]]:
    """``(label, {name: key}, candidate name)`` per look of the third round's recipe (``plan.SEQUENCE_BANK`` on the
    first round's recipe): every run of the plan at the look's width and order (the cause tests aside) is an other
    method; the candidate is keyed ``dymoe_seqbank`` (``dymoe_plus`` until 2026-12-07), the first round's recipe
    ``dymoe_cascade_warm_spetag``."""
    first = best_variant()
    is_cand = lambda e: e.method == first and e.dymoe_args == SEQUENCE_BANK  # noqa: E731
    looks = []
    for c in sorted({(e.width, e.order) for e in plan if is_cand(e)},
                    key=lambda wo: (wo[1] != "default", wo[0], wo[1])):
        width, order = c
        label = f"d = {width}, " + ("the suite's order" if order == "default" else f"the {order} order")
        keys: Dict[str, str] = {}
        for e in plan:
            if (e.width, e.order) != c or e.group == "causes":
                continue
            name = SEQBANK if is_cand(e) else "_".join([e.method] + [f"{k}={v}" for k, v in e.dymoe_args])
            keys.setdefault(name, e.key)
        looks.append((label, keys, SEQBANK))
    return looks


def paired_markdown(by_key: Dict[str, Dict[str, Any]], plan: Sequence[Experiment]) -> str:
    """Paired gaps against each baseline and the goal check per look: the third round's recipe (today's
    ``dymoe_seqbank``, ``dymoe_plus`` until 2026-12-07) at every look it ran, then the first round's recipe at its
    three looks."""
    best = best_variant()
    first = [(label, _look_keys(plan, group), best) for group, label in LOOKS]
    sections = []
    for title, looks in ((f"`{SEQBANK}` (the third round's recipe, `dymoe_plus` until 2026-12-07: `{best}` + "
                          + ", ".join(f"{k}={v}" for k, v in SEQUENCE_BANK) + ")", _third_round_looks(plan)),
                         (f"The first round's recipe (`{best}`, `dymoe_plus` before the third round)", first)):
        lines = [f"{title} minus each baseline, paired by seed (mean ± std over the seeds both finished). Goal of "
                 f"the plasticity issue: MFN above every other method's, MFT within {MFT_SLACK:g} points of "
                 "IncMoELoRA's, BWT at least DyMoE's (checked on the means).\n",
                 "| look | baseline | ΔMFN | ΔBWT | ΔMFT | seeds |", "|---|---|---|---|---|---|"]
        verdicts = []
        for label, keys, cand in looks:
            if cand not in keys or not by_key.get(keys[cand], {}).get("seeds"):
                continue  # the look is not in the plan, or the candidate has no finished run there
            for base in VARIANT_BASELINES:
                if base not in keys:
                    continue
                gaps = [paired_gap(by_key, keys[base], keys[cand], m) for m in ("mfn", "bwt", "mft")]
                lines.append(f"| {label} | {base} | " + " | ".join(fmt_ms(g[0], g[1]) for g in gaps)
                             + f" | {gaps[0][2]} |")
            verdicts.append(f"* {label}: " + goal_check(by_key, keys, cand))
        if verdicts:
            sections.append("\n".join(lines) + "\n\n" + "\n".join(verdicts) + "\n")
    return "\n".join(sections)


def goal_check(by_key: Dict[str, Dict[str, Any]], keys: Dict[str, str], best: str) -> str:
    """One sentence: which of the issue's three conditions the best variant meets in this look (means)."""
    mine = by_key[keys[best]]["stats"]
    others = {m: by_key[k]["stats"] for m, k in keys.items() if m != best and by_key.get(k, {}).get("seeds")}
    parts, met = [], 0
    if others:
        top = max(others, key=lambda m: others[m]["mfn"][0])
        ok = mine["mfn"][0] > others[top]["mfn"][0]
        met += ok
        parts.append(f"MFN {mine['mfn'][0]:.1f} {'>' if ok else '<='} best other ({top}) {others[top]['mfn'][0]:.1f}")
    if "incmoelora" in others:
        gap = mine["mft"][0] - others["incmoelora"]["mft"][0]
        ok = gap >= -MFT_SLACK
        met += ok
        parts.append(f"MFT {gap:+.1f} vs IncMoELoRA ({'within' if ok else 'outside'} {MFT_SLACK:g})")
    if "dymoe" in others:
        ok = mine["bwt"][0] >= others["dymoe"]["bwt"][0]
        met += ok
        parts.append(f"BWT {mine['bwt'][0]:.1f} {'>=' if ok else '<'} DyMoE's {others['dymoe']['bwt'][0]:.1f}")
    return f"{met} of {len(parts)} conditions met: " + "; ".join(parts) + "."


# ------------------------------------------------------------------ TAG at inference (re-evaluation)
REEVAL_RULE = "cascade"


def reeval_targets(plan: Sequence[Experiment]) -> List[Experiment]:
    """The paper-rule runs worth answering again with TAG kept at inference: dymoe and incmoelora, d = 128."""
    return [e for e in plan if e.group in ("variants", "methods") and e.method in ("dymoe", "incmoelora")
            and not e.dymoe_args and e.order == "default"]


def run_reeval(root: str, plan: Sequence[Experiment], seeds: Sequence[int], log=print) -> None:
    """``protocol.reeval`` with ``REEVAL_RULE`` on every finished target run (resumable, cached per cell)."""
    from llava_dymoe.protocol.reeval import reevaluate

    seen = set()
    for exp in reeval_targets(plan):
        if exp.key in seen:
            continue
        seen.add(exp.key)
        for seed in seeds:
            folder = run_dir(root, exp, seed)
            if os.path.isfile(os.path.join(folder, "matrix.csv")):
                log(f"reeval {REEVAL_RULE}: {exp.key} seed {seed}")
                reevaluate(folder, REEVAL_RULE, threads=1)


def reeval_markdown(root: str, plan: Sequence[Experiment], seeds: Sequence[int]) -> str:
    """Metrics of the same checkpoints answered with their own rule and with TAG kept at inference."""
    from llava_dymoe.eval.matrix import AccuracyMatrix
    from llava_dymoe.eval.metrics import summary

    rows, seen = [], set()
    for exp in reeval_targets(plan):
        if exp.key in seen:
            continue
        seen.add(exp.key)
        own, cas = {}, {}
        for seed in seeds:
            folder = run_dir(root, exp, seed)
            path = os.path.join(folder, "reeval", REEVAL_RULE, "matrix.csv")
            if not (os.path.isfile(path) and os.path.isfile(os.path.join(folder, "matrix.csv"))):
                continue
            a, b = AccuracyMatrix.from_csv(os.path.join(folder, "matrix.csv")), AccuracyMatrix.from_csv(path)
            if len(b.stages) != len(b.tasks) or len(a.stages) != len(a.tasks):
                continue
            own[seed], cas[seed] = summary(a), summary(b)
        if own:
            rows.append((exp, own, cas))
    if not rows:
        return ""
    out = [f"The same checkpoints answered twice: with their own inference rule (the paper's plain router over all "
           f"experts) and with TAG's decision kept at inference (`DYMOE_EVAL_ASSIGN_RULE={REEVAL_RULE}`: a token "
           "goes to the newest bank that beats every earlier bank by D_rel > tau; `python -m "
           "llava_dymoe.protocol.reeval RUN --assign-rule cascade`). Nothing is retrained; mean ± std over seeds.\n",
           "| run | seeds | rule at inference | MFN | BWT | MFT |", "|---|---|---|---|---|---|"]
    for exp, own, cas in rows:
        for label, d in (("own (plain router)", own), ("TAG kept (cascade)", cas)):
            vals = [fmt_ms(*mean_std([d[s][m] for s in d])) for m in ("mfn", "bwt", "mft")]
            out.append(f"| {exp.method} | {len(d)} | {label} | " + " | ".join(vals) + " |")
    return "\n".join(out) + "\n"
