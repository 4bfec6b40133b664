"""Evaluation suites: an ordered list of tasks, read from ``eval_suites/*.yaml``.

The format is documented in ``eval_suites/README.md``.  Paths in a suite are relative to a
data root given at run time (``load_suite(path, data_root=...)``); absolute paths are kept.
Every problem raises ``ValueError`` naming the file, the task and the field.

An optional top-level ``training:`` mapping holds LLaVA training-argument overrides for every
stage of a run of the suite (``{"max_steps": 3}`` -> ``--max_steps 3``); the sequence runner
(:mod:`llava_dymoe.protocol.runner`) applies them over its defaults and under ``--train-arg``.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import yaml

from llava_dymoe.eval import scorers

# upstream generator module -> question-file format it reads (llava-integration.md §1.8)
GENERATORS: Dict[str, str] = {
    "llava.eval.model_vqa_loader": "jsonl",
    "llava.eval.model_vqa": "jsonl",
    "llava.eval.model_vqa_science": "science_json",
}
PATH_FIELDS = ("train_json", "question_file", "annotation_file", "reference_file", "image_root", "official_answers",
               "coco_captions")
_REQUIRED = ("name", "train_json", "question_file", "annotation_file", "image_root", "generator", "scorer")
_TOP_LEVEL = ("name", "description", "defaults", "training", "tasks")
#: training keys a suite may not set: the runner derives them from the task, the run and its stage
RESERVED_TRAINING = ("model_name_or_path", "vision_tower", "data_path", "image_folder", "output_dir",
                     "deepspeed", "pretrain_mm_mlp_adapter")


@dataclass(frozen=True)
class TaskSpec:
    """One task of a suite.  Path fields are relative to the data root until resolved."""

    name: str
    train_json: str
    question_file: str
    annotation_file: str
    image_root: str
    generator: str
    scorer: str
    #: optional second scorer (e.g. the clean rule beside a ``coin_*`` scorer): ``matrix_clean.csv``
    clean_scorer: Optional[str] = None
    reference_file: Optional[str] = None
    official_answers: Optional[str] = None
    #: caption tasks (UCIT): the COCO-format reference captions, joined to the test file by position
    coco_captions: Optional[str] = None
    reference_key: str = "answer"
    conv_mode: str = "vicuna_v1"
    max_new_tokens: int = 128
    temperature: float = 0.0

    @property
    def question_format(self) -> str:
        """``"jsonl"`` or ``"science_json"``: what :attr:`generator` reads as ``--question-file``."""
        return GENERATORS[self.generator]

    @property
    def is_grounding(self) -> bool:
        """Whether the references are boxes (``convert-coin`` parses ``answer_bbox``)."""
        return bool({self.scorer, self.clean_scorer} & scorers.GROUNDING_SCORERS)

    @property
    def scoring_file(self) -> str:
        """The file :func:`scorers.score_file` reads references from."""
        return self.reference_file or self.annotation_file

    def resolve(self, data_root: str) -> "TaskSpec":
        root = os.path.abspath(os.path.expanduser(data_root))
        updates = {}
        for f in PATH_FIELDS:
            value = getattr(self, f)
            if value is not None:
                value = os.path.expanduser(value)
                updates[f] = value if os.path.isabs(value) else os.path.join(root, value)
        return dataclasses.replace(self, **updates)


@dataclass(frozen=True)
class Suite:
    name: str
    tasks: List[TaskSpec]
    description: str = ""
    data_root: Optional[str] = None
    source: Optional[str] = None
    training: Dict[str, Any] = field(default_factory=dict)

    @property
    def task_names(self) -> List[str]:
        return [t.name for t in self.tasks]

    def task(self, name: str) -> TaskSpec:
        for t in self.tasks:
            if t.name == name:
                return t
        raise KeyError(f"suite {self.name!r} has no task {name!r}; tasks: {', '.join(self.task_names)}")

    def reordered(self, names: Sequence[str]) -> "Suite":
        """A copy that trains the tasks ``names`` in that order (a subset is allowed; the others are left out).

        Refused (``ValueError`` naming the suite's tasks): an unknown or repeated name, or no name."""
        names = list(names)
        known = self.task_names
        unknown = [n for n in names if n not in known]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if not names or unknown or repeated:
            problem = (f"unknown task(s) {', '.join(map(repr, unknown))}" if unknown else
                       f"task(s) {', '.join(map(repr, repeated))} listed twice" if repeated else "no task given")
            raise ValueError(f"task order for suite {self.name!r}: {problem}; give each task at most once, "
                             f"from: {', '.join(known)}")
        return dataclasses.replace(self, tasks=[self.task(n) for n in names])

    def resolve(self, data_root: str) -> "Suite":
        """A copy with every relative path joined to ``data_root``."""
        root = os.path.abspath(os.path.expanduser(data_root))
        return dataclasses.replace(self, tasks=[t.resolve(root) for t in self.tasks], data_root=root)

    def to_dict(self) -> Dict[str, Any]:
        return {"name": self.name, "description": self.description, "data_root": self.data_root,
                "training": dict(self.training), "tasks": [dataclasses.asdict(t) for t in self.tasks]}


_FIELDS = {f.name: f for f in dataclasses.fields(TaskSpec)}


def _check_task(raw: Any, pos: int, defaults: Dict[str, Any], where: str) -> TaskSpec:
    label = f"{where}, task #{pos}"
    if not isinstance(raw, dict):
        raise ValueError(f"{label}: expected a mapping of fields, got {type(raw).__name__}")
    if "name" in raw:
        label = f"{where}, task {raw['name']!r}"
    values = {**defaults, **raw}
    unknown = sorted(set(values) - set(_FIELDS))
    if unknown:
        raise ValueError(f"{label}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(_FIELDS)}")
    for key in _REQUIRED:
        if values.get(key) in (None, ""):
            raise ValueError(f"{label}: missing field {key!r}")
    for key in ("name", "generator", "scorer", "clean_scorer", "conv_mode", "reference_key", *PATH_FIELDS):
        if values.get(key) is not None and (not isinstance(values[key], str) or not values[key].strip()):
            raise ValueError(f"{label}: field {key!r} must be a non-empty string, got {values[key]!r}")
    if values["generator"] not in GENERATORS:
        raise ValueError(f"{label}: field 'generator' = {values['generator']!r} is not a supported upstream "
                         f"eval module; use one of {', '.join(GENERATORS)}")
    if values["scorer"] not in scorers.SCORERS:
        raise ValueError(f"{label}: field 'scorer' = {values['scorer']!r} is not a known scorer; "
                         f"known: {', '.join(scorers.names())}")
    if values.get("clean_scorer") is not None and values["clean_scorer"] not in scorers.SCORERS:
        raise ValueError(f"{label}: field 'clean_scorer' = {values['clean_scorer']!r} is not a known scorer; "
                         f"known: {', '.join(scorers.names())}")
    mnt = values.get("max_new_tokens", 128)
    if isinstance(mnt, bool) or not isinstance(mnt, int) or mnt <= 0:
        raise ValueError(f"{label}: field 'max_new_tokens' must be a positive integer, got {mnt!r}")
    temp = values.get("temperature", 0.0)
    if isinstance(temp, bool) or not isinstance(temp, (int, float)) or temp < 0:
        raise ValueError(f"{label}: field 'temperature' must be a number >= 0, got {temp!r}")
    values["temperature"] = float(temp)
    return TaskSpec(**values)


def _check_training(raw: Any, where: str) -> Dict[str, Any]:
    """The ``training:`` block: LLaVA ``train()`` flag names (no ``--``) mapped to scalar values."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: 'training' must be a mapping of LLaVA training arguments, e.g. "
                         "{max_steps: 3, learning_rate: 2e-4}")
    for key, value in raw.items():
        if not isinstance(key, str) or not key.isidentifier():
            raise ValueError(f"{where}: 'training' key {key!r} is not a flag name (write max_steps, not --max_steps)")
        if key in RESERVED_TRAINING or key.startswith("dymoe_"):
            raise ValueError(f"{where}: 'training' may not set {key!r}; the runner sets it (model, data and "
                             "paths come from the run's options and the task; --dymoe_* from --dymoe-arg)")
        if value is not None and not isinstance(value, (str, int, float, bool)):
            raise ValueError(f"{where}: 'training' value of {key!r} must be a scalar, got {type(value).__name__}")
    return dict(raw)


def load_suite(path: str, data_root: Optional[str] = None) -> Suite:
    """Read and validate a suite YAML; with ``data_root``, resolve its relative paths against it."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such suite file")
    with open(path, "r", encoding="utf-8") as f:
        try:
            raw = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise ValueError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a suite is a mapping with 'name' and 'tasks'")
    unknown = sorted(set(raw) - set(_TOP_LEVEL))
    if unknown:
        raise ValueError(f"{path}: unknown top-level key(s) {', '.join(unknown)}; allowed: {', '.join(_TOP_LEVEL)}")
    if not isinstance(raw.get("name"), str) or not raw["name"].strip():
        raise ValueError(f"{path}: missing top-level 'name'")
    defaults = raw.get("defaults") or {}
    if not isinstance(defaults, dict) or "name" in defaults:
        raise ValueError(f"{path}: 'defaults' must be a mapping of task fields (without 'name')")
    tasks_raw = raw.get("tasks")
    if not isinstance(tasks_raw, list) or not tasks_raw:
        raise ValueError(f"{path}: 'tasks' must be a non-empty list, in training order")
    tasks: List[TaskSpec] = []
    for pos, item in enumerate(tasks_raw, start=1):
        task = _check_task(item, pos, defaults, path)
        if task.name in [t.name for t in tasks]:
            raise ValueError(f"{path}, task {task.name!r}: field 'name' is duplicated (task #{pos}); task names must be unique")
        tasks.append(task)
    suite = Suite(name=raw["name"], tasks=tasks, description=str(raw.get("description") or ""), source=path,
                  training=_check_training(raw.get("training"), path))
    return suite.resolve(data_root) if data_root is not None else suite
