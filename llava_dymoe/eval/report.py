"""Run reports: Markdown tables, ``metrics.json``, ``report.md`` and the comparison of runs.

A run's output folder holds ``matrix.csv`` (the source of truth), and optionally
``metrics.json`` (written by :func:`write_metrics_json`) and ``run.json`` with
``{"method": ...}`` naming the run; without it the folder name is used.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, Dict, List, Optional, Sequence

from llava_dymoe.eval import metrics as M
from llava_dymoe.eval.io import write_json
from llava_dymoe.eval.matrix import AccuracyMatrix

METRIC_NAMES = ("mfn", "maa", "bwt", "forgetting", "mft")
METRIC_LABELS = {"mfn": "MFN", "maa": "MAA", "bwt": "BWT", "forgetting": "Forgetting", "mft": "MFT"}
EMPTY = "–"


def fmt(value: Any, digits: int = 2) -> str:
    """A score as text with ``digits`` decimals; missing / NaN as an en dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return EMPTY
    return f"{float(value):.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def matrix_markdown(matrix: AccuracyMatrix, digits: int = 2) -> str:
    """The accuracy matrix as a Markdown table (rows = stages, columns = tasks)."""
    rows = [[stage, *(fmt(v, digits) for v in matrix.values[t])] for t, stage in enumerate(matrix.stages)]
    return _table(["stage", *matrix.tasks], rows)


def metrics_markdown(summary: Dict[str, Any], digits: int = 2) -> str:
    """One-row Markdown table of MFN, MAA, BWT, forgetting and MFT."""
    return _table([METRIC_LABELS[m] for m in METRIC_NAMES], [[fmt(summary.get(m), digits) for m in METRIC_NAMES]])


def safe_summary(matrix: AccuracyMatrix) -> Dict[str, Any]:
    """:func:`metrics.summary`, or ``{"error": reason}`` when the matrix cannot be summarised yet."""
    try:
        return M.summary(matrix)
    except ValueError as e:
        return {"error": str(e), "tasks": list(matrix.tasks), "stages": list(matrix.stages)}


def write_metrics_json(matrix: AccuracyMatrix, path: str) -> Dict[str, Any]:
    """Write :func:`metrics.summary` of ``matrix`` to ``path`` (raises if it cannot be computed)."""
    summary = M.summary(matrix)
    write_json(path, summary)
    return summary


def write_run_report(matrix: AccuracyMatrix, out_dir: str, *, title: Optional[str] = None,
                     plot: bool = True, digits: int = 2) -> Dict[str, Optional[str]]:
    """Write ``out_dir/report.md`` (matrix table + metrics) and, if ``plot``, ``out_dir/matrix.png``.

    Returns ``{"report": path, "plot": path or None}``.  An incomplete matrix still gets a
    report; its metrics section then says which cell is missing.
    """
    os.makedirs(out_dir, exist_ok=True)
    title = title or os.path.basename(os.path.abspath(out_dir))
    summary = safe_summary(matrix)
    parts = [f"# {title}", "", "## Accuracy matrix (%)", "",
             "Row = after training stage, column = evaluated task; " + EMPTY + " = not evaluated.", "",
             matrix_markdown(matrix, digits), "", "## Metrics", ""]
    if "error" in summary:
        parts.append(f"Metrics not available yet: {summary['error']}")
    else:
        parts.append(metrics_markdown(summary, digits))
    png = None
    if plot:
        from llava_dymoe.eval.plots import plot_matrix

        png = plot_matrix(matrix, os.path.join(out_dir, "matrix.png"), title=title)
        parts += ["", "![accuracy matrix](matrix.png)"]
    report = os.path.join(out_dir, "report.md")
    with open(report, "w", encoding="utf-8") as f:
        f.write("\n".join(parts) + "\n")
    return {"report": report, "plot": png}


