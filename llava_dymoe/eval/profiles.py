"""Two scoring profiles for one run: ``matrix.csv`` (the suite's ``scorer``) and ``matrix_clean.csv``.

A suite task may name a ``clean_scorer`` beside its ``scorer`` (``eval_suites/coin.yaml``:
``scorer`` = the ``coin`` profile, CoIN's own rules; ``clean_scorer`` = our clean rule).  The
runner's ``matrix.csv`` is built from ``scorer``; this module re-scores the same answer files
with ``clean_scorer`` and writes

* ``OUT/matrix_clean.csv`` / ``matrix_clean.json``: the same cells, clean profile;
* a "Scoring profiles" section appended to ``OUT/report.md``: MFN / MAA / BWT of both
  matrices and one sentence on why they differ (details: ``docs/scoring.md``).

Nothing is written when no task of the suite has a ``clean_scorer``.  Re-scoring reads the
answers already on disk (no generation), so it is cheap and always matches the answers that
``matrix.csv`` was scored from.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Optional, Sequence

from llava_dymoe.eval.matrix import AccuracyMatrix

MATRIX_CLEAN_CSV = "matrix_clean.csv"
MATRIX_CLEAN_JSON = "matrix_clean.json"
#: why the two profiles give different numbers (one sentence, used in report.md)
WHY_THEY_DIFFER = (
    "The coin profile applies CoIN's own evaluation-script rules, quirks included (exact case-sensitive or "
    "upper()-ed string matches without stripping, a box parser that drops the first and last characters, m4c's "
    "32-period limit, empty ImageNet answers counted correct), so it matches published CoIN tables, while the "
    "clean profile normalises whitespace, case and punctuation and parses answers as written, so the two differ "
    "on the same answers (every difference, with an example, is in docs/scoring.md)."
)

#: suites whose ``scorer`` profile is not CoIN's: (label of matrix.csv's profile, why the matrices differ)
SUITE_PROFILES = {
    "ucit": ("ucit (UCIT authors' scripts)",
             "The ucit profile applies the UCIT authors' evaluators, quirks included (an upper()-ed exact match "
             "without stripping over the answer lines, caption metrics with answers joined to images by position), "
             "so it matches published UCIT tables, while the clean profile strips whitespace and one trailing "
             "period, normalises numbers and articles on IconQA and CLEVR-Math and joins captions by question id, "
             "so the two differ on the same answers (every difference, with an example, is in docs/scoring.md)."),
}

AnswersPath = Callable[[Dict[str, Any], str], str]


def clean_scorers(suite: Any) -> Dict[str, str]:
    """``{task: clean_scorer}`` for the tasks of ``suite`` that declare one."""
    return {t.name: t.clean_scorer for t in suite.tasks if getattr(t, "clean_scorer", None)}


def build_clean_matrix(suite: Any, records: Sequence[Dict[str, Any]], answers_path: AnswersPath,
                       errors: Optional[List[str]] = None) -> Optional[AccuracyMatrix]:
    """The clean-profile matrix of a run, or ``None`` when no task has a ``clean_scorer``.

    ``records``: the stage records the runner builds ``matrix.csv`` from (``{"name", "scores":
    {task: score}}`` plus whatever ``answers_path`` needs); ``answers_path(record, task)`` is
    the answers file of that cell.  A task without a ``clean_scorer`` keeps the record's score
    (the suite's ``scorer``), so both matrices have the same cells.  A cell that cannot be
    scored raises ``ValueError``, or, with an ``errors`` list, is left NaN and described there.
    """
    from llava_dymoe.eval.scorers import score_file

    clean = clean_scorers(suite)
    if not clean:
        return None
    specs = {t.name: t for t in suite.tasks}
    matrix = AccuracyMatrix(suite.task_names)
    for rec in records:
        row = matrix.add_stage(rec["name"])
        for task, score in rec["scores"].items():
            if task not in clean:
                matrix.set(row, task, float(score))
                continue
            spec = specs[task]
            try:
                result = score_file(clean[task], answers_path(rec, task), spec.scoring_file,
                                    reference_key=spec.reference_key)
            except (ValueError, FileNotFoundError) as e:
                message = f"clean profile, stage {rec['name']!r}, task {task!r}: {e}"
                if errors is None:
                    raise ValueError(message) from None
                errors.append(message)
                continue
            matrix.set(row, task, float(result["score"]))
    return matrix


def profiles_markdown(coin: AccuracyMatrix, clean: AccuracyMatrix, digits: int = 2,
                      errors: Sequence[str] = (), suite_name: Optional[str] = None) -> str:
    """The "Scoring profiles" report section: MFN / MAA / BWT of both matrices and why they differ
    (``suite_name`` picks the label and sentence of :data:`SUITE_PROFILES`; CoIN's otherwise)."""
    from llava_dymoe.eval.report import fmt, safe_summary

    first, why = SUITE_PROFILES.get(suite_name or "", ("coin (CoIN's scripts)", WHY_THEY_DIFFER))
    rows = []
    for label, source, m in ((first, "matrix.csv", coin), ("clean", MATRIX_CLEAN_CSV, clean)):
        s = safe_summary(m)
        rows.append(f"| {label} | `{source}` | " + " | ".join(fmt(s.get(k), digits) for k in ("mfn", "maa", "bwt"))
                    + " |")
    notes = ["", "Cells the clean profile could not score (left empty):", *(f"- {e}" for e in errors)] if errors else []
    return "\n".join(["## Scoring profiles", "", "| profile | matrix | MFN | MAA | BWT |", "|---|---|---|---|---|",
                      *rows, "", why, *notes, ""])


def _layout_answers_path(layout: Any) -> AnswersPath:
    from llava_dymoe.protocol.layout import ANSWERS

    return lambda rec, task: os.path.join(layout.eval_dir(rec["stage"], rec["task"], task), ANSWERS)


def write_clean_outputs(layout: Any, suite: Any, records: List[Dict[str, Any]],
                        answers_path: Optional[AnswersPath] = None) -> Optional[AccuracyMatrix]:
    """Write ``matrix_clean.csv``/``.json`` into the run folder and append the profiles section to
    its ``report.md``; returns the clean matrix (``None``, writing nothing, without clean scorers).

    Call it right after ``report.write_run_report`` (which rewrites ``report.md``).  ``layout``
    is the run's :class:`~llava_dymoe.protocol.layout.RunLayout` (``path()``, ``eval_dir()``).
    It never stops a run: a cell the clean scorer cannot score is left empty and listed in
    the report section.
    """
    errors: List[str] = []
    clean = build_clean_matrix(suite, records, answers_path or _layout_answers_path(layout), errors)
    if clean is None:
        return None
    clean.to_csv(layout.path(MATRIX_CLEAN_CSV))
    clean.to_json(layout.path(MATRIX_CLEAN_JSON))
    coin = AccuracyMatrix(suite.task_names)
    for rec in records:
        row = coin.add_stage(rec["name"])
        for task, score in rec["scores"].items():
            coin.set(row, task, float(score))
    with open(layout.path("report.md"), "a", encoding="utf-8") as f:
        f.write("\n" + profiles_markdown(coin, clean, errors=errors, suite_name=getattr(suite, "name", None)))
    return clean
