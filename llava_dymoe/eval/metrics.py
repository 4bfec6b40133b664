"""Continual-learning metrics on an accuracy matrix (method.md §5).  Pure; inputs are never mutated.

``R[t, i]`` (0-based here) is the score on task ``i`` after training stage ``t``; stage ``t``
trained task ``t`` (square, lower-triangular use).  ``T`` is the number of stages present,
so a run still in progress (``T < n_tasks``) is summarised over the tasks seen so far;
``T > n_tasks`` is an error.  Cells above the diagonal are ignored (NaN there is normal).
A cell a metric needs that is NaN raises ``ValueError`` naming the cell: MFN needs the
last row, MFT the diagonal, BWT and forgetting both, MAA the whole lower triangle;
forgetting takes its maximum over the earlier stages that were evaluated.

* MFN (mean final accuracy)   ``(1/T) sum_{i<T} R[T-1, i]``
* MAA (mean average accuracy) ``(1/T) sum_{t<T} (1/(t+1)) sum_{i<=t} R[t, i]``
* BWT (backward transfer)     ``(1/(T-1)) sum_{i<T-1} (R[T-1, i] - R[i, i])``
* forgetting (average max.)   ``(1/(T-1)) sum_{i<T-1} (max_{i<=t<T-1} R[t, i] - R[T-1, i])``
* MFT (mean fine-tune acc.)   ``(1/T) sum_{i<T} R[i, i]``

BWT is <= 0 when the model forgets ("forgetting" in the DyMoE abstract is -BWT); the
forgetting measure uses the best earlier score instead of the score right after learning,
so forgetting >= -BWT.  With ``T = 1`` nothing can have been forgotten yet: BWT and
forgetting are defined as ``0.0`` (not NaN), so every summary is valid JSON.
"""
from __future__ import annotations

from typing import Any, Dict, List, Tuple

import numpy as np

from llava_dymoe.eval.matrix import AccuracyMatrix


def _prepare(matrix: Any) -> Tuple[np.ndarray, List[str], List[str]]:
    """A private float copy of the matrix plus stage and task names; checks its shape."""
    if isinstance(matrix, AccuracyMatrix):
        arr, stages, tasks = np.array(matrix.values, dtype=float), list(matrix.stages), list(matrix.tasks)
    else:
        arr = np.array(matrix, dtype=float)
        if arr.ndim != 2:
            raise ValueError(f"an accuracy matrix must be 2-D [stages, tasks], got shape {arr.shape}")
        stages = [f"stage {t}" for t in range(arr.shape[0])]
        tasks = [f"task {i}" for i in range(arr.shape[1])]
    n_stages, n_tasks = arr.shape
    if n_stages == 0:
        raise ValueError("the accuracy matrix has no stages yet; metrics need at least one finished stage")
    if n_stages > n_tasks:
        raise ValueError(
            f"the accuracy matrix has {n_stages} stages but {n_tasks} tasks; stage t must train task t "
            "(square, lower-triangular), so add the missing task columns or drop extra stage rows"
        )
    return arr, stages, tasks


def _need(arr: np.ndarray, stages: List[str], tasks: List[str], cells: List[Tuple[int, int]], metric: str) -> None:
    for t, i in cells:
        if np.isnan(arr[t, i]):
            raise ValueError(
                f"{metric} needs the score of task {tasks[i]!r} after stage {stages[t]!r}, "
                "but that cell holds no score (empty, or NaN: not evaluated, or a scorer gave no number); "
                "evaluate it or remove the stage row"
            )


def mfn(matrix: Any) -> float:
    """Mean final accuracy: mean of the last row over the ``T`` tasks seen so far."""
    arr, stages, tasks = _prepare(matrix)
    T = arr.shape[0]
    _need(arr, stages, tasks, [(T - 1, i) for i in range(T)], "MFN")
    return float(np.mean(arr[T - 1, :T]))


def maa(matrix: Any) -> float:
    """Mean average accuracy: mean over stages of the mean score over the tasks seen so far."""
    arr, stages, tasks = _prepare(matrix)
    T = arr.shape[0]
    _need(arr, stages, tasks, [(t, i) for t in range(T) for i in range(t + 1)], "MAA")
    return float(np.mean([np.mean(arr[t, : t + 1]) for t in range(T)]))


def bwt(matrix: Any) -> float:
    """Backward transfer: mean over earlier tasks of final score minus score right after learning."""
    arr, stages, tasks = _prepare(matrix)
    T = arr.shape[0]
    if T == 1:
        return 0.0
    _need(arr, stages, tasks, [(T - 1, i) for i in range(T - 1)] + [(i, i) for i in range(T - 1)], "BWT")
    return float(np.mean([arr[T - 1, i] - arr[i, i] for i in range(T - 1)]))


def forgetting(matrix: Any) -> float:
    """Average forgetting: mean over earlier tasks of best earlier score minus final score."""
    arr, stages, tasks = _prepare(matrix)
    T = arr.shape[0]
    if T == 1:
        return 0.0
    _need(arr, stages, tasks, [(T - 1, i) for i in range(T - 1)] + [(i, i) for i in range(T - 1)], "forgetting")
    # the diagonal cell is present, so the max over evaluated earlier stages is defined
    return float(np.mean([np.nanmax(arr[i:T - 1, i]) - arr[T - 1, i] for i in range(T - 1)]))


def mft(matrix: Any) -> float:
    """Mean fine-tune accuracy: mean of the diagonal (score right after learning each task)."""
    arr, stages, tasks = _prepare(matrix)
    T = arr.shape[0]
    _need(arr, stages, tasks, [(i, i) for i in range(T)], "MFT")
    return float(np.mean([arr[i, i] for i in range(T)]))


def summary(matrix: Any) -> Dict[str, Any]:
    """All metrics plus the task and stage names: ``{mfn, maa, bwt, forgetting, mft, tasks, stages}``."""
    _, stages, tasks = _prepare(matrix)
    return {
        "mfn": mfn(matrix),
        "maa": maa(matrix),
        "bwt": bwt(matrix),
        "forgetting": forgetting(matrix),
        "mft": mft(matrix),
        "tasks": tasks,
        "stages": stages,
    }
