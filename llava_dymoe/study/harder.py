"""The harder suite's verdict (issue 26): ``dymoe_plus`` against every method, per task order, for the results doc.

``dymoe_plus`` is ``anchored_keys`` since 2026-12-07: the selection rule below first adopted ``key_selector`` over the
recipe that held the name before, ``dymoe_seqbank`` (``RULE_BASELINE``, now one of the rivals), then ``anchored_keys``
over ``key_selector`` (``RULE_BASELINES``); ``CANDIDATE`` names the runs.

The goal, checked on the means over the seeds that finished, at each order of the ``harder`` group
(docs/beyond-the-paper.md section 8, written before any run):

1. ``dymoe_plus`` has the best MFN of every method given no task id (``plan.TOLD_THE_TASK`` excluded);
2. its BWT is no worse than ``dymoe``'s;
3. its MFT is within ``MFT_SLACK`` points of ``incmoelora``'s;
4. it closes at least half of the MFN gap between ``dymoe`` and ``oracle_bank`` (the upper bound):
   ``(MFN(dymoe_plus) - MFN(dymoe)) / (MFN(oracle_bank) - MFN(dymoe)) >= 0.5``; undefined (not met) when the
   oracle is not above ``dymoe``.

Each condition needs its runs; a condition whose runs have not finished is reported as missing, never as met.

Candidates (group ``harder_candidates``, item 5): each change to ``dymoe_plus`` is paired by seed in CoIN's order with
the recipe it would replace (``RULE_BASELINE``), and adopted when its mean MFN is higher and its mean BWT is not
lower by more than ``BWT_TOLERANCE`` points,
over all of ``DESIGN_SEEDS`` (fewer seeds: undecided); among several adopted the highest mean MFN wins
(``candidates_markdown``).
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .numbers import fmt_ms, paired_gap
from .plan import HARDER_ORDERS, TOLD_THE_TASK, Experiment
from .variants import MFT_SLACK

#: the recipe judged by the goal: ``dymoe_plus``, which is ``anchored_keys`` since the rule adopted it (2026-12-07)
CANDIDATE = "anchored_keys"
#: the recipe candidates are compared with (``dymoe_plus`` when the rule was written, now ``dymoe_seqbank``)
RULE_BASELINE = "dymoe_seqbank"
#: each candidate's comparison: the recipe that was ``dymoe_plus`` when the candidate was written down
RULE_BASELINES = {"key_selector": RULE_BASELINE, "anchored_keys": "key_selector"}
#: the share of the dymoe -> oracle_bank MFN gap the candidate must close
GAP_SHARE = 0.5
#: paired with the candidate in the doc's table
PAIRED_WITH = ("dymoe", "incmoelora", "dymoe_seqbank", "key_selector", "hide_selector", "prism_selector",
               "oracle_bank")
#: the selection rule for changes to ``dymoe_plus`` (docs/beyond-the-paper.md section 8)
DESIGN_SEEDS = (0, 1, 2)
BWT_TOLERANCE = 2.0


def order_keys(plan: Sequence[Experiment], order: str) -> Dict[str, str]:
    """``{method: experiment key}`` of the harder group's runs in ``order``."""
    return {e.method: e.key for e in plan if e.group == "harder" and e.order == order}


def _mean(by_key: Dict[str, Dict[str, Any]], key: Optional[str], metric: str) -> float:
    row = by_key.get(key or "", {})
    if not row.get("seeds"):
        return float("nan")
    return row["stats"][metric][0]


