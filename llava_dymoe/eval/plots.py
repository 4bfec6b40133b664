"""PNG figures for run reports: the accuracy-matrix heatmap and the method comparison bars.

matplotlib is imported lazily inside each function and drawn through its object API with
the Agg canvas, so importing this module costs nothing, never touches pyplot's global
state and works without a display.  Install it with ``pip install llava-dymoe[plots]``.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from llava_dymoe.eval.matrix import AccuracyMatrix


def _figure(width: float, height: float):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("plots need matplotlib: pip install 'llava-dymoe[plots]' (or pip install matplotlib)") from e
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, format="png", bbox_inches="tight")
    return path


def plot_matrix(matrix: AccuracyMatrix, path: str, title: Optional[str] = None) -> str:
    """Heatmap of ``R[t, i]`` (percent) with values annotated; unevaluated cells are grey and blank."""
    values = np.array(matrix.values, dtype=float)
    n_stages, n_tasks = values.shape
    fig = _figure(1.2 + 0.9 * n_tasks, 1.0 + 0.6 * max(n_stages, 1))
    import matplotlib

    ax = fig.add_subplot(1, 1, 1)
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="lightgrey")
    finite = values[~np.isnan(values)]
    vmax = max(100.0, float(finite.max())) if finite.size else 100.0
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=0.0, vmax=vmax, aspect="auto")
    for t in range(n_stages):
        for i in range(n_tasks):
            v = values[t, i]
            if not np.isnan(v):
                colour = "black" if v > 0.6 * vmax else "white"
                ax.text(i, t, f"{v:.1f}", ha="center", va="center", fontsize=8, color=colour)
    ax.set_xticks(range(n_tasks))
    ax.set_xticklabels(matrix.tasks, rotation=45, ha="right")
    ax.set_yticks(range(n_stages))
    ax.set_yticklabels(matrix.stages)
    ax.set_xlabel("evaluated task")
    ax.set_ylabel("after training stage")
    if title:
        ax.set_title(title)
    fig.colorbar(image, ax=ax, label="score (%)")
    return _save(fig, path)


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else float("nan")


def plot_comparison(rows: Sequence[Dict[str, Any]], path: str,
                    metrics: Sequence[str] = ("mfn", "maa", "bwt"), title: Optional[str] = None) -> str:
    """Grouped bars: one group per metric, one bar per run (``rows``: ``{"name", "metrics"}``).

    A metric a run does not have (NaN / missing) is left out of its group.
    """
    names: List[str] = [r["name"] for r in rows]
    fig = _figure(1.5 + 0.6 * len(metrics) * max(1, len(names)), 3.5)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / max(1, len(names))
    x = np.arange(len(metrics))
    for k, row in enumerate(rows):
        heights = [_number(row["metrics"].get(m)) for m in metrics]
        bars = ax.bar(x + (k - (len(names) - 1) / 2) * width, np.nan_to_num(heights), width, label=row["name"])
        for bar, h in zip(bars, heights):
            if not np.isnan(h):
                ax.annotate(f"{h:.1f}", (bar.get_x() + bar.get_width() / 2, h), ha="center",
                            va="bottom" if h >= 0 else "top", fontsize=7)
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xticks(x)
    ax.set_xticklabels([m.upper() for m in metrics])
    ax.set_ylabel("percent")
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return _save(fig, path)
