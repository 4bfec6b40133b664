"""``--oracle-routing``: the accuracy matrix with routing restricted to the banks of each task.

After stage ``t``, every earlier task ``i < t`` is answered a second time by stage ``t``'s
checkpoint loaded with banks ``t0..t(i-1)`` only (``DYMOE_EVAL_MAX_TASKS=i``, see
:mod:`llava_dymoe.integration.eval_loader`): the experts that existed when task ``i`` was learned.
The banks of a finished task are frozen and copied bit for bit into every later checkpoint, so
when the projector is frozen too (``--dymoe-arg train_projector=False`` or ``--train-arg
freeze_mm_mlp_adapter=True``) the restricted model *is* task ``i``'s model and the cell equals
``R[i, i]`` exactly; ``R[t, i]`` below it is then forgetting caused by routing drift to the later
experts alone.  When the projector is trained at every task, the restricted model keeps stage
``t``'s projector and the identity does not hold (the report says which cells are affected).

Outputs, rebuilt with the others after each stage: ``matrix_restricted.csv``/``.json`` (diagonal =
``R[t, t]``, which uses all banks by definition), ``oracle_routing.json`` (one entry per restricted
cell) and a section of ``report.md``.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, Dict, List, Mapping, Optional

from llava_dymoe.eval.matrix import AccuracyMatrix
from llava_dymoe.eval.suite import Suite
from llava_dymoe.integration import checkpoint as ckpt
from llava_dymoe.protocol.layout import ANSWERS, RunLayout, write_json_atomic

MATRIX_CSV = "matrix_restricted.csv"
MATRIX_JSON = "matrix_restricted.json"
CELLS_JSON = "oracle_routing.json"


def projector_unchanged(checkpoint: str, earlier: str) -> bool:
    """True when the two task directories hold bit-identical non-expert weights (the projector)."""
    import torch

    a, b = (torch.load(os.path.join(p, ckpt.NON_LORA), map_location="cpu", weights_only=True)
            for p in (checkpoint, earlier))
    return set(a) == set(b) and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


def _answer_texts(path: str) -> Optional[Dict[str, str]]:
    if not os.path.isfile(path):
        return None
    out = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                out[str(row.get("question_id"))] = row.get("text")
    return out


def build_restricted(layout: RunLayout, suite: Suite, records: List[Dict[str, Any]],
                     oracle: Mapping[str, Mapping[str, Mapping[str, Any]]]):
    """``(matrix, cells)``: the restricted matrix and one dict per restricted cell (see module docstring)."""
    matrix = AccuracyMatrix(suite.task_names)
    by_task = {rec["task"]: rec for rec in records}
    cells = []
    for rec in records:
        row = matrix.add_stage(rec["name"])
        matrix.set(row, rec["task"], rec["scores"][rec["task"]])
        for task, r in (oracle.get(rec["name"]) or {}).items():
            matrix.set(row, task, float(r["score"]))
            own = by_task.get(task)
            own_score = own["scores"].get(task) if own else None
            same = None
            if own is not None:
                mine = _answer_texts(os.path.join(layout.restricted_dir(rec["stage"], rec["task"], task), ANSWERS))
                theirs = _answer_texts(os.path.join(layout.eval_dir(own["stage"], own["task"], task), ANSWERS))
                same = mine is not None and mine == theirs
            cells.append({"stage": rec["name"], "task": task, "banks": r["max_tasks"],
                          "restricted": float(r["score"]), "full": rec["scores"].get(task),
                          "own": own_score, "own_stage": own["name"] if own else None,
                          "projector_unchanged": r.get("projector_unchanged"), "same_answers_as_own": same})
    return matrix, cells


def _fmt(value: Any) -> str:
    from llava_dymoe.eval.report import fmt

    return fmt(value)


def _yes(value: Optional[bool]) -> str:
    return "–" if value is None else ("yes" if value else "no")


def report_section(matrix: AccuracyMatrix, cells: List[Dict[str, Any]]) -> str:
    from llava_dymoe.eval.report import matrix_markdown

    lines = ["", "## Oracle routing: each task with the banks it was learned with (%)", "",
             "Row t, column i < t: task i answered by stage t's checkpoint with routing restricted to banks "
             "t0..t(i-1), the experts that existed when task i was learned (`--oracle-routing`); diagonal = "
             "R[t, t] (all banks). With the projector frozen through the sequence the restricted model is task i's "
             "own, so the cell equals R[i, i] and `restricted - R[t, i]` is the forgetting caused by routing "
             "drift to later experts. A trained projector breaks that identity (column `projector unchanged`).",
             "", matrix_markdown(matrix), ""]
    if cells:
        lines += ["| stage | task | R[i, i] | restricted | R[t, i] | restricted - R[t, i] | projector unchanged "
                  "| same answers as R[i, i] |", "|---|---|---|---|---|---|---|---|"]
        for c in cells:
            drift = (c["restricted"] - c["full"]) if c["full"] is not None else math.nan
            lines.append(f"| {c['stage']} | {c['task']} | {_fmt(c['own'])} | {_fmt(c['restricted'])} | "
                         f"{_fmt(c['full'])} | {_fmt(drift)} | {_yes(c['projector_unchanged'])} | "
                         f"{_yes(c['same_answers_as_own'])} |")
    else:
        lines.append("No restricted evaluation yet (they start at stage 2).")
    return "\n".join(lines) + "\n"


def write_oracle_outputs(layout: RunLayout, suite: Suite, records: List[Dict[str, Any]],
                         oracle: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> AccuracyMatrix:
    """Write matrix_restricted.csv/json and oracle_routing.json; append the section to report.md."""
    matrix, cells = build_restricted(layout, suite, records, oracle)
    matrix.to_csv(layout.path(MATRIX_CSV))
    matrix.to_json(layout.path(MATRIX_JSON))
    write_json_atomic(layout.path(CELLS_JSON), {"cells": cells})
    with open(layout.path("report.md"), "a", encoding="utf-8") as f:
        f.write(report_section(matrix, cells))
    return matrix
