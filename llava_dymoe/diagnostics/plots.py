"""PNG figures of the routing diagnostics (matplotlib Agg, through ``llava_dymoe.eval.plots``' helpers)."""
from __future__ import annotations

import os
from typing import Any, Dict

import numpy as np

from ..eval.plots import _figure, _save


def plot_drift_heatmap(report: Dict[str, Any], path: str) -> str:
    """One layer x projection heatmap of the drift per later checkpoint (shared 0..1 colour scale)."""
    import matplotlib

    stages = report["stages"]
    layers, projs = report["layers"], report["projections"]
    fig = _figure(1.5 + 0.6 * len(projs) * len(stages), 1.4 + 0.35 * len(layers))
    cmap = matplotlib.colormaps["magma"].with_extremes(bad="lightgrey")
    image = None
    for k, stage in enumerate(stages):
        ax = fig.add_subplot(1, len(stages), k + 1)
        values = np.array([[np.nan if v is None else v for v in row] for row in stage["drift_matrix"]], float)
        image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto")
        ax.set_xticks(range(len(projs)))
        ax.set_xticklabels(projs, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(layers)))
        ax.set_yticklabels(layers, fontsize=7)
        ax.set_title(f"{os.path.basename(stage['ckpt'])}\nmean {stage['mean_drift']:.3f}", fontsize=8)
        if k == 0:
            ax.set_ylabel("decoder layer")
    fig.colorbar(image, ax=fig.axes, label="routing mass on experts added after A")
    return _save(fig, path)


def plot_delta_norm_heatmap(report: Dict[str, Any], path: str) -> str:
    """One layer x projection heatmap per later checkpoint of the new-bank delta norm relative to the base
    output, mean ||delta_new|| / mean ||W0 x|| (shared colour scale from 0)."""
    import matplotlib

    stages = report["stages"]
    layers, projs = report["layers"], report["projections"]
    grids = [np.array([[np.nan if v is None else v for v in row] for row in s["new_over_base_matrix"]], float)
             for s in stages]
    finite = [g[np.isfinite(g)] for g in grids]
    vmax = max([float(f.max()) for f in finite if f.size] + [0.0]) or 1.0
    fig = _figure(1.5 + 0.6 * len(projs) * len(stages), 1.4 + 0.35 * len(layers))
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="lightgrey")
    image = None
    for k, (stage, values) in enumerate(zip(stages, grids)):
        ax = fig.add_subplot(1, len(stages), k + 1)
        image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=0.0, vmax=vmax, aspect="auto")
        ax.set_xticks(range(len(projs)))
        ax.set_xticklabels(projs, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(layers)))
        ax.set_yticklabels(layers, fontsize=7)
        mean = stage.get("mean_new_over_base")
        ax.set_title(f"{os.path.basename(stage['ckpt'])}\nmean {'n/a' if mean is None else f'{mean:.3g}'}",
                     fontsize=8)
        if k == 0:
            ax.set_ylabel("decoder layer")
    fig.colorbar(image, ax=fig.axes, label="||new-bank delta|| / ||W0 x|| (token means)")
    return _save(fig, path)


def plot_drift_by_stage(report: Dict[str, Any], path: str) -> str:
    """Mean drift and mean top-1 change (and accuracy when known) against the later checkpoints."""
    stages = report["stages"]
    names = [os.path.basename(s["ckpt"]) for s in stages]
    fig = _figure(1.5 + 0.9 * len(stages), 3.2)
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(stages))
    ax.plot(x, [s["mean_drift"] for s in stages], marker="o", label="mean drift")
    ax.plot(x, [s["mean_top1_changed"] for s in stages], marker="s", label="mean top-1 changed")
    if all(s["accuracy"] is not None for s in stages):
        ax.plot(x, [s["accuracy"] for s in stages], marker="^", label="accuracy")
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0.0, 1.05)
    ax.set_xlabel("later checkpoint")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_d_rel_hist(report: Dict[str, Any], path: str) -> str:
    """D_rel histogram over all modules (tau marked) and the per-layer token-type fractions."""
    hist = report["d_rel_hist"]
    counts = np.array(hist["counts"], float)
    lo, hi = hist["range"]
    edges = np.linspace(lo, hi, hist["bins"] + 1)
    fig = _figure(9.0, 3.2)
    ax = fig.add_subplot(1, 2, 1)
    ax.bar(edges[:-1], counts, width=edges[1] - edges[0], align="edge", color="tab:blue")
    ax.axvline(report["tau"], color="red", linestyle="--", label=f"tau = {report['tau']}")
    ax.set_xlabel("D_rel")
    ax.set_ylabel("tokens x modules")
    ax.legend(fontsize=8)
    ax2 = fig.add_subplot(1, 2, 2)
    layers = list(report["per_layer"])
    bottom = np.zeros(len(layers))
    for key, colour in (("frac_new", "tab:green"), ("frac_old", "tab:grey"), ("frac_ambiguous", "tab:orange")):
        vals = np.array([report["per_layer"][i][key] for i in layers], float)
        ax2.bar([str(i) for i in layers], vals, bottom=bottom, color=colour, label=key[5:])
        bottom += vals
    ax2.set_xlabel("decoder layer")
    ax2.set_ylabel("token fraction")
    ax2.legend(fontsize=8)
    return _save(fig, path)
