"""The data pre-flight of a suite: every task's training JSON and question file, in one report.

Used by ``cli check-data --suite`` and by ``cli run`` before its first stage trains (``cli run
--skip-data-check`` turns it off; the training processes it starts then skip their own check).
"""
from __future__ import annotations

import os
from typing import Optional

from llava_dymoe.eval.suite import Suite
from llava_dymoe.integration.data_check import check_question_file, check_training_data
from llava_dymoe.integration.data_report import DataReport


def check_suite_data(suite: Suite, n_stages: Optional[int] = None, *, questions: bool = True,
                     tokenizer: Optional[str] = None, model_max_length: Optional[int] = None,
                     image_tokens: Optional[int] = None, decode_images: Optional[bool] = False) -> DataReport:
    """One report over the first ``n_stages`` tasks of a resolved ``suite`` (all by default)."""
    report = DataReport()
    seen = set()  # a file two tasks share is checked, counted and listed once
    for task in suite.tasks[:n_stages or len(suite.tasks)]:
        key = ("train", os.path.realpath(task.train_json), task.image_root)
        if key not in seen:
            seen.add(key)
            report.extend(check_training_data(task.train_json, task.image_root, tokenizer=tokenizer,
                                              model_max_length=model_max_length, image_tokens=image_tokens,
                                              decode_images=decode_images))
        key = ("questions", os.path.realpath(task.question_file), task.image_root, task.question_format)
        if questions and key not in seen:
            seen.add(key)
            report.extend(check_question_file(task.question_file, task.image_root, task.question_format,
                                              decode_images=decode_images))
    return report


def check_suite_supervision(suite: Suite, n_stages: int, train_argv) -> None:
    """The training pre-flight's length pass (:func:`llava_dymoe.trainer.preflight.check_supervision`) on the
    training JSON of each of the first ``n_stages`` tasks; ``train_argv(task)`` is the stage's training argv."""
    from llava_dymoe.trainer.preflight import check_supervision

    done = set()
    for task in suite.tasks[:n_stages]:
        if os.path.realpath(task.train_json) not in done:
            done.add(os.path.realpath(task.train_json))
            check_supervision(task.train_json, train_argv(task), skip_hint="--skip-data-check")
