"""``cli run --task-order``: train a suite's tasks in another order without editing its YAML.

Two forms:

* ``NAME,NAME,...``: the tasks in that order (a subset trains and evaluates only those tasks);
* ``random:SEED``: every task, in the order ``random.Random(SEED).sample`` draws.  ``random.sample`` picks
  positions, so ``random:26`` on CoIN's eight tasks is ``random.Random(26).sample(range(8), 8)`` applied to
  them: the drawn order of the harder study (docs/beyond-the-paper.md section 8).

The order is part of a run's identity (``run.json`` records the task list), so a folder started in one order
never resumes in another, and the analyses that read a finished run (``read_run_suite``) see its order.
"""
from __future__ import annotations

import random
from typing import Any, Dict, List, Optional

from llava_dymoe.eval.suite import Suite, load_suite

RANDOM_PREFIX = "random:"


def parse_task_order(spec: str, suite: Suite) -> List[str]:
    """The task names ``spec`` stands for, in training order (``ValueError`` naming the fix when it is wrong)."""
    text = (spec or "").strip()
    if text.startswith(RANDOM_PREFIX):
        seed = text[len(RANDOM_PREFIX):].strip()
        try:
            value = int(seed)
        except ValueError:
            raise ValueError(f"--task-order {spec!r}: after 'random:' give an integer seed, e.g. random:26") from None
        names = suite.task_names
        return random.Random(value).sample(names, len(names))
    names = [n.strip() for n in text.split(",")]
    if not text or any(not n for n in names):
        raise ValueError(f"--task-order {spec!r}: give task names separated by commas (no empty name), e.g. "
                         f"{','.join(reversed(suite.task_names))}, or random:SEED")
    return names


def apply_task_order(suite: Suite, spec: Optional[str]) -> Suite:
    """``suite`` in the order of ``spec`` (unchanged when ``spec`` is None)."""
    if spec is None:
        return suite
    try:
        return suite.reordered(parse_task_order(spec, suite))
    except ValueError as e:
        message = str(e)
        raise ValueError(message if message.startswith("--task-order") else f"--task-order {spec!r}: {message}") \
            from None


def read_run_suite(record: Dict[str, Any]) -> Suite:
    """The suite of a finished run (its ``run.json`` record), in the order the run trained it."""
    suite = load_suite(record["suite_file"], data_root=record["data_root"])
    tasks = record.get("tasks")
    return suite.reordered(tasks) if tasks and tasks != suite.task_names else suite
