"""Range checks for reported numbers: refuse the results a measurement cannot produce.

* :func:`check_score_range`: an accuracy matrix holds percentages, so every evaluated cell is
  in [0, 100] (``cli metrics``); a cell of 150 or -40 is a unit or copy error, named by cell;
* :func:`check_answer_coverage`: ``cli score`` with answers whose question ids match none of the
  references scores 0.0 for the wrong reason (ids from another question file, or a chunk naming
  scheme); refused.  When only some match, the loud warning is returned for the caller to print;
* :func:`check_shared_banks`: ``cli drift`` compares a checkpoint A with later checkpoints B of
  the *same* sequence, so every bank of A must be in B (unchanged, for methods that add a bank
  per task); otherwise the drift it would report (0.0) means nothing.

Each refusal is a :class:`~llava_dymoe.errors.ResultRangeError` (one line, exit status 2).
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, Dict, Optional, Sequence

from .errors import ResultRangeError

SCORE_RANGE = (0.0, 100.0)


def check_score_range(matrix: Any, where: str, high: Optional[float] = None) -> None:
    """Every evaluated (non-NaN) cell of an ``AccuracyMatrix`` lies in [0, 100] (or [0, ``high``]: UCIT's
    caption score, the mean of seven metrics x 100 with CIDEr-D among them, can exceed 100)."""
    lo, hi = SCORE_RANGE[0], SCORE_RANGE[1] if high is None else high
    bad = []
    for r, stage in enumerate(matrix.stages):
        for c, task in enumerate(matrix.tasks):
            v = float(matrix.values[r][c])
            if not math.isnan(v) and not lo <= v <= hi:
                bad.append(f"(stage {stage!r}, task {task!r}) = {v:g}")
    if bad:
        shown = "; ".join(bad[:5]) + (f"; ... ({len(bad)} cells)" if len(bad) > 5 else "")
        raise ResultRangeError(f"{where}: score(s) outside [0, {hi:g}]: {shown}. Scores are percentages; fix the "
                               "cell(s) (a fraction times 100? a typo?) or leave a cell empty if it was not evaluated"
                               " (caption scores such as UCIT's can exceed 100: pass --max-score)")


def check_percent_scale(matrix: Any, where: str, scale: Optional[str] = None) -> Any:
    """A matrix whose every evaluated cell lies in [0, 1] (one of them above 0) was most likely written as
    fractions: refused unless ``scale`` says which it is (``"fraction"``: times 100; ``"percent"``: as is).
    Returns the matrix to use."""
    import numpy as np

    values = np.asarray(matrix.values, dtype=float)
    cells = values[~np.isnan(values)]
    if scale == "fraction":
        bad = cells[(cells < 0) | (cells > 1)]
        if bad.size:
            raise ResultRangeError(f"{where}: --scale fraction, but a cell is {bad[0]:g}, outside [0, 1]")
        matrix.values = values * 100.0
        return matrix
    if scale is None and cells.size and cells.max() > 0 and cells.max() <= 1 and cells.min() >= 0:
        raise ResultRangeError(f"{where}: every score lies in [0, 1] (largest {cells.max():g}): fractions, not the "
                               "percentages a matrix holds? Pass --scale fraction to read them as fractions "
                               "(times 100), or --scale percent if they really are percentages")
    return matrix


def check_answer_coverage(result: Dict[str, Any], answers: str, references: str) -> Optional[str]:
    """For a ``score_file`` result: refuse when no answer matched a question id; return a warning
    line when some questions have no answer (they count as wrong), else None."""
    n, missing = int(result["n"]), list(result.get("missing", ()))
    extra = list(result.get("extra", ()))
    if n and int(result.get("n_answered", n - len(missing))) == 0:  # (ucit: n counts answer lines)
        hint = (f" (answers have ids like {extra[0]!r}, references like {missing[0]!r})" if extra else
                " (the answers file has no answers)")
        raise ResultRangeError(f"none of the {n} question ids of {references} has an answer in {answers}{hint}; "
                               "a score of 0.0 would be meaningless. Score the answers of this question file "
                               "(same question_id values)")
    if missing:
        lines = "duplicates" in result  # the ucit profile: n is the number of answer lines
        counted = ("are left out of the score (the ucit profile divides by the answer lines, as UCIT's authors do)"
                   if lines else "count as wrong")
        of_n = "" if lines else f" of {n}"
        return (f"WARNING: {len(missing)}{of_n} questions of {references} have no answer in {answers} and {counted} "
                f"(first: {', '.join(map(repr, missing[:3]))}); was a chunk of the answers lost?")
    return None


def _dymoe_block(path: str) -> Dict[str, Any]:
    try:
        with open(os.path.join(path, "config.json")) as f:
            block = json.load(f).get("dymoe")
    except (OSError, ValueError) as e:
        raise ResultRangeError(f"{path} is not a DyMoE task checkpoint (config.json: {e})") from None
    if not isinstance(block, dict):
        raise ResultRangeError(f"{path} is not a DyMoE task checkpoint (its config.json has no 'dymoe' block)")
    return block


def check_shared_banks(before: str, afters: Sequence[str]) -> None:
    """Every bank tensor of ``before`` is in each of ``afters``, bit-identical when the method adds a
    bank per task (``expand``); with ``expand=False`` the one bank is retrained, so names and shapes only."""
    import torch
    from safetensors import safe_open

    from .integration.checkpoint import EXPERTS

    expand = bool(_dymoe_block(before).get("config", {}).get("expand", True))
    with safe_open(os.path.join(before, EXPERTS), framework="pt") as fa:
        a = {k: fa.get_tensor(k) for k in fa.keys()}
    for after in afters:
        _dymoe_block(after)
        with safe_open(os.path.join(after, EXPERTS), framework="pt") as fb:
            keys = set(fb.keys())
            missing = sorted(k for k in a if k not in keys)
            changed = [] if missing else sorted(
                k for k in a if (fb.get_tensor(k).shape != a[k].shape if not expand
                                 else not torch.equal(fb.get_tensor(k), a[k])))
        if missing or changed:
            what = (f"lacks {len(missing)} of its {len(a)} bank tensors (e.g. {missing[0]})" if missing else
                    f"holds {len(changed)} of its {len(a)} bank tensors changed (e.g. {changed[0]})")
            raise ResultRangeError(f"--after {after} is not a later checkpoint of --before {before}'s sequence: it "
                                   f"{what}, so the drift would be meaningless; pass checkpoints trained from "
                                   "--before (in training order)")
