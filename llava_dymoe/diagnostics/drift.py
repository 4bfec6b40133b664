"""Routing drift of old-task inputs between a checkpoint A and later checkpoints B1, B2, ...

For each DyMoE module (decoder layer x projection), on the valid tokens of the same inputs:

* ``drift``: the share of B's routing mass (sum of gate weights) that goes to the experts added after A,
  i.e. to banks ``t{n_A} ...`` (0 when B has no bank beyond A's);
* ``top1_changed``: the fraction of tokens whose top-1 expert under B differs from the one under A
  (expert indices are comparable because banks are only ever appended);
* ``new_delta_norm`` / ``old_delta_norm`` / ``base_norm`` and ``new_over_old`` / ``new_over_base``: the mean
  per-token L2 norm of the output contribution of the banks added after A (and of A's banks, and of
  ``W0 x``) under B's gate, on the same tokens (``output_drift.py``);
* optionally the exact-match accuracy of A and of each B on the inputs (greedy answers, ``exact``) and,
  teacher forced on the questions with their reference answers, the mean ``KL(p_A || p_B)`` of the
  answer-token distributions and the fraction of answer tokens whose argmax changed (``output_drift.py``).

Both models run in eval mode (no TAG), fp32 on CPU, one sample per forward.  Note (pilot-drift.md):
drift mass is not forgetting by itself; read it next to the accuracies.
"""
from __future__ import annotations

import contextlib
import json
import os
from typing import Any, Dict, List, Optional, Sequence

import torch

from ..core import RoutingStats
from .output_drift import DeltaNorms, answer_logits, compare_answers
from .probe import Probe, module_position, read_questions

#: Output-level keys of a module (``DeltaNorms.summary``) averaged into a stage's ``mean_<key>``.
DELTA_KEYS = ("new_delta_norm", "old_delta_norm", "base_norm", "new_over_old", "new_over_base")


def _collect(probe: Probe, rows, image_folder: str, refs: Optional[Dict[str, Any]], max_new_tokens: int,
             norms: Optional[DeltaNorms] = None):
    stats = RoutingStats(keep_top1=True)
    answers = {}
    for row, ids, pixels, size in probe.questions(rows, image_folder):
        with norms.attached(probe.model) if norms is not None else contextlib.nullcontext():
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


def _mean(values) -> Optional[float]:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def _median(values) -> Optional[float]:
    vals = sorted(v for v in values if v is not None)
    if not vals:
        return None
    h = len(vals) // 2
    return vals[h] if len(vals) % 2 else (vals[h - 1] + vals[h]) / 2


def _matrix(per_module: Dict[str, Dict[str, Any]], key: str, layers: List[int], projs: List[str]):
    cell = {(m["layer"], m["projection"]): m[key] for m in per_module.values()}
    return [[cell.get((i, p)) for p in projs] for i in layers]


def run_drift(before: str, after: Sequence[str], questions: str, image_folder: str, model_base: str,
              output_dir: str, references: Optional[str] = None, max_questions: Optional[int] = None,
              max_new_tokens: int = 16) -> Dict[str, Any]:
    """Compute the drift report and write ``drift.json``, ``drift.md``, ``drift_heatmap.png``,
    ``delta_norm_heatmap.png`` (and ``drift_by_stage.png`` for more than one later checkpoint) into
    ``output_dir``; returns the report.  ``references`` also turns on the answer-logit KL."""
    if not after:
        raise ValueError("give at least one --after checkpoint")
    rows = read_questions(questions, max_questions)
    refs = _read_refs(references, rows)
    probe = Probe(before, model_base)
    n_before = probe.num_tasks
    base_stats, base_answers = _collect(probe, rows, image_folder, refs, max_new_tokens)
    base_logits = answer_logits(probe, rows, image_folder, refs) if refs is not None else None
    del probe
    stages = []
    for path in after:
        probe = Probe(path, model_base)
        norms = DeltaNorms(n_before)
        stats, answers = _collect(probe, rows, image_folder, refs, max_new_tokens, norms)
        per_module = compare(base_stats, stats, n_before)
        for name, row in norms.summary().items():
            per_module[name].update({k: row[k] for k in DELTA_KEYS})
        n = len(per_module)
        stage = {"ckpt": os.path.abspath(path), "num_tasks": probe.num_tasks,
                 "mean_drift": sum(m["drift"] for m in per_module.values()) / n,
                 "mean_top1_changed": sum(m["top1_changed"] for m in per_module.values()) / n,
                 **{f"mean_{k}": _mean(m.get(k) for m in per_module.values()) for k in DELTA_KEYS},
                 **{f"median_{k}": _median(m.get(k) for m in per_module.values()) for k in DELTA_KEYS[3:]},
                 "accuracy": _accuracy(answers, refs),
                 "answer_logits": (compare_answers(base_logits, answer_logits(probe, rows, image_folder, refs))
                             if refs is not None else None),
                 "modules": per_module}
        stages.append(stage)
        del probe
    layers = sorted({m["layer"] for m in stages[0]["modules"].values()})
    projs = list(dict.fromkeys(m["projection"] for m in stages[0]["modules"].values()))
    for s in stages:
        for key in ("drift", "top1_changed", "new_delta_norm", "new_over_base"):
            s[f"{key}_matrix"] = _matrix(s["modules"], key, layers, projs)
    report = {"before": os.path.abspath(before), "num_tasks_before": n_before, "questions": os.path.abspath(questions),
              "n_questions": len(rows), "n_tokens": int(next(iter(base_stats.layers.values())).n_tokens),
              "accuracy_before": _accuracy(base_answers, refs), "scorer": "exact" if refs else None,
              "layers": layers, "projections": projs, "stages": stages}
    write_outputs(report, output_dir)
    return report


