"""Completion records of a run: ``score.json`` per evaluated task and ``stage.json`` per stage.

Both are written last, by an atomic rename, after the files they vouch for:

* ``score.json`` (``OUT/stages/<t>_<task>/eval/<task_i>/``): the scorer's result plus the
  SHA-256 of ``answers.jsonl``.  Without it (or with answers that no longer match), the
  evaluation is partial and is redone.
* ``stage.json`` (``OUT/stages/<t>_<task>/``): the scores of every task seen so far, the SHA-256
  of each answers and score file, of the stage's checkpoint marker (``dymoe_task.json``, which in
  turn holds the hashes of every checkpoint file) and of the previous stage's marker.  A stage
  with a ``stage.json`` is finished: it is verified, never redone, and a finished stage whose
  files changed stops the run with an error instead of being overwritten.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence

from llava_dymoe.integration import checkpoint as ckpt
from llava_dymoe.protocol.layout import ANSWERS, SCORE_JSON, RunLayout, sha256_file, write_json_atomic

SCORE_FIELDS = ("scorer", "score", "n", "n_answered", "missing", "extra", "per_question")
#: kept when a scorer returns them: caption metrics (BLEU ... CIDEr, Average), ids answered twice (ucit)
OPTIONAL_SCORE_FIELDS = ("metrics", "duplicates")


class RunStateError(ValueError):
    """The run folder holds a state that cannot be resumed safely (the message says what to do)."""


def load_score(eval_dir: str) -> Optional[Dict[str, Any]]:
    """The ``score.json`` of a finished evaluation, or ``None`` when it is partial (redo it)."""
    score_path, answers = os.path.join(eval_dir, SCORE_JSON), os.path.join(eval_dir, ANSWERS)
    if not (os.path.isfile(score_path) and os.path.isfile(answers)):
        return None
    try:
        with open(score_path, encoding="utf-8") as f:
            rec = json.load(f)
    except ValueError:
        return None
    if not isinstance(rec, dict) or rec.get("answers_sha256") != sha256_file(answers):
        return None
    return rec


def write_score(eval_dir: str, task: str, result: Mapping[str, Any],
                extra: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """Record a scored evaluation (``result`` from :func:`llava_dymoe.eval.scorers.score_file`);
    ``extra`` fields are stored with it (``--oracle-routing`` records which banks and checkpoint)."""
    optional = {k: result[k] for k in OPTIONAL_SCORE_FIELDS if k in result}
    rec = {"task": task, **{k: result[k] for k in SCORE_FIELDS}, **optional, **dict(extra or {}),
           "answers_sha256": sha256_file(os.path.join(eval_dir, ANSWERS))}
    write_json_atomic(os.path.join(eval_dir, SCORE_JSON), rec)
    return rec


def marker_sha(checkpoint_dir: str) -> str:
    return sha256_file(os.path.join(checkpoint_dir, ckpt.MARKER))


def write_stage(layout: RunLayout, t: int, task: str, *, scores: Mapping[str, Mapping[str, Any]],
                eval_dirs: Mapping[str, str], prev_checkpoint: Optional[str], train_seconds: Optional[float],
                eval_seconds: Optional[float]) -> Dict[str, Any]:
    """Write ``stage.json`` for stage ``t`` (its checkpoint and evaluations must be complete)."""
    checkpoint = layout.checkpoint_dir(t, task)
    files = {}
    for evaluated in scores:
        for name in (ANSWERS, SCORE_JSON):
            path = os.path.join(eval_dirs[evaluated], name)
            files[layout.rel(path)] = sha256_file(path)
    rec = {"stage": t, "name": layout.stage_name(t, task), "task": task, "method": layout.method,
           "checkpoint": layout.rel(checkpoint), "checkpoint_marker_sha256": marker_sha(checkpoint),
           "prev_checkpoint_marker_sha256": marker_sha(prev_checkpoint) if prev_checkpoint else None,
           "scores": {k: float(v["score"]) for k, v in scores.items()}, "files": files,
           "train_seconds": train_seconds, "eval_seconds": eval_seconds,
           "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    write_json_atomic(layout.stage_record(t, task), rec)
    return rec


def _stage_problems(layout: RunLayout, rec: Dict[str, Any], t: int, task: str, seen: Sequence[str],
                    prev_checkpoint: Optional[str]) -> List[str]:
    problems = []
    if rec.get("stage") != t or rec.get("task") != task:
        problems.append(f"it records stage {rec.get('stage')!r} task {rec.get('task')!r}, expected {t} {task!r}")
    if sorted(rec.get("scores") or {}) != sorted(seen):
        problems.append(f"it scores {sorted(rec.get('scores') or {})}, expected the tasks seen so far {sorted(seen)}")
    checkpoint = layout.checkpoint_dir(t, task)
    try:
        ckpt.verify(checkpoint)
        if marker_sha(checkpoint) != rec.get("checkpoint_marker_sha256"):
            problems.append(f"{checkpoint} is not the checkpoint this stage evaluated (its marker changed)")
    except ckpt.CheckpointError as e:
        problems.append(str(e))
    if prev_checkpoint and (not ckpt.is_finished(prev_checkpoint)
                            or marker_sha(prev_checkpoint) != rec.get("prev_checkpoint_marker_sha256")):
        problems.append(f"the previous stage's checkpoint {prev_checkpoint} is missing or not the one this "
                        "stage was trained from")
    for rel, digest in (rec.get("files") or {}).items():
        path = layout.path(rel)
        if not os.path.isfile(path):
            problems.append(f"{path} is missing")
        elif sha256_file(path) != digest:
            problems.append(f"{path} was modified after the stage finished")
    return problems


def verify_stage(layout: RunLayout, t: int, task: str, seen: Sequence[str],
                 prev_checkpoint: Optional[str]) -> Optional[Dict[str, Any]]:
    """The verified ``stage.json`` of a finished stage, ``None`` for an unfinished one.

    Raises :class:`RunStateError` when the stage finished but its files no longer match.
    """
    path = layout.stage_record(t, task)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            rec = json.load(f)
        if not isinstance(rec, dict):
            raise ValueError("not a JSON object")
    except ValueError as e:
        problems = [f"{path} is not a valid stage record ({e})"]
    else:
        problems = _stage_problems(layout, rec, t, task, seen, prev_checkpoint)
    if problems:
        raise RunStateError(
            f"stage {layout.stage_name(t, task)} finished earlier, but:\n  - " + "\n  - ".join(problems) +
            "\nA finished stage is never redone in place. Restore those files; or delete "
            f"{layout.stage_dir(t, task)} to evaluate the stage again from its (intact) checkpoint; "
            "or start over with a new --output-dir.")
    return rec