def goal(by_key: Dict[str, Dict[str, Any]], keys: Dict[str, str],
         candidate: str = CANDIDATE) -> List[Tuple[str, Optional[bool], str]]:
    """The four conditions for one order: ``(name, met, text)``; ``met`` None when a run it needs is missing.
    ``candidate``: the method judged (``keys`` must hold it); every other method of ``keys`` is a rival."""
    mean = lambda method, metric: _mean(by_key, keys.get(method), metric)  # noqa: E731
    out: List[Tuple[str, Optional[bool], str]] = []
    mine = {m: mean(candidate, m) for m in ("mfn", "bwt", "mft")}
    if math.isnan(mine["mfn"]):
        return [("all", None, f"`{candidate}` has no finished run")]
    rivals = {m: mean(m, "mfn") for m in keys if m != candidate and m not in TOLD_THE_TASK}
    done = {m: v for m, v in rivals.items() if not math.isnan(v)}
    if not rivals:
        out.append(("best MFN without a task id", None, "no other method ran"))
    elif len(done) == len(rivals):
        top = max(done, key=done.get)
        ok = mine["mfn"] > done[top]
        out.append(("best MFN without a task id", ok,
                    f"MFN {mine['mfn']:.1f} {'>' if ok else '<='} best other ({top}) {done[top]:.1f}"))
    else:
        missing = sorted(set(rivals) - set(done))
        out.append(("best MFN without a task id", None, f"runs missing: {', '.join(missing)}"))
    bwt = mean("dymoe", "bwt")
    if math.isnan(bwt):
        out.append(("BWT no worse than dymoe's", None, "dymoe has no finished run"))
    else:
        ok = mine["bwt"] >= bwt
        out.append(("BWT no worse than dymoe's", ok, f"BWT {mine['bwt']:.1f} {'>=' if ok else '<'} dymoe's {bwt:.1f}"))
    mft = mean("incmoelora", "mft")
    if math.isnan(mft):
        out.append((f"MFT within {MFT_SLACK:g} of incmoelora's", None, "incmoelora has no finished run"))
    else:
        gap = mine["mft"] - mft
        ok = gap >= -MFT_SLACK
        out.append((f"MFT within {MFT_SLACK:g} of incmoelora's", ok, f"MFT {gap:+.1f} vs incmoelora"))
    low, high = mean("dymoe", "mfn"), mean("oracle_bank", "mfn")
    name = f"closes {GAP_SHARE:.0%} of the dymoe -> oracle_bank MFN gap"
    if math.isnan(low) or math.isnan(high):
        out.append((name, None, "dymoe or oracle_bank has no finished run"))
    elif high <= low:
        out.append((name, False, f"no gap to close: oracle_bank {high:.1f} <= dymoe {low:.1f}"))
    else:
        share = (mine["mfn"] - low) / (high - low)
        ok = share >= GAP_SHARE
        out.append((name, ok, f"closes {share:.0%} of {high - low:.1f} points (dymoe {low:.1f}, oracle_bank {high:.1f})"))
    return out


def markdown(by_key: Dict[str, Dict[str, Any]], plan: Sequence[Experiment]) -> str:
    """The paired table and the goal check per order of the harder group ("" when the plan has no such group)."""
    orders = [o for o in HARDER_ORDERS if order_keys(plan, o)]
    if not orders:
        return ""
    lines = [f"`dymoe_plus` (= `{CANDIDATE}`) minus each method, paired by seed (mean ± std over the seeds both "
             "finished). "
             "`oracle_bank` is told the true task id at evaluation: an upper bound, not a competitor.\n",
             "| order | method | ΔMFN | ΔBWT | ΔMFT | seeds |", "|---|---|---|---|---|---|"]
    verdicts = []
    for order in orders:
        keys = order_keys(plan, order)
        if CANDIDATE not in keys:
            continue
        for other in PAIRED_WITH:
            if other not in keys:
                continue
            gaps = [paired_gap(by_key, keys[other], keys[CANDIDATE], m) for m in ("mfn", "bwt", "mft")]
            lines.append(f"| {order} | {other} | " + " | ".join(fmt_ms(g[0], g[1]) for g in gaps) + f" | {gaps[0][2]} |")
        conditions = goal(by_key, keys)
        met = sum(1 for _, ok, _ in conditions if ok)
        missing = sum(1 for _, ok, _ in conditions if ok is None)
        verdicts.append(f"* {order} order: {met} of {len(conditions)} conditions met"
                        + (f" ({missing} not measurable yet)" if missing else "") + ": "
                        + "; ".join(text for _, _, text in conditions) + ".")
    lines.append("")
    lines.append("Goal (issue 26, on the means): the best MFN of every method given no task id, BWT no worse than "
                 f"dymoe's, MFT within {MFT_SLACK:g} points of incmoelora's, at least {GAP_SHARE:.0%} of the MFN gap "
                 "between dymoe and oracle_bank closed.\n")
    lines += verdicts
    return "\n".join(lines) + "\n"


