"""Routing diagnostics for the results doc: why DyMoE does (or does not) reduce forgetting.

For IncMoELoRA and DyMoE at every width of the plan (seed 0 of each), ``cli drift`` measures the
second task's inputs (``read``, the first task whose answers are learned by every method) from
its own checkpoint (stage 2) to every later stage: routing mass drifted to the later experts,
the output those experts add (relative to ``W0 x``) and the KL of the answer logits.  One row per
(run, later stage) in the doc.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any, Dict, List, Sequence

from llava_dymoe.protocol.layout import checkpoint_task

from .execute import run_dir
from .plan import Experiment

TASK_INDEX = 2  # the old task whose tokens are followed (1-based stage number)
MAX_QUESTIONS = 20


def _checkpoints(folder: str) -> List[str]:
    root = os.path.join(folder, "checkpoints")
    if not os.path.isdir(root):
        return []
    return [os.path.join(root, d) for d in sorted(os.listdir(root), key=lambda d: int(d.split("_", 1)[0]))]


def run_logged(cmd: Sequence[str], log_path: str) -> bool:
    """Run a diagnostic command on one thread, its output into ``log_path``; whether it succeeded."""
    with open(log_path, "w") as f:
        return subprocess.call(list(cmd), stdout=f, stderr=subprocess.STDOUT,
                               env=dict(os.environ, OMP_NUM_THREADS="1")) == 0


def drift_targets(root: str, plan: Sequence[Experiment]) -> List[Experiment]:
    """IncMoELoRA, DyMoE and the first round's recipe with no extra flags, in the suite's own task order."""
    from .plan import best_variant

    wanted = ("incmoelora", "dymoe", best_variant())
    return [e for e in plan if e.method in wanted and not e.dymoe_args and e.order == "default"]


def run_drift(root: str, plan: Sequence[Experiment], bases, suite, log=print) -> Dict[str, str]:
    """``{experiment key: drift.json path}`` for the seed-0 runs that finished; cached per run."""
    from llava_dymoe.synthetic.writer import IMAGE_ROOT, TaskFiles

    done: Dict[str, str] = {}
    seen = set()
    for exp in drift_targets(root, plan):
        if exp.key in seen:
            continue
        seen.add(exp.key)
        folder = run_dir(root, exp, 0)
        ckpts = _checkpoints(folder)
        out = os.path.join(folder, "drift")
        target = os.path.join(out, "drift.json")
        if len(ckpts) < TASK_INDEX + 1:
            continue
        if not os.path.isfile(target):
            task = checkpoint_task(ckpts[TASK_INDEX - 1])
            files = TaskFiles.for_task(task)
            cmd = [sys.executable, "-m", "llava_dymoe.cli", "drift", "--before", ckpts[TASK_INDEX - 1],
                   "--questions", os.path.join(suite.root, files.question_file), "--references",
                   os.path.join(suite.root, files.reference_file), "--image-folder",
                   os.path.join(suite.root, IMAGE_ROOT), "--model-base", bases[exp.width].llm, "--output-dir", out,
                   "--max-questions", str(MAX_QUESTIONS)]
            for c in ckpts[TASK_INDEX:]:
                cmd += ["--after", c]
            log(f"drift diagnostics: {exp.key} seed 0 ({task} tokens)")
            if not run_logged(cmd, out + ".log"):
                log(f"drift diagnostics failed for {exp.key}: see {out}.log")
                continue
        done[exp.key] = target
    return done


def drift_rows(root: str, plan: Sequence[Experiment]) -> List[Dict[str, Any]]:
    rows = []
    for exp in drift_targets(root, plan):
        path = os.path.join(run_dir(root, exp, 0), "drift", "drift.json")
        if not os.path.isfile(path) or any(r["key"] == exp.key for r in rows):
            continue
        report = json.load(open(path))
        task = checkpoint_task(str(report.get("before") or ""))
        for k, stage in enumerate(report.get("stages", []), start=TASK_INDEX + 1):
            kl = stage.get("answer_logits") or {}
            rows.append({"key": exp.key, "method": exp.method, "width": exp.width, "stage": k, "task": task,
                         "drift": stage.get("mean_drift"), "top1": stage.get("mean_top1_changed"),
                         "new_over_base": stage.get("median_new_over_base"),
                         "new_over_old": stage.get("median_new_over_old"),
                         "kl": kl.get("answer_kl"), "argmax": kl.get("argmax_changed"),
                         "acc": stage.get("accuracy")})
    return rows


def drift_markdown(rows: Sequence[Dict[str, Any]]) -> str:
    if not rows:
        return ""

    def f(v, spec=".3f"):
        return "–" if v is None else format(v, spec)

    tasks = sorted({r["task"] for r in rows if r.get("task")})
    which = f"(`{'`, `'.join(tasks)}`)" if tasks else ""
    out = [f"Seed 0, the second task's test inputs {which} ({MAX_QUESTIONS} questions) from its own checkpoint "
           f"(stage {TASK_INDEX}) to each later stage (`cli drift`): routing mass on later experts, tokens whose top-1 "
           "expert changed, median over projections of the later experts' output relative to the old banks' "
           "and to `W0 x`, and the answer-logit KL with the share of answer tokens whose argmax changed.\n",
           "| run | d | stage | drift mass | top-1 changed | new/old output | new/W0x output | answer KL | "
           "argmax changed |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['method']} | {r['width']} | {r['stage']} | {f(r['drift'])} | {f(r['top1'])} | "
                   f"{f(r['new_over_old'], '.3g')} | {f(r['new_over_base'], '.3g')} | {f(r['kl'], '.3g')} | "
                   f"{f(r['argmax'])} |")
    return "\n".join(out) + "\n"
