"""UCIT's own files in ``check-data --suite eval_suites/ucit.yaml``: the test files, the COCO caption
files and the sample counts against the published ones.

The generic check (:func:`llava_dymoe.protocol.preflight.check_suite_data`) reads every training
file and converted question file and opens every image they name; this adds what only UCIT has:

* each task's ``test_3000.json`` exists and holds question records (``missing file`` / ``empty``);
* a caption task's ``val_coco_type_3000.json`` pairs with its test file the way the authors'
  evaluator needs (image ids exactly ``1..n``, every image with a caption: ``caption references``);
* counts against :data:`convert_ucit.PUBLISHED_COUNTS` (``sample count`` warnings): 3000 test
  questions per task, 40,000 training samples in the three ``_4w`` files.

:func:`ucit_counts` gives the per-task counts the command prints.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List

from llava_dymoe.eval.convert import load_coin_test
from llava_dymoe.eval.convert_ucit import PUBLISHED_COUNTS, caption_reference_lines
from llava_dymoe.integration.data_report import DataReport, Problem


def _count(path: str) -> Any:
    """Number of records of a JSON list file, or ``None`` when it cannot be read."""
    try:
        with open(path, "r", encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return len(data) if isinstance(data, list) else None


def ucit_counts(suite: Any) -> List[Dict[str, Any]]:
    """``[{task, train, test, published_train, published_test}]`` (``None`` where a file is unreadable)."""
    rows = []
    for task in suite.tasks:
        published = PUBLISHED_COUNTS.get(task.name, {})
        rows.append({"task": task.name, "train": _count(task.train_json), "test": _count(task.annotation_file),
                     "published_train": published.get("train"), "published_test": published.get("test")})
    return rows


def check_ucit_files(suite: Any) -> DataReport:
    """Problems of UCIT's test and caption files and of the sample counts of a *resolved* UCIT suite."""
    report = DataReport()
    for task in suite.tasks:
        records = None
        if not os.path.isfile(task.annotation_file):
            report.problems.append(Problem("missing file", task.annotation_file, None,
                                           f"{task.name}'s test file (UCIT's instructions/, HF HaiyangGuo/UCIT)"))
        else:
            report.files.append(task.annotation_file)
            try:
                records = load_coin_test(task.annotation_file, benchmark="UCIT")
            except ValueError as e:
                report.problems.append(Problem("empty" if "no records" in str(e) else "invalid JSON",
                                               task.annotation_file, None, str(e)))
        if task.coco_captions:
            if not os.path.isfile(task.coco_captions):
                report.problems.append(Problem("missing file", task.coco_captions, None,
                                               f"{task.name}'s reference captions (val_coco_type_3000.json)"))
            elif records is not None:
                report.files.append(task.coco_captions)
                try:
                    caption_reference_lines(records, task.coco_captions)
                except ValueError as e:
                    report.problems.append(Problem("caption references", task.coco_captions, None, str(e)))
    for row in ucit_counts(suite):
        for split, path in (("train", suite.task(row["task"]).train_json),
                            ("test", suite.task(row["task"]).annotation_file)):
            want, got = row[f"published_{split}"], row[split]
            if want is not None and got is not None and got != want:
                report.problems.append(Problem("sample count", path, None,
                                               f"{row['task']} {split}: {got} samples, UCIT publishes {want}"))
    return report