def candidate_verdicts(by_key: Dict[str, Dict[str, Any]], plan: Sequence[Experiment]) -> List[Dict[str, Any]]:
    """Per candidate of ``harder_candidates``: its paired gaps to its ``RULE_BASELINES`` recipe (CoIN's order) and
    the rule's answer, ``adopt`` True / False, or None while a design seed is missing from either run."""
    keys = order_keys(plan, "default")
    out = []
    for e in plan:
        if e.group != "harder_candidates" or e.order != "default":  # the drawn order of an adopted one: held out
            continue
        against = RULE_BASELINES.get(e.method, RULE_BASELINE)
        plus = keys.get(against)
        gaps = {m: paired_gap(by_key, plus or "", e.key, m) for m in ("mfn", "bwt", "mft")}
        both = set(by_key.get(plus or "", {}).get("seeds") or ()) & set(by_key.get(e.key, {}).get("seeds") or ())
        adopt = None
        if set(DESIGN_SEEDS) <= both:
            adopt = gaps["mfn"][0] > 0 and gaps["bwt"][0] >= -BWT_TOLERANCE
        out.append({"method": e.method, "against": against, "key": e.key, "gaps": gaps, "seeds": sorted(both),
                    "adopt": adopt})
    return out


def candidates_markdown(by_key: Dict[str, Dict[str, Any]], plan: Sequence[Experiment]) -> str:
    """The candidates' paired table and the selection rule's answer ("" without candidates)."""
    rows = candidate_verdicts(by_key, plan)
    if not rows:
        return ""
    lines = ["Each candidate minus the recipe that was `dymoe_plus` when the candidate was written down, paired by "
             "seed in CoIN's order (mean ± std over the seeds both finished). Rule, written before the runs "
             "(docs/beyond-the-paper.md section 8): adopted when the mean "
             f"MFN is higher and the mean BWT is not lower by more than {BWT_TOLERANCE:g} points, over seeds "
             f"{', '.join(map(str, DESIGN_SEEDS))}; among several, the highest mean MFN wins.\n",
             "| candidate | against | ΔMFN | ΔBWT | ΔMFT | seeds | rule |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        g = r["gaps"]
        answer = {None: f"undecided ({len(r['seeds'])} of {len(DESIGN_SEEDS)} seeds)", True: "adopted",
                  False: "rejected"}[r["adopt"]]
        lines.append(f"| `{r['method']}` | `{r['against']}` | "
                     + " | ".join(fmt_ms(g[m][0], g[m][1]) for m in ("mfn", "bwt", "mft"))
                     + f" | {len(r['seeds'])} | {answer} |")
    current = adopted_recipe(rows)
    if current != RULE_BASELINE:
        lines.append(f"\nAdopted: `{current}`, now `dymoe_plus`; its drawn-order runs (in the table above) are "
                     "the held-out look, reported as they come.")
    return "\n".join(lines) + "\n"


def adopted_recipe(rows: Sequence[Dict[str, Any]]) -> str:
    """The recipe ``dymoe_plus`` names after the rule's answers, in the order the candidates were written down: a
    candidate adopted against the recipe of its day replaces it (``RULE_BASELINE`` when none was adopted); among
    several adopted against the same recipe, the highest mean MFN wins."""
    current = RULE_BASELINE
    while True:
        won = [r for r in rows if r["against"] == current and r["adopt"]]
        if not won:
            return current
        current = max(won, key=lambda r: r["gaps"]["mfn"][0])["method"]
