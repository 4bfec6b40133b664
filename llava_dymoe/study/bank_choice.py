"""Which cue picks the bank (``cli bank-choice``) on the study's final checkpoints, for the results doc.

For the paper's ``dymoe``, the first round's recipe and ``dymoe_seqbank`` at the default width, in every task order
of the plan and for every seed that finished, the last stage's checkpoint is probed with each task's test
questions as asked, with one shared text instead of the question (``image_only``) and with the next task's
question texts (``swapped``); cached per run in ``<run>/bank_choice/``.  The doc gets the own-bank share per
task and condition, mean ± std over seeds.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any, Dict, List, Sequence

from llava_dymoe.protocol.layout import checkpoint_task

from .diagnose import _checkpoints, run_logged
from .execute import run_dir
from .numbers import fmt_ms, mean_std
from .plan import DEFAULT_WIDTH, HARDER_GROUPS, SEQUENCE_BANK, Experiment, best_variant

MAX_QUESTIONS = 40
#: In the harder suite's study every method that decides one bank per sequence is probed (issue 26: the selectors'
#: bank-choice accuracy per task), and the paper's dymoe as the token-level reference.
HARDER_SELECTORS = ("dymoe", "dymoe_seqbank", "key_selector", "anchored_keys", "hide_selector", "prism_selector",
                    "oracle_bank")
FOLDER = "bank_choice"


def targets(plan: Sequence[Experiment]) -> List[Experiment]:
    """``dymoe``, the first round's recipe and ``dymoe_seqbank`` (its flags on that recipe), default width, any
    order; one experiment per key."""
    out, seen = [], set()
    for e in plan:
        wanted = (e.method == "dymoe" and not e.dymoe_args) or (
            e.method == best_variant() and e.dymoe_args in ((), SEQUENCE_BANK)) or (
            e.group in HARDER_GROUPS and e.method in HARDER_SELECTORS)
        if wanted and e.width == DEFAULT_WIDTH and e.key not in seen:
            seen.add(e.key)
            out.append(e)
    return out


def label(e: Experiment) -> str:
    if e.group in HARDER_GROUPS:
        return e.method if e.order == "default" else f"{e.method}, {e.order} order"
    name = "dymoe_seqbank" if e.dymoe_args == SEQUENCE_BANK else (e.method if e.method == "dymoe" else
                                                                 f"{e.method} (first round)")
    return name if e.order == "default" else f"{name}, {e.order} order"


def run_bank_choice(root: str, plan: Sequence[Experiment], bases, suite, seeds: Sequence[int],
                    log=print) -> Dict[str, str]:
    """``{run folder: bank_choice.json}`` for the runs of :func:`targets` that finished every task of ``suite``;
    cached per run."""
    from llava_dymoe.synthetic.writer import IMAGE_ROOT, TaskFiles

    done = {}
    for exp in targets(plan):
        for seed in seeds:
            folder = run_dir(root, exp, seed)
            ckpts = _checkpoints(folder)
            if not os.path.isfile(os.path.join(folder, "matrix.csv")) or len(ckpts) < len(suite.task_names):
                continue
            ckpt, tasks = ckpts[-1], [checkpoint_task(c) for c in ckpts]
            out = os.path.join(folder, FOLDER)
            target = os.path.join(out, "bank_choice.json")
            if not os.path.isfile(target):
                cmd = [sys.executable, "-m", "llava_dymoe.cli", "bank-choice", "--ckpt", ckpt, "--model-base",
                       bases[exp.width].llm, "--image-folder", os.path.join(suite.root, IMAGE_ROOT),
                       "--max-questions", str(MAX_QUESTIONS), "--output-dir", out]
                for t in tasks:
                    cmd += ["--task", f"{t}={os.path.join(suite.root, TaskFiles.for_task(t).question_file)}"]
                log(f"bank choice: {exp.key} seed {seed}")
                if not run_logged(cmd, out + ".log"):
                    log(f"bank choice failed for {exp.key} seed {seed}: see {out}.log")
                    continue
            done[folder] = target
    return done


def rows(root: str, plan: Sequence[Experiment], seeds: Sequence[int]) -> List[Dict[str, Any]]:
    """One row per (target, task): own-bank share per condition and the text's bank when swapped, over seeds."""
    out = []
    for exp in targets(plan):
        reports = []
        for seed in seeds:
            path = os.path.join(run_dir(root, exp, seed), FOLDER, "bank_choice.json")
            if os.path.isfile(path):
                with open(path) as f:
                    reports.append(json.load(f))
        if not reports:
            continue
        for task in reports[0]["tasks"]:
            cells = {c: mean_std([r["conditions"][c][task]["own"] for r in reports])
                     for c in reports[0]["conditions"]}
            if "swapped" in reports[0]["conditions"]:
                cells["text"] = mean_std([r["conditions"]["swapped"][task]["text"] for r in reports])
            out.append({"label": label(exp), "key": exp.key, "task": task, "seeds": len(reports), **cells})
    return out


def markdown(table: Sequence[Dict[str, Any]]) -> str:
    if not table:
        return ""
    out = [f"`cli bank-choice` on the last stage's checkpoint, {MAX_QUESTIONS} test questions per task: the share "
           "of routing mass in the task's own bank (mean over modules) with the questions as asked, with one "
           "shared text instead of the question (`image_only`: CoIN's short-answer instruction, which several tasks "
           "end with), and with the next task's question texts (`swapped`), and in the "
           "text's bank when swapped; mean ± std over seeds, in %.\n",
           "| run | task | own, as asked | own, image only | own, swapped | text's bank, swapped | seeds |",
           "|---|---|---|---|---|---|---|"]
    for r in table:
        cells = [fmt_ms(*(100 * v for v in r[k])) if k in r else "–"
                 for k in ("as_asked", "image_only", "swapped", "text")]
        out.append(f"| {r['label']} | {r['task']} | " + " | ".join(cells) + f" | {r['seeds']} |")
    return "\n".join(out) + "\n"
