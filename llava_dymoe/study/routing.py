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

from .numbers import fmt_ms, mean_std
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
        if e.order != "default":
            extra += f" ({e.order} order)"
        lines.append(f"| {e.method}{extra} | {e.width} | {len(r['seeds'])} | "
                     + " | ".join(fmt_ms(*r["stats"][key], digits=2) for _, key in COLUMNS) + " |")
    return "\n".join(lines) + "\n"



# ------------------------------------------------------------------ TAG's new share by stage, phase and kind
PHASE_NAMES = ("start", "middle", "end")
KINDS = ("image", "instruction", "answer")


def share_record(path: str) -> Optional[Dict[str, float]]:
    """TAG's new share of one checkpoint's training tokens: overall, per phase of the task, per token kind."""
    if not os.path.isfile(path):
        return None
    data = json.load(open(path))
    overall = data.get("layer_mean", {}).get("frac_new")
    if overall is None:
        return None
    out = {"all": float(overall)}
    for name, ph in (data.get("phases") or {}).items():
        if "frac_new" in ph.get("layer_mean", {}):
            out[name] = float(ph["layer_mean"]["frac_new"])
    for kind, row in (data.get("by_kind") or {}).items():
        if "frac_new" in row:
            out[kind] = float(row["frac_new"])
    return out


def share_rows(root: str, plan: Sequence[Experiment], seeds: Sequence[int]) -> List[Dict[str, Any]]:
    """Per experiment with routing statistics: mean ± std over seeds of the new share per stage, and of the
    mean over stages per phase and per token kind."""
    rows, seen = [], set()
    for exp in plan:
        if exp.key in seen:
            continue
        seen.add(exp.key)
        stage_vals: Dict[int, List[float]] = {}
        part_vals: Dict[str, List[float]] = {}
        for seed in seeds:
            ckroot = os.path.join(run_dir(root, exp, seed), "checkpoints")
            if not os.path.isdir(ckroot):
                continue
            recs = {}
            for name in os.listdir(ckroot):
                stage = name.split("_", 1)[0]
                rec = share_record(os.path.join(ckroot, name, ROUTING_STATS))
                if stage.isdigit() and rec is not None:
                    recs[int(stage)] = rec
            for stage, rec in recs.items():
                stage_vals.setdefault(stage, []).append(rec["all"])
            for part in PHASE_NAMES + KINDS:
                vals = [r[part] for r in recs.values() if part in r]
                if vals:
                    part_vals.setdefault(part, []).append(sum(vals) / len(vals))
        if stage_vals and any(p in part_vals for p in PHASE_NAMES):
            rows.append({"experiment": exp, "stages": {s: mean_std(v) for s, v in sorted(stage_vals.items())},
                         "parts": {p: mean_std(v) for p, v in part_vals.items()},
                         "seeds": max(len(v) for v in stage_vals.values())})
    return rows


def share_markdown(rows: Sequence[Dict[str, Any]]) -> str:
    if not rows:
        return ""
    stages = sorted({s for r in rows for s in r["stages"]})
    cols = [f"t={s}" for s in stages] + list(PHASE_NAMES) + list(KINDS)
    out = ["Share of (token, projection) pairs TAG calls new while each task trains (the same test at the run's "
           "tau for the methods that train without TAG), mean ± std over seeds: per stage t (mean over layers), "
           "then the mean over stages 2-5 within the first, middle and last third of each task's steps, and per "
           "token kind (image patches, instruction = system prompt and question, answer). The same seed trains on "
           "the same batches in every method, so the columns compare the same tokens.\n",
           "| run | d | order | seeds | " + " | ".join(cols) + " |", "|---|---|---|---|" + "---|" * len(cols)]
    for r in rows:
        e = r["experiment"]
        extra = "".join(f" {k}={v}" for k, v in e.dymoe_args)
        vals = [fmt_ms(*r["stages"].get(s, (float("nan"),) * 2), digits=2) for s in stages]
        vals += [fmt_ms(*r["parts"].get(p, (float("nan"),) * 2), digits=2) for p in PHASE_NAMES + KINDS]
        out.append(f"| {e.method}{extra} | {e.width} | {e.order} | {r['seeds']} | " + " | ".join(vals) + " |")
    return "\n".join(out) + "\n"
