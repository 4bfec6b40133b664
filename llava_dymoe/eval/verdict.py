"""A plain-language ending for a comparison of runs: a short table, what the numbers say, the caveat.

``verdict(metrics, caveat, heatmaps, report)`` takes ``{method: metrics.json content}`` in display
order and writes, for a newcomer at the end of ``make demo``::

    Verdict (in %)
      method        MFN     BWT     MFT
      dymoe       17.33  -20.00   33.33
      ...
      MFN = mean final accuracy; BWT = ...
    What it shows: <sentence derived from the numbers>
    What it does not show: <caveat>
    Heatmaps (accuracy matrix per run): ...
    Report: ...

The sentence names the method with the best MFN (mean final accuracy), the one that forgets least
(BWT closest to 0; BWT <= 0 is forgetting) and, when another method, the one that learns each task
best when trained on it (MFT) but ends lower.  When every MFN lies within ``CLOSE`` points the sentence says no
method stands out instead of naming a winner.
"""
from __future__ import annotations

import math
from typing import List, Mapping, Optional, Sequence

from llava_dymoe.eval.report import fmt

COLUMNS = (("mfn", "MFN"), ("bwt", "BWT"), ("mft", "MFT"))
#: MFN gap (points) below which no method is called better than another on one run
CLOSE = 2.0


def _value(m: Mapping[str, float], key: str) -> float:
    v = m.get(key)
    return float("nan") if v is None else float(v)


def table(metrics: Mapping[str, Mapping[str, float]]) -> List[str]:
    """Aligned text rows: method, MFN, BWT, MFT (in %, two decimals; missing as an en dash)."""
    width = max([len("method")] + [len(name) for name in metrics])
    lines = ["  " + "method".ljust(width) + "".join(label.rjust(8) for _, label in COLUMNS)]
    for name, m in metrics.items():
        lines.append("  " + name.ljust(width) + "".join(fmt(m.get(key)).rjust(8) for key, _ in COLUMNS))
    return lines


def _best(metrics: Mapping[str, Mapping[str, float]], key: str) -> List[str]:
    """The methods with the highest ``key`` (ties kept, in display order); NaN never wins."""
    values = {n: _value(m, key) for n, m in metrics.items() if not math.isnan(_value(m, key))}
    if not values:
        return []
    top = max(values.values())
    return [n for n, v in values.items() if v == top]


def _names(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def findings(metrics: Mapping[str, Mapping[str, float]]) -> str:
    """One sentence on what this run's numbers say (see the module docstring)."""
    mfn = {n: _value(m, "mfn") for n, m in metrics.items() if not math.isnan(_value(m, "mfn"))}
    if not mfn:
        return "no run has metrics yet, so there is nothing to compare."
    if len(mfn) == 1:
        (name, _), = mfn.items()
        m = metrics[name]
        return (f"only {name} has metrics: MFN {fmt(m.get('mfn'), 1)}, BWT {fmt(m.get('bwt'), 1)}, "
                f"MFT {fmt(m.get('mft'), 1)}; there is no other method to compare with.")
    if max(mfn.values()) == min(mfn.values()):
        return f"every method ends at MFN {fmt(max(mfn.values()), 1)}, so no method stands out on this run."
    if max(mfn.values()) - min(mfn.values()) < CLOSE:
        return (f"the methods end within {CLOSE:g} points of each other on MFN "
                f"({fmt(min(mfn.values()), 1)} to {fmt(max(mfn.values()), 1)}), so no method stands out on this run.")
    best, least = _best(metrics, "mfn"), _best(metrics, "bwt")

    def value(names: Sequence[str], key: str) -> str:
        return fmt(metrics[names[0]].get(key), 1)

    tie = " tie for" if len(best) > 1 else " has"
    parts = [f"{_names(best)}{tie} the best mean final accuracy (MFN {value(best, 'mfn')})"]
    if least == best:
        parts[0] += f" and forget{'s' if len(best) == 1 else ''} least (BWT {value(least, 'bwt')})"
    elif least:
        parts.append(f"{_names(least)} forget{'s' if len(least) == 1 else ''} least (BWT {value(least, 'bwt')})")
    plastic = _best(metrics, "mft")
    if plastic and not set(plastic) & set(best):
        one = len(plastic) == 1
        parts.append(f"{_names(plastic)} learn{'s' if one else ''} each task best right after training on it "
                     f"(MFT {value(plastic, 'mft')}) but end{'s' if one else ''} lower (MFN {value(plastic, 'mfn')})")
    return "; ".join(parts) + "."


def verdict(metrics: Mapping[str, Mapping[str, float]], caveat: str,
            heatmaps: Optional[Mapping[str, str]] = None, report: Optional[str] = None) -> str:
    """The whole ending as text (see the module docstring); ``caveat`` is what the numbers cannot show."""
    lines = ["Verdict (in %)"] + table(metrics)
    lines.append("  MFN = mean final accuracy; BWT = backward transfer (< 0: forgetting); "
                 "MFT = accuracy right after learning each task")
    lines.append("What it shows: " + findings(metrics))
    lines.append("What it does not show: " + caveat)
    if heatmaps:
        lines.append("Heatmaps (accuracy after each stage, per run):")
        lines += [f"  {name}: {path}" for name, path in heatmaps.items()]
    if report:
        lines.append(f"Report: {report}")
    return "\n".join(lines)

