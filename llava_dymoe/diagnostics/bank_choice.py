"""Which cue routes a task's inputs to its own bank: the image, the question text, or both?

For one finished checkpoint of a sequence and the test questions of its tasks (in training order, so task
``i`` owns bank ``t{i-1}``), each question is run once (one forward of the prompt, eval mode, no TAG, as at
inference) and the routing mass of every DyMoE module is summed per bank over the prompt's tokens
(``RoutingStats.bank_mass``).  Three prompt conditions:

* ``as_asked``: the question file as it is;
* ``image_only``: every question's text replaced by one text shared by all tasks (:data:`SHARED_TEXT`,
  CoIN's short-answer instruction), so only the image tells the tasks apart;
* ``swapped``: task ``i``'s images asked with task ``i+1``'s question texts (row by row, the last task takes
  the first one's), so the image points to one bank and the text to another.

Reported per task and condition: the share of routing mass in the image's task bank (``own``), in the text's
task bank (``text``, for ``swapped``), and the share per bank, each the mean over modules.  With
``bank_scope=sequence`` every prompt's tokens sit in one bank per module, so ``own`` is the token-weighted share
of (prompt, module) decisions that chose the right bank.

Task selectors (``oracle_bank``, ``hide_selector``: ``assign_rule="given"``): every token of a prompt carries its
prompt's bank weights, so ``own`` is the mean weight the selector gave the task's own bank (token-weighted over
the prompts).  An ``oracle_bank`` checkpoint is told each task in turn (task ``i``'s questions run with bank
``t{i-1}``), so its ``own`` is 1 by construction: the row an upper bound has.

Why: the synthetic suite gives each task its own question template, a cue that CoIN's short-answer tasks
(TextVQA, GQA, VizWiz, VQAv2, OCR-VQA) do not offer, since they share their instruction and overlap in their
questions.  A bank decision that follows the text would not carry over to them.
"""
from __future__ import annotations

import contextlib
import json
import os
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from ..core import RoutingStats
from .probe import Probe, read_questions

CONDITIONS = ("as_asked", "image_only", "swapped")
#: the text every question gets in the ``image_only`` condition
SHARED_TEXT = "Answer the question using a single word or phrase."


def prompts(tasks: Sequence[Tuple[str, List[Dict[str, Any]]]], condition: str) -> List[List[Dict[str, Any]]]:
    """The question rows of every task under ``condition`` (same images, texts replaced as documented)."""
    if condition not in CONDITIONS:
        raise ValueError(f"unknown condition {condition!r}; choose from {', '.join(CONDITIONS)}")
    out = []
    for i, (_, rows) in enumerate(tasks):
        if condition == "as_asked":
            out.append([dict(r) for r in rows])
        elif condition == "image_only":
            out.append([{**r, "text": SHARED_TEXT} for r in rows])
        else:
            donor = tasks[(i + 1) % len(tasks)][1]
            out.append([{**r, "text": donor[j % len(donor)]["text"]} for j, r in enumerate(rows)])
    return out


def bank_shares(stats: RoutingStats) -> List[float]:
    """Mean over modules of each bank's share of the routing mass (modules with fewer banks are skipped)."""
    rows = [acc.bank_mass.double() / acc.bank_mass.sum() for acc in stats.layers.values()
            if float(acc.bank_mass.sum()) > 0]
    if not rows:
        raise ValueError("no routing was recorded: is this a DyMoE checkpoint with a router?")
    n = max(r.numel() for r in rows)
    rows = [r for r in rows if r.numel() == n]
    return [float(v) for v in sum(rows) / len(rows)]


def run_bank_choice(ckpt: str, model_base: str, tasks: Sequence[Tuple[str, str]], image_folder: str,
                    conditions: Sequence[str] = CONDITIONS, max_questions: Optional[int] = None,
                    output_dir: Optional[str] = None) -> Dict[str, Any]:
    """``tasks``: ``[(name, question JSONL)]`` in training order (task i owns bank i-1); returns the report
    (and writes ``bank_choice.json`` and ``bank_choice.md`` into ``output_dir`` when given)."""
    if len(tasks) < 2:
        raise ValueError("give at least two tasks: the diagnostic compares banks")
    names = [name for name, _ in tasks]
    if len(set(names)) < len(names):
        raise ValueError(f"task names must differ (their rows are reported by name), got {names}; name each task "
                         "once, in training order")
    loaded = [(name, read_questions(path, max_questions)) for name, path in tasks]
    with _oracle_told_first_task(ckpt):
        probe = Probe(ckpt, model_base)
    selector = getattr(probe.model, "_dymoe_task_selector", None)
    if probe.num_tasks < len(tasks):
        raise ValueError(f"{ckpt} has {probe.num_tasks} bank(s) but {len(tasks)} tasks were given; pass the "
                         "tasks the checkpoint was trained on, in training order")
    report: Dict[str, Any] = {"ckpt": os.path.abspath(ckpt), "num_tasks": probe.num_tasks,
                              "tasks": [n for n, _ in loaded], "shared_text": SHARED_TEXT, "conditions": {}}
    for condition in conditions:
        rows_per_task = prompts(loaded, condition)
        per_task = {}
        for i, ((name, _), rows) in enumerate(zip(loaded, rows_per_task)):
            if selector is not None and selector.kind == "oracle":
                selector.task_index = i  # the oracle is told the task whose questions run
            stats = RoutingStats()
            for _, ids, pixels, _size in probe.questions(rows, image_folder):
                probe.route(stats, ids, pixels)
            share = bank_shares(stats)
            row = {"own": share[i], "banks": share, "n_questions": len(rows)}
            if condition == "swapped":
                row["text"] = share[(i + 1) % len(loaded)]
            per_task[name] = row
        report["conditions"][condition] = per_task
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
        with open(os.path.join(output_dir, "bank_choice.json"), "w") as f:
            json.dump(report, f, indent=1)
        with open(os.path.join(output_dir, "bank_choice.md"), "w") as f:
            f.write(markdown(report))
    return report


@contextlib.contextmanager
def _oracle_told_first_task(ckpt: str) -> Iterator[None]:
    """An ``oracle_bank`` checkpoint loads only when told a task: task 1 while loading (each task's questions are
    then run with their own task, ``run_bank_choice``); any other checkpoint is left alone."""
    from ..integration.checkpoint import read_config_json
    from ..integration.selector import TASK_ID_ENV

    try:
        oracle = (read_config_json(ckpt).get("dymoe") or {}).get("config", {}).get("task_selector") == "oracle"
    except (OSError, ValueError):
        oracle = False
    saved = os.environ.get(TASK_ID_ENV)
    if oracle:
        os.environ[TASK_ID_ENV] = "1"
    try:
        yield
    finally:
        if oracle and saved is None:
            os.environ.pop(TASK_ID_ENV, None)
        elif oracle:
            os.environ[TASK_ID_ENV] = saved


def markdown(report: Dict[str, Any]) -> str:
    """One table: a row per task, the own-bank share per condition (and the text's bank when swapped)."""
    conds = list(report["conditions"])
    head = ["task"] + [f"own bank, {c}" for c in conds] + (["text's bank, swapped"] if "swapped" in conds else [])
    lines = [f"Bank choice of {report['ckpt']} ({report['num_tasks']} banks; mean share of routing mass over "
             "modules)", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in report["tasks"]:
        cells = [name] + [f"{report['conditions'][c][name]['own']:.3f}" for c in conds]
        if "swapped" in conds:
            cells.append(f"{report['conditions']['swapped'][name]['text']:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