# ----------------------------------------------------------------------------- comparison
def load_run(out_dir: str) -> Dict[str, Any]:
    """``{"name", "dir", "matrix" (or None), "metrics"}`` for one run output folder."""
    if not os.path.isdir(out_dir):
        raise FileNotFoundError(f"{out_dir}: not a directory (expected a run output folder with matrix.csv)")
    name = os.path.basename(os.path.abspath(out_dir))
    run_json = os.path.join(out_dir, "run.json")
    if os.path.isfile(run_json):
        with open(run_json, encoding="utf-8") as f:
            try:
                meta = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{run_json}: not valid JSON (line {e.lineno}: {e.msg})") from None
        if isinstance(meta, dict) and meta.get("method"):
            from llava_dymoe.methods import report_name

            name = report_name(str(meta["method"]))
    csv_path, metrics_path = os.path.join(out_dir, "matrix.csv"), os.path.join(out_dir, "metrics.json")
    if os.path.isfile(csv_path):
        matrix = AccuracyMatrix.from_csv(csv_path)
        summary = safe_summary(matrix)
    elif os.path.isfile(metrics_path):
        matrix = None
        with open(metrics_path, encoding="utf-8") as f:
            summary = json.load(f)
    else:
        raise FileNotFoundError(f"{out_dir}: neither matrix.csv nor metrics.json found; is this a run output folder?")
    return {"name": name, "dir": out_dir, "matrix": matrix, "metrics": summary}


def _unique_names(runs: List[Dict[str, Any]]) -> None:
    names = [r["name"] for r in runs]
    for r in runs:
        if names.count(r["name"]) > 1:
            r["name"] = f"{r['name']} ({os.path.basename(os.path.abspath(r['dir']))})"


def _progress(run: Dict[str, Any]) -> str:
    m, summary = run["matrix"], run["metrics"]
    if m is not None:
        return f"{len(m.stages)}/{len(m.tasks)}"
    if isinstance(summary.get("stages"), list) and isinstance(summary.get("tasks"), list):
        return f"{len(summary['stages'])}/{len(summary['tasks'])}"
    return EMPTY


def comparison_markdown(runs: Sequence[Dict[str, Any]], digits: int = 2) -> str:
    """Markdown: metrics side by side (one row per run), then each run's final matrix row."""
    metric_rows = [[r["name"], _progress(r), *(fmt(r["metrics"].get(m), digits) for m in METRIC_NAMES)]
                   for r in runs]
    parts = ["# Run comparison", "", "## Metrics (%)", "",
             "`stages` = finished training stages / tasks; a partial run is summarised over the tasks seen so far.",
             "", _table(["method", "stages", *(METRIC_LABELS[m] for m in METRIC_NAMES)], metric_rows)]
    notes = [f"- {r['name']}: {r['metrics']['error']}" for r in runs if "error" in r["metrics"]]
    if notes:
        parts += ["", "Metrics not available:", *notes]
    tasks: List[str] = []
    for r in runs:
        for t in (r["matrix"].tasks if r["matrix"] is not None else []):
            if t not in tasks:
                tasks.append(t)
    if tasks:
        rows = []
        for r in runs:
            m = r["matrix"]
            if m is None or not m.stages:
                rows.append([r["name"], EMPTY, *([EMPTY] * len(tasks))])
                continue
            last = {t: m.values[-1, i] for i, t in enumerate(m.tasks)}
            rows.append([r["name"], m.stages[-1], *(fmt(last.get(t), digits) for t in tasks)])
        parts += ["", "## Final row (%)", "", _table(["method", "last stage", *tasks], rows)]
    return "\n".join(parts) + "\n"


def write_comparison_report(out_dirs: Sequence[str], output_dir: str = ".", *,
                            plot: bool = True, digits: int = 2) -> Dict[str, Any]:
    """Compare runs: write ``output_dir/report.md`` and ``output_dir/comparison.png``.

    Returns ``{"markdown": text, "report": path, "plot": path or None}``.
    """
    if not out_dirs:
        raise ValueError("give at least one run output folder to compare")
    for d in out_dirs:
        if os.path.abspath(d) == os.path.abspath(output_dir):
            raise ValueError(f"--output-dir {output_dir} is one of the compared runs; its report.md would be "
                             "overwritten, so choose another output folder")
    runs = [load_run(d) for d in out_dirs]
    _unique_names(runs)
    text = comparison_markdown(runs, digits)
    png = None
    if plot:
        from llava_dymoe.eval.plots import plot_comparison

        png = plot_comparison(runs, os.path.join(output_dir, "comparison.png"), title="MFN / MAA / BWT")
        text += "\n![comparison](comparison.png)\n"
    os.makedirs(output_dir, exist_ok=True)
    report = os.path.join(output_dir, "report.md")
    with open(report, "w", encoding="utf-8") as f:
        f.write(text)
    return {"markdown": text, "report": report, "plot": png}
