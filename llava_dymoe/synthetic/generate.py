"""Generate the synthetic continual suite under a data root, cached by a manifest.

:func:`generate_suite` writes every task of :data:`~llava_dymoe.synthetic.tasks.SUITE_TASKS`
(or a chosen subset, in suite order) with :mod:`~llava_dymoe.synthetic.writer`, then
``suite.yaml`` (the suite file for the sequence runner, paths relative to the data root) and
``synthetic.json`` (the manifest: format, seed, sizes, tasks).  A second call with the same
arguments finds a matching manifest and returns at once; ``overwrite=True`` rewrites.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

from .tasks import DESCRIPTION, TaskDef  # noqa: F401 (DESCRIPTION re-exported)
from .writer import IMAGE_ROOT, TaskFiles, suite_yaml, write_task

FORMAT = 2  # 2: ground scenes of one object
SUITE_NAME = "synthetic"
MANIFEST = "synthetic.json"
SUITE_FILE = "suite.yaml"


@dataclass(frozen=True)
class SyntheticSuite:
    """A generated suite: its data root, suite file and per-task files (relative to ``root``)."""

    root: str
    suite_yaml: str
    manifest: dict
    tasks: Dict[str, TaskFiles]

    @property
    def task_names(self) -> List[str]:
        return list(self.tasks)

    def path(self, relative: str) -> str:
        return os.path.join(self.root, relative)

    @property
    def image_folder(self) -> str:
        return os.path.join(self.root, IMAGE_ROOT)


def _select(tasks: Optional[Sequence[str]], suite_tasks: Sequence[TaskDef]) -> List[TaskDef]:
    if not tasks:
        return list(suite_tasks)
    known = {t.name for t in suite_tasks}
    bad = [t for t in tasks if t not in known]
    if bad:
        raise ValueError(f"{', '.join(bad)}: not a continual task of this suite; "
                         f"choose from {', '.join(t.name for t in suite_tasks)}")
    return [t for t in suite_tasks if t.name in tasks]  # keep the suite's training order


def ordered_suite_yaml(suite: SyntheticSuite, order: Sequence[str], tag: str) -> str:
    """Write ``suite_<tag>.yaml`` next to ``suite.yaml``: the same tasks and data in another training order.

    The suite is named ``<suite name>-<tag>`` (e.g. ``synthetic-reversed``) so a run folder of one order never
    resumes as another.
    Returns its path.
    """
    from .suites import DEFAULT_SUITE, get_suite

    spec = get_suite(suite.manifest.get("name", DEFAULT_SUITE))
    by_name = {t.name: t for t in spec.tasks}
    if sorted(order) != sorted(suite.task_names):
        raise ValueError(f"task order {list(order)} must list each of the suite's tasks {suite.task_names} once")
    if not tag.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"order tag {tag!r}: use letters, digits, '-' or '_'")
    path = os.path.join(suite.root, f"suite_{tag}.yaml")
    text = suite_yaml(f"{spec.name}-{tag}", [by_name[n] for n in order], spec.description, spec.notes, spec.training)
    if not (os.path.isfile(path) and open(path).read() == text):
        with open(path, "w") as f:
            f.write(text)
    return path


def generate_suite(root: str, seed: int = 0, n_train: int = 1000, n_test: int = 100, image_size: Optional[int] = None,
                   tasks: Optional[Sequence[str]] = None, overwrite: bool = False,
                   suite: str = SUITE_NAME) -> SyntheticSuite:
    """Write (or reuse) the suite named ``suite`` (:mod:`.suites`) under ``root``; deterministic for the arguments.

    ``image_size`` defaults to the suite's (64 px for ``synthetic``, 96 px for ``coin_shaped``)."""
    from .suites import get_suite, suite_names

    if n_train < 1 or n_test < 1:
        raise ValueError(f"n_train and n_test must be >= 1, got {n_train}, {n_test}")
    spec = get_suite(suite)
    image_size = spec.image_size if image_size is None else image_size
    spec.check_image_size(image_size)
    chosen = _select(tasks, spec.tasks)
    root = os.path.abspath(root)
    manifest = {"format": FORMAT, "kind": "suite", "seed": seed, "n_train": n_train, "n_test": n_test,
                "image_size": image_size, "tasks": [t.name for t in chosen]}
    if suite != SUITE_NAME:  # the default suite's manifest stays as it was
        manifest["name"] = suite
    files = {t.name: TaskFiles.for_task(t.name) for t in chosen}
    man_path, yaml_path = os.path.join(root, MANIFEST), os.path.join(root, SUITE_FILE)
    if not overwrite and os.path.isfile(man_path) and os.path.isfile(yaml_path):
        with open(man_path) as f:
            if json.load(f) == manifest:
                return SyntheticSuite(root, yaml_path, manifest, files)
    if os.path.isfile(man_path):  # a different suite lives here: clear what it wrote
        for name in [IMAGE_ROOT] + [t.name for n in suite_names() for t in get_suite(n).tasks]:
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
    os.makedirs(root, exist_ok=True)
    for task in chosen:
        write_task(root, task, seed, n_train, n_test, image_size)
    with open(yaml_path, "w") as f:
        f.write(suite_yaml(spec.name, chosen, spec.description, spec.notes, spec.training))
    with open(man_path, "w") as f:  # written last: a crash leaves no matching manifest behind
        json.dump(manifest, f, indent=2)
    return SyntheticSuite(root, yaml_path, manifest, files)
