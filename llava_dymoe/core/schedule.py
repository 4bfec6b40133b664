"""The RSR ramp schedule (method.md §3.3 [C]) as a pure function."""
from __future__ import annotations

import math


def rsr_schedule(progress: float, start: float = 0.5) -> float:
    """RSR strength factor rho for a position ``progress`` in the current task's training.

    ``progress = global_step / max_steps`` of the task (clamped to [0, 1]);
    ``rho = 0`` for ``progress < start``, then ``rho = (progress - start) / (1 - start)``, a linear ramp
    reaching 1 at ``progress = 1`` (upstream: start 0.5, method.md §3.3).  ``start = 1`` gives 0 until
    the very last step, where it is 1.  ``start`` must lie in [0, 1].
    """
    if isinstance(start, bool) or not isinstance(start, (int, float)) or not 0.0 <= start <= 1.0:
        raise ValueError(f"rsr_schedule: start must lie in [0, 1], got {start!r}")
    if isinstance(progress, bool) or not isinstance(progress, (int, float)) or math.isnan(progress):
        raise ValueError(f"rsr_schedule: progress must be a number, got {progress!r}")
    p = min(1.0, max(0.0, float(progress)))
    if p < start:
        return 0.0
    if start >= 1.0:
        return 1.0
    return min(1.0, (p - start) / (1.0 - start))