def _fmt(v: Optional[float], spec: str = ".4f") -> str:
    return "n/a" if v is None else format(v, spec)


def markdown(report: Dict[str, Any]) -> str:
    """The report as Markdown: a summary table over stages, then layer x projection tables per stage."""
    lines = ["# Routing drift of old-task inputs", "",
             f"before: `{report['before']}` ({report['num_tasks_before']} task bank(s)); "
             f"{report['n_questions']} questions, {report['n_tokens']} tokens per module", "",
             "Output level: ‖d_new‖ = mean per-token L2 norm of the output of the banks added after `before` "
             "(under the later gate), mean over modules; d_new/d_old and d_new/W0x divide it by the same mean "
             "for the earlier banks and for the base output W0x, per module, median over modules. Answer KL = "
             "mean over the reference-answer tokens (teacher forced) of KL(p_before || p_after).", "",
             "| after | banks | mean drift | mean top-1 changed | mean ‖d_new‖ | d_new/d_old | d_new/W0x | "
             "answer KL | argmax changed | accuracy |", "|---" * 10 + "|"]
    acc0 = report["accuracy_before"]
    for s in report["stages"]:
        acc = "n/a" if s["accuracy"] is None else f"{acc0:.3f} -> {s['accuracy']:.3f}"
        kl = s.get("answer_logits") or {}
        lines.append(f"| `{os.path.basename(s['ckpt'])}` | {s['num_tasks']} | {s['mean_drift']:.4f} | "
                     f"{s['mean_top1_changed']:.4f} | {_fmt(s['mean_new_delta_norm'], '.4g')} | "
                     f"{_fmt(s['median_new_over_old'])} | {_fmt(s['median_new_over_base'])} | "
                     f"{_fmt(kl.get('answer_kl'), '.4g')} | {_fmt(kl.get('argmax_changed'))} | {acc} |")
    header = ["| layer | " + " | ".join(report["projections"]) + " |", "|---" * (len(report["projections"]) + 1) + "|"]
    for s in report["stages"]:
        name = os.path.basename(s["ckpt"])
        lines += ["", f"## after `{name}`: drift / top-1 changed", "", *header]
        for i, (d_row, t_row) in zip(report["layers"], zip(s["drift_matrix"], s["top1_changed_matrix"])):
            cells = ["-" if d is None else f"{d:.3f} / {t:.3f}" for d, t in zip(d_row, t_row)]
            lines.append(f"| {i} | " + " | ".join(cells) + " |")
        lines += ["", f"## after `{name}`: new-bank delta ‖d_new‖ / (d_new/W0x)", "", *header]
        for i, (n_row, r_row) in zip(report["layers"], zip(s["new_delta_norm_matrix"], s["new_over_base_matrix"])):
            cells = ["-" if v is None else f"{v:.4g} / {_fmt(r)}" for v, r in zip(n_row, r_row)]
            lines.append(f"| {i} | " + " | ".join(cells) + " |")
        kl = s.get("answer_logits")
        if kl is not None:
            lines += ["", f"## after `{name}`: answer logits (teacher forced, {kl['n_answer_tokens']} answer tokens)",
                      "", "| KL(before ‖ after) | argmax changed | token acc before | token acc after |",
                      "|---|---|---|---|",
                      f"| {kl['answer_kl']:.6g} | {kl['argmax_changed']:.4f} | {kl['token_acc_before']:.4f} | "
                      f"{kl['token_acc_after']:.4f} |"]
    return "\n".join(lines) + "\n"


def write_outputs(report: Dict[str, Any], output_dir: str) -> None:
    from .plots import plot_delta_norm_heatmap, plot_drift_by_stage, plot_drift_heatmap

    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "drift.json"), "w") as f:
        json.dump(report, f, indent=1)
    with open(os.path.join(output_dir, "drift.md"), "w") as f:
        f.write(markdown(report))
    plot_drift_heatmap(report, os.path.join(output_dir, "drift_heatmap.png"))
    plot_delta_norm_heatmap(report, os.path.join(output_dir, "delta_norm_heatmap.png"))
    if len(report["stages"]) > 1:
        plot_drift_by_stage(report, os.path.join(output_dir, "drift_by_stage.png"))
