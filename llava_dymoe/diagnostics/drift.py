"""Routing drift of old-task inputs between a checkpoint A and later checkpoints B1, B2, ...

For each DyMoE module (decoder layer x projection), on the valid tokens of the same inputs:

* ``drift``: the share of B's routing mass (sum of gate weights) that goes to the experts added after A,
  i.e. to banks ``t{n_A} ...`` (0 when B has no bank beyond A's);
* ``top1_changed``: the fraction of tokens whose top-1 expert under B differs from the one under A
  (expert indices are comparable because banks are only ever appended);
* optionally the exact-match accuracy of A and of each B on the inputs (greedy answers, ``exact``).

Both models run in eval mode (no TAG), fp32 on CPU, one sample per forward.  Note (pilot-drift.md):
drift mass is not forgetting by itself; read it next to the accuracies.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Sequence

import torch

from ..core import RoutingStats
from .probe import Probe, module_position, read_questions


def _collect(probe: Probe, rows, image_folder: str, refs: Optional[Dict[str, Any]], max_new_tokens: int):
    stats = RoutingStats(keep_top1=True)
    answers = {}
    for row, ids, pixels, size in probe.questions(rows, image_folder):
        probe.route(stats, ids, pixels)
        if refs is not None:
            answers[str(row["question_id"])] = probe.answer(ids, pixels, size, max_new_tokens)
    return stats, answers


def _accuracy(answers: Dict[str, str], refs: Optional[Dict[str, Any]]) -> Optional[float]:
    if refs is None:
        return None
    from ..eval.scorers import exact

    return sum(exact(answers[q], refs[q]) for q in answers) / max(1, len(answers))


def _read_refs(path: Optional[str], rows) -> Optional[Dict[str, Any]]:
    if path is None:
        return None
    refs = {}
    with open(path) as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                refs[str(r["question_id"])] = r["answer"]
    missing = [str(r["question_id"]) for r in rows if str(r["question_id"]) not in refs]
    if missing:
        raise ValueError(f"--references {path} has no answer for question(s) {missing[:5]}")
    return refs


def compare(before: RoutingStats, after: RoutingStats, n_before: int) -> Dict[str, Dict[str, Any]]:
    """Per module: drift (mass share on banks >= ``n_before``) and top-1 change between two runs."""
    out = {}
    for name, acc in after.layers.items():
        if name not in before.layers:
            raise ValueError(f"module {name} is in the later checkpoint but not in the earlier one")
        mass = acc.bank_mass
        if mass.numel() < n_before:
            raise ValueError(f"{name}: the later checkpoint has {mass.numel()} bank(s), fewer than the earlier "
                             f"one's {n_before}; pass the checkpoints in training order")
        total = float(mass.sum())
        a = torch.cat(before.top1_tokens[name])
        b = torch.cat(after.top1_tokens[name])
        if a.shape != b.shape:
            raise ValueError(f"{name}: {a.numel()} vs {b.numel()} tokens; the inputs differ between the runs")
        layer, proj = module_position(name)
        out[name] = {"layer": layer, "projection": proj,
                     "drift": float(mass[n_before:].sum()) / total if total > 0 else 0.0,
                     "top1_changed": float((a != b).double().mean()) if a.numel() else 0.0}
    return out


def _matrix(per_module: Dict[str, Dict[str, Any]], key: str, layers: List[int], projs: List[str]):
    cell = {(m["layer"], m["projection"]): m[key] for m in per_module.values()}
    return [[cell.get((i, p)) for p in projs] for i in layers]


def run_drift(before: str, after: Sequence[str], questions: str, image_folder: str, model_base: str,
              output_dir: str, references: Optional[str] = None, max_questions: Optional[int] = None,
              max_new_tokens: int = 16) -> Dict[str, Any]:
    """Compute the drift report and write ``drift.json``, ``drift.md``, ``drift_heatmap.png`` (and
    ``drift_by_stage.png`` for more than one later checkpoint) into ``output_dir``; returns the report."""
    if not after:
        raise ValueError("give at least one --after checkpoint")
    rows = read_questions(questions, max_questions)
    refs = _read_refs(references, rows)
    probe = Probe(before, model_base)
    n_before = probe.num_tasks
    base_stats, base_answers = _collect(probe, rows, image_folder, refs, max_new_tokens)
    del probe
    stages = []
    for path in after:
        probe = Probe(path, model_base)
        stats, answers = _collect(probe, rows, image_folder, refs, max_new_tokens)
        per_module = compare(base_stats, stats, n_before)
        n = len(per_module)
        stages.append({"ckpt": os.path.abspath(path), "num_tasks": probe.num_tasks,
                       "mean_drift": sum(m["drift"] for m in per_module.values()) / n,
                       "mean_top1_changed": sum(m["top1_changed"] for m in per_module.values()) / n,
                       "accuracy": _accuracy(answers, refs), "modules": per_module})
        del probe
    layers = sorted({m["layer"] for m in stages[0]["modules"].values()})
    projs = list(dict.fromkeys(m["projection"] for m in stages[0]["modules"].values()))
    for s in stages:
        s["drift_matrix"] = _matrix(s["modules"], "drift", layers, projs)
        s["top1_changed_matrix"] = _matrix(s["modules"], "top1_changed", layers, projs)
    report = {"before": os.path.abspath(before), "num_tasks_before": n_before, "questions": os.path.abspath(questions),
              "n_questions": len(rows), "n_tokens": int(next(iter(base_stats.layers.values())).n_tokens),
              "accuracy_before": _accuracy(base_answers, refs), "scorer": "exact" if refs else None,
              "layers": layers, "projections": projs, "stages": stages}
    write_outputs(report, output_dir)
    return report


def markdown(report: Dict[str, Any]) -> str:
    """The report as Markdown: a summary table over stages, then one layer x projection table per stage."""
    lines = ["# Routing drift of old-task inputs", "",
             f"before: `{report['before']}` ({report['num_tasks_before']} task bank(s)); "
             f"{report['n_questions']} questions, {report['n_tokens']} tokens per module", "",
             "| after | banks | mean drift | mean top-1 changed | accuracy |", "|---|---|---|---|---|"]
    acc0 = report["accuracy_before"]
    for s in report["stages"]:
        acc = "n/a" if s["accuracy"] is None else f"{acc0:.3f} -> {s['accuracy']:.3f}"
        lines.append(f"| `{os.path.basename(s['ckpt'])}` | {s['num_tasks']} | {s['mean_drift']:.4f} | "
                     f"{s['mean_top1_changed']:.4f} | {acc} |")
    for s in report["stages"]:
        lines += ["", f"## after `{os.path.basename(s['ckpt'])}`: drift / top-1 changed", "",
                  "| layer | " + " | ".join(report["projections"]) + " |",
                  "|---" * (len(report["projections"]) + 1) + "|"]
        for i, (d_row, t_row) in zip(report["layers"], zip(s["drift_matrix"], s["top1_changed_matrix"])):
            cells = ["-" if d is None else f"{d:.3f} / {t:.3f}" for d, t in zip(d_row, t_row)]
            lines.append(f"| {i} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_outputs(report: Dict[str, Any], output_dir: str) -> None:
    from .plots import plot_drift_by_stage, plot_drift_heatmap

    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "drift.json"), "w") as f:
        json.dump(report, f, indent=1)
    with open(os.path.join(output_dir, "drift.md"), "w") as f:
        f.write(markdown(report))
    plot_drift_heatmap(report, os.path.join(output_dir, "drift_heatmap.png"))
    if len(report["stages"]) > 1:
        plot_drift_by_stage(report, os.path.join(output_dir, "drift_by_stage.png"))
