"""What a wrong bank costs on the harder suite (``cli bank-swap``), for the results doc.

For ``oracle_bank`` (one bank per task, told its bank) in each task order of the ``harder`` group, seed 0's last
checkpoint answers every task's test with every task's bank (``protocol/bank_swap.py``; cached in
``<run>/bank_swap/``).  The doc gets the matrix per order: how much a selector loses by choosing another task's
bank, which says whether the cues that tell the suite's tasks apart (where CoIN's would not) matter for accuracy.
Seed 0 only: a matrix costs about eight stage evaluations.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any, Dict, List, Sequence

from .diagnose import run_logged
from .execute import run_dir
from .plan import Experiment

FOLDER = "bank_swap"
METHOD = "oracle_bank"
SEEDS = (0,)


def targets(plan: Sequence[Experiment]) -> List[Experiment]:
    return [e for e in plan if e.group == "harder" and e.method == METHOD]


def run_bank_swap(root: str, plan: Sequence[Experiment], log=print) -> Dict[str, str]:
    """``{run folder: swap.json}`` for the finished ``oracle_bank`` runs of :func:`targets` (seed 0)."""
    done = {}
    for exp in targets(plan):
        for seed in SEEDS:
            folder = run_dir(root, exp, seed)
            if not os.path.isfile(os.path.join(folder, "matrix.csv")):
                continue
            target = os.path.join(folder, FOLDER, "swap.json")
            log(f"bank swap: {exp.key} seed {seed}")
            if not run_logged([sys.executable, "-m", "llava_dymoe.cli", "bank-swap", folder], folder + "_bank_swap.log"):
                log(f"bank swap failed for {exp.key} seed {seed}: see {folder}_bank_swap.log")
                continue
            done[folder] = target
    return done


def markdown(root: str, plan: Sequence[Experiment]) -> str:
    from llava_dymoe.protocol.bank_swap import markdown as matrix_markdown

    parts = []
    for exp in targets(plan):
        for seed in SEEDS:
            path = os.path.join(run_dir(root, exp, seed), FOLDER, "swap.json")
            if not os.path.isfile(path):
                continue
            with open(path) as f:
                report: Dict[str, Any] = json.load(f)
            table = matrix_markdown(report).split("\n", 1)[1].lstrip("\n")
            parts.append(f"**{exp.order} order, seed {seed}.**\n\n{table}")  # a table needs its own block
    if not parts:
        return ""
    head = ("`cli bank-swap` on `oracle_bank`'s last checkpoint: accuracy (%) on the row task's test when the column "
            "task's bank answers (the diagonal is the run's final row); the last column is the other bank that "
            "answers best and what choosing it costs. Where that cost is near 0, a selector that confuses the two "
            "tasks loses nothing, whatever cue it used to tell them apart.\n")
    return head + "\n" + "\n".join(parts)
