"""What TAG saw while each task was trained: the ``routing_stats.json`` of every checkpoint of a results run.

The study trains the methods with one routed bank per task with ``--dymoe_log_routing True``; each task
checkpoint (stage t >= 2) then records, over that task's training tokens and averaged over layers, the
token types at tau on the raw router logits (new / old / ambiguous, method.md §2), the mean group scores
``c_old`` (best old expert) and ``c_new`` (best new expert), their relative gap ``D_rel``, and the gate
mass on the new bank ``g_new``.  This is the pilot's open question (pilot-drift.md, addendum): TAG can only
keep old-task-like tokens away from the new experts if ``c_old`` rises clearly above what fresh router
rows get by chance, i.e. if ``D_rel`` exceeds tau for a good share of tokens.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Sequence

from llava_dymoe.trainer.saving import ROUTING_STATS

from .aggregate import fmt_ms, mean_std
from .execute import run_dir
from .plan import Experiment
#: ``(column, key in routing_stats.json)``; ``layer_mean`` keys first, the others are layer means of ``layers``.
COLUMNS = (("old", "frac_old"), ("new", "frac_new"), ("ambiguous", "frac_ambiguous"), ("g_new", "mean_g_new"),
           ("c_old", "mean_c_old"), ("c_new", "mean_c_new"), ("D_rel", "mean_d_rel"))


def stage_record(path: str) -> Optional[Dict[str, float]]:
    """Layer means of one checkpoint's routing statistics (``None`` without scores: one bank, no file)."""
    if not os.path.isfile(path):
        return None
    layers = json.load(open(path)).get("layers", {})
    scored = [row for row in layers.values() if "mean_d_rel" in row]
    if not scored:
        return None
    return {key: sum(float(row[key]) for row in scored) / len(scored) for _, key in COLUMNS}


def run_records(folder: str) -> Dict[int, Dict[str, float]]:
    """``{stage number: layer means}`` for every checkpoint of one run folder that has routing statistics."""
    root = os.path.join(folder, "checkpoints")
    out: Dict[int, Dict[str, float]] = {}
    if not os.path.isdir(root):
        return out
    for name in os.listdir(root):
        stage = name.split("_", 1)[0]
        record = stage_record(os.path.join(root, name, ROUTING_STATS))
        if stage.isdigit() and record is not None:
            out[int(stage)] = record
    return out


def routing_rows(root: str, plan: Sequence[Experiment], seeds: Sequence[int]) -> List[Dict[str, Any]]:
    """One row per experiment with statistics: per key, mean +- std over seeds of the run's mean over stages."""
    rows, seen = [], set()
    for exp in plan:
        if exp.key in seen:
            continue
        seen.add(exp.key)
        per_seed = {}
        for seed in seeds:
            records = run_records(run_dir(root, exp, seed))
            if records:
                per_seed[seed] = {key: sum(r[key] for r in records.values()) / len(records) for _, key in COLUMNS}
                per_seed[seed]["stages"] = sorted(records)
        if per_seed:
            stats = {key: mean_std([v[key] for v in per_seed.values()]) for _, key in COLUMNS}
            stages = sorted({s for v in per_seed.values() for s in v["stages"]})
            rows.append({"experiment": exp, "seeds": sorted(per_seed), "stages": stages, "stats": stats})
    return rows


def routing_markdown(rows: Sequence[Dict[str, Any]]) -> str:
    if not rows:
        return ""
    head = ("Over each task's own training tokens (stages 2-5, `--dymoe_log_routing True`), mean over layers and "
            "stages, then mean ± std over seeds: the share of tokens TAG calls old / new / ambiguous at the run's "
            "tau (0.2 unless the run names another; for `incmoelora` the same test is only measured: it trains without TAG), the gate mass on "
            "the new bank `g_new`, the mean best old and best new cosine logits `c_old`, `c_new` and their relative "
            "gap `D_rel` (a token counts as old or new only when `D_rel` > tau).\n\n"
            "| run | d | seeds | " + " | ".join(c for c, _ in COLUMNS) + " |\n|---|---|---|" + "---|" * len(COLUMNS))
    lines = [head]
    for r in rows:
        e = r["experiment"]
        extra = "".join(f" {k}={v}" for k, v in e.dymoe_args)
        lines.append(f"| {e.method}{extra} | {e.width} | {len(r['seeds'])} | "
                     + " | ".join(fmt_ms(*r["stats"][key], digits=2) for _, key in COLUMNS) + " |")
    return "\n".join(lines) + "\n"

