"""The accuracy matrix of a continual run: ``R[t, i]`` = score (percent) on task ``i`` after stage ``t``.

A cell that was not evaluated is ``NaN`` — never 0, so "not measured" and "forgot
everything" stay distinguishable.  Stage ``t`` normally trains task ``t``, which makes the
matrix lower-triangular (see :mod:`llava_dymoe.eval.metrics`).

``matrix.csv`` layout (rows = stages, one column per task)::

    stage,ScienceQA,TextVQA
    1_ScienceQA,82.5,
    2_TextVQA,80.25,55.0

The first header cell is ``stage``; an empty cell or ``nan`` (any case) means not
evaluated.  ``matrix.json``: ``{"tasks": [...], "stages": [...], "values": [[x or null]]}``.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from typing import Any, Dict, List, Sequence, Union

import numpy as np

Key = Union[int, str]


class AccuracyMatrix:
    """Named ``[n_stages, n_tasks]`` float matrix with NaN for unevaluated cells."""

    def __init__(self, tasks: Sequence[str], stages: Sequence[str] = (), values: Any = None):
        self.tasks = _names(tasks, "task")
        self.stages = _names(stages, "stage", allow_empty=True)
        shape = (len(self.stages), len(self.tasks))
        if values is None:
            self.values = np.full(shape, np.nan)
        else:
            arr = np.array(values, dtype=float)  # a copy: the caller's array is never aliased
            if arr.shape != shape:
                raise ValueError(f"values have shape {arr.shape}, expected {shape} (stages x tasks)")
            if np.isinf(arr).any():
                raise ValueError("values contain inf; use NaN for cells that were not evaluated")
            self.values = arr

    # ------------------------------------------------------------------ cells and rows
    def _row(self, stage: Key) -> int:
        return _lookup(stage, self.stages, "stage")

    def _col(self, task: Key) -> int:
        return _lookup(task, self.tasks, "task")

    def get(self, stage: Key, task: Key) -> float:
        """Score of ``task`` after ``stage`` (names or 0-based indices); NaN if not evaluated."""
        return float(self.values[self._row(stage), self._col(task)])

    def set(self, stage: Key, task: Key, value: float) -> None:
        """Set one cell (percent).  ``NaN`` marks it as not evaluated; inf is rejected."""
        value = float(value)
        if math.isinf(value):
            raise ValueError(f"score for ({stage!r}, {task!r}) is inf")
        self.values[self._row(stage), self._col(task)] = value

    def add_stage(self, name: str) -> int:
        """Append a stage row of NaN and return its index."""
        if name in self.stages:
            raise ValueError(f"stage {name!r} already exists")
        self.stages = _names([*self.stages, name], "stage")
        self.values = np.vstack([self.values, np.full((1, len(self.tasks)), np.nan)])
        return len(self.stages) - 1

    def copy(self) -> "AccuracyMatrix":
        return AccuracyMatrix(self.tasks, self.stages, self.values)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AccuracyMatrix):
            return NotImplemented
        return (self.tasks == other.tasks and self.stages == other.stages
                and np.array_equal(self.values, other.values, equal_nan=True))

    def __repr__(self) -> str:
        return f"AccuracyMatrix(tasks={self.tasks}, stages={self.stages})"

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> Dict[str, Any]:
        vals = [[None if math.isnan(v) else float(v) for v in row] for row in self.values.tolist()]
        return {"tasks": list(self.tasks), "stages": list(self.stages), "values": vals}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "AccuracyMatrix":
        for key in ("tasks", "stages", "values"):
            if key not in d:
                raise ValueError(f"accuracy matrix JSON has no {key!r} field (needs tasks, stages, values)")
        vals = [[np.nan if v is None else v for v in row] for row in d["values"]]
        if not vals:
            vals = np.zeros((0, len(d["tasks"])))
        return cls(d["tasks"], d["stages"], vals)

    def to_json(self, path: str) -> str:
        _mkparent(path)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=2)
            f.write("\n")
        return path

    @classmethod
    def from_json(cls, path: str) -> "AccuracyMatrix":
        with open(path, "r", encoding="utf-8") as f:
            try:
                d = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None
        try:
            return cls.from_dict(d)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None

    # ------------------------------------------------------------------ CSV
    def to_csv_string(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["stage", *self.tasks])
        for name, row in zip(self.stages, self.values.tolist()):
            w.writerow([name, *("" if math.isnan(v) else repr(float(v)) for v in row)])
        return buf.getvalue()

    def to_csv(self, path: str) -> str:
        """Write ``matrix.csv`` (NaN cells empty, floats in shortest round-trip form)."""
        _mkparent(path)
        with open(path, "w", encoding="utf-8", newline="") as f:
            f.write(self.to_csv_string())
        return path

    @classmethod
    def from_csv_string(cls, text: str, source: str = "<csv>") -> "AccuracyMatrix":
        rows = list(csv.reader(io.StringIO(text)))
        numbered = [(i, r) for i, r in enumerate(rows, start=1) if any(c.strip() for c in r)]
        if not numbered:
            raise ValueError(f"{source}: empty file; expected a header 'stage,<task>,...' and one row per stage")
        hline, header = numbered[0]
        header = [c.strip() for c in header]
        if header[0].lower() != "stage":
            raise ValueError(f"{source} line {hline}: first header cell must be 'stage', found {header[0]!r}")
        try:
            tasks = _names(header[1:], "task")
        except ValueError as e:
            raise ValueError(f"{source} line {hline}: {e}") from None
        stages: List[str] = []
        values: List[List[float]] = []
        for line, row in numbered[1:]:
            if len(row) != len(header):
                raise ValueError(f"{source} line {line}: {len(row)} cells, but the header has {len(header)} "
                                 f"(stage + {len(tasks)} tasks); leave a cell empty for 'not evaluated'")
            name = row[0].strip()
            if not name:
                raise ValueError(f"{source} line {line}: empty stage name")
            if name in stages:
                raise ValueError(f"{source} line {line}: stage {name!r} appears twice")
            stages.append(name)
            values.append([_cell(c, source, line, task) for c, task in zip(row[1:], tasks)])
        return cls(tasks, stages, values if values else np.zeros((0, len(tasks))))

    @classmethod
    def from_csv(cls, path: str) -> "AccuracyMatrix":
        """Read ``matrix.csv``; malformed input raises ``ValueError`` naming the line."""
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no such file")
        with open(path, "r", encoding="utf-8", newline="") as f:
            return cls.from_csv_string(f.read(), source=path)


def _cell(text: str, source: str, line: int, task: str) -> float:
    text = text.strip()
    if text == "" or text.lower() == "nan":
        return float("nan")
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{source} line {line}: cell for task {task!r} is {text!r}, not a number "
                         "(write a score in percent, or leave it empty if not evaluated)") from None
    if math.isinf(value):
        raise ValueError(f"{source} line {line}: cell for task {task!r} is {text!r}; scores must be finite")
    return value


def _names(names: Sequence[str], kind: str, allow_empty: bool = False) -> List[str]:
    out = [str(n) for n in names]
    if not out and not allow_empty:
        raise ValueError(f"an accuracy matrix needs at least one {kind}")
    for n in out:
        if not n.strip():
            raise ValueError(f"empty {kind} name")
    dup = sorted({n for n in out if out.count(n) > 1})
    if dup:
        raise ValueError(f"duplicate {kind} name(s): {', '.join(dup)}")
    return out


def _lookup(key: Key, names: List[str], kind: str) -> int:
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        if not 0 <= key < len(names):
            raise IndexError(f"{kind} index {key} out of range (0..{len(names) - 1})")
        return int(key)
    if key not in names:
        raise KeyError(f"unknown {kind} {key!r}; known: {', '.join(names) or '(none)'}")
    return names.index(key)


def _mkparent(path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
