"""Small numeric helpers of the results doc: mean ± sample std over seeds, its text form, paired gaps."""
from __future__ import annotations

import math
from typing import Any, Dict, Sequence


def mean_std(values: Sequence[float]):
    """``(mean, sample std)``; std is NaN for fewer than 2 values, both NaN for none."""
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not vals:
        return float("nan"), float("nan")
    m = sum(vals) / len(vals)
    if len(vals) < 2:
        return m, float("nan")
    return m, math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1))


def fmt_ms(m: float, s: float, digits: int = 1) -> str:
    if math.isnan(m):
        return "–"
    return f"{m:.{digits}f}" if math.isnan(s) else f"{m:.{digits}f} ± {s:.{digits}f}"


def paired_gap(by_key: Dict[str, Dict[str, Any]], a: str, b: str, metric: str):
    """Mean +- std over seeds of ``metric(b) - metric(a)`` for the seeds both finished."""
    ra, rb = by_key.get(a), by_key.get(b)
    if not ra or not rb:
        return float("nan"), float("nan"), 0
    seeds = sorted(set(ra["seeds"]) & set(rb["seeds"]))
    m, s = mean_std([rb["per_seed"][x][metric] - ra["per_seed"][x][metric] for x in seeds])
    return m, s, len(seeds)
