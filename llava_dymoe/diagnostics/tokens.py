"""Token types of a new task's training data against a checkpoint's experts (what TAG would see).

Definition: every bank of the checkpoint is "old"; a fresh bank is added to every DyMoE module exactly
as the next task's ``prepare_model`` would (``add_task`` under the seed ``seed * 1009 + task_id`` with
``task_id = num_tasks + 1``, i.e. the next task's initial routers for ``--seed seed``) and is the "new"
group.  For each valid token of each training sample, per module, on the raw router logits:
``c_old``/``c_new`` (group maxima), ``D_rel`` and the type at ``tau`` (method.md §2): new, old or
ambiguous.  This is the partition TAG applies at the first step of the next task (afterwards the new
router moves).  Eval mode, fp32, CPU; counts are also split by token kind (image / instruction / answer).
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional

import torch

from ..core import RoutingStats, dymoe_layers
from ..core.stats import KIND_NAMES, TYPE_NAMES
from ..integration.inject import add_task
from .probe import Probe, module_position

BINS = 40


def _per_layer(summary: Dict[str, Dict[str, Any]]) -> Dict[int, Dict[str, float]]:
    """Mean over the projections of each decoder layer of the type fractions and mean D_rel."""
    keys = ("frac_new", "frac_old", "frac_ambiguous", "mean_d_rel")
    grouped: Dict[int, list] = {}
    for name, row in summary.items():
        grouped.setdefault(module_position(name)[0], []).append(row)
    return {i: {k: sum(r[k] for r in rows) / len(rows) for k in keys} for i, rows in sorted(grouped.items())}


def run_tokens(ckpt: str, data: str, image_folder: str, model_base: str, output_dir: str, tau: float = 0.2,
               seed: int = 0, max_samples: Optional[int] = None) -> Dict[str, Any]:
    """Compute the report and write ``tokens.json``, ``tokens.md`` and ``d_rel_hist.png``; returns it."""
    with open(data) as f:
        samples = json.load(f)
    if not isinstance(samples, list) or not samples:
        raise ValueError(f"{data}: expected a non-empty LLaVA training JSON list")
    samples = samples[:max_samples] if max_samples else samples
    probe = Probe(ckpt, model_base)
    task_id = probe.num_tasks + 1
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed) * 1009 + task_id)
        add_task(probe.model)
    for _, layer in dymoe_layers(probe.model):
        layer.eval()
    stats = RoutingStats(tau=tau, d_rel_bins=BINS)
    for i, sample in enumerate(samples):
        if "image" not in sample or "conversations" not in sample:
            raise ValueError(f"{data} sample {i}: needs 'image' and 'conversations' (image samples only)")
        ids, labels = probe.conversation_ids(sample["conversations"])
        pixels, _ = probe.image(image_folder, sample["image"])
        probe.route(stats, ids, pixels, labels)
    summary = stats.summary()
    hist = torch.zeros(BINS, dtype=torch.long)
    for row in summary.values():
        hist += torch.tensor(row["d_rel_hist"])
    kinds = {}
    for kind in KIND_NAMES:
        rows = [r["by_kind"][kind] for r in summary.values() if kind in r.get("by_kind", {})]
        if rows:
            kinds[kind] = {f"frac_{t}": sum(r[f"frac_{t}"] for r in rows) / len(rows) for t in TYPE_NAMES}
            kinds[kind]["n_tokens"] = rows[0]["n_tokens"]
    report = {"ckpt": os.path.abspath(ckpt), "data": os.path.abspath(data), "tau": tau, "seed": seed,
              "num_old_tasks": probe.num_tasks, "fresh_bank_task_id": task_id, "n_samples": len(samples),
              "n_tokens": next(iter(summary.values()))["n_tokens"], "definition": __doc__.split("\n\n")[1],
              "mean": stats.layer_mean(("frac_new", "frac_old", "frac_ambiguous", "mean_d_rel")),
              "by_kind": kinds, "per_layer": _per_layer(summary),
              "d_rel_hist": {"bins": BINS, "range": [0.0, 2.0], "counts": hist.tolist()}, "modules": summary}
    _write(report, output_dir)
    return report


def _write(report: Dict[str, Any], output_dir: str) -> None:
    from .plots import plot_d_rel_hist

    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "tokens.json"), "w") as f:
        json.dump(report, f, indent=1)
    m = report["mean"]
    lines = ["# Token types of the new task's data", "",
             f"checkpoint `{report['ckpt']}` ({report['num_old_tasks']} old bank(s)) + a fresh bank seeded as task "
             f"{report['fresh_bank_task_id']} would be; tau = {report['tau']}; {report['n_samples']} samples", "",
             "| layer | new | old | ambiguous | mean D_rel |", "|---|---|---|---|---|"]
    for i, r in report["per_layer"].items():
        lines.append(f"| {i} | {r['frac_new']:.3f} | {r['frac_old']:.3f} | {r['frac_ambiguous']:.3f} | "
                     f"{r['mean_d_rel']:.3f} |")
    lines.append(f"| all | {m['frac_new']:.3f} | {m['frac_old']:.3f} | {m['frac_ambiguous']:.3f} | "
                 f"{m['mean_d_rel']:.3f} |")
    lines += ["", "| token kind | tokens | new | old | ambiguous |", "|---|---|---|---|---|"]
    for kind, r in report["by_kind"].items():
        lines.append(f"| {kind} | {r['n_tokens']} | {r['frac_new']:.3f} | {r['frac_old']:.3f} | "
                     f"{r['frac_ambiguous']:.3f} |")
    with open(os.path.join(output_dir, "tokens.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    plot_d_rel_hist(report, os.path.join(output_dir, "d_rel_hist.png"))
