"""Write synthetic tasks as LLaVA-format files (PNG images, train JSON, question/reference JSONL).

Layout under a data root (every path of the suite YAML is relative to it)::

    images/<task>/<split>-00000.png   real PNG files (``image_root: images``)
    <task>/train.json                 LLaVA training list {id, image, conversations: [human, gpt]}
    <task>/test.json                  CoIN-style annotations [{question_id, image, text, answer}]
    <task>/questions.jsonl            what llava.eval.model_vqa_loader reads {question_id, image, text}
    <task>/references.jsonl           {question_id, answer} for the scorers
    <task>/meta_<split>.jsonl         per sample: id, image, question, answer, query, scene (the metadata
                                      from which every answer can be recomputed)

A split's random stream depends only on ``(seed, task, split)``, so adding a task or changing
another task's size never changes a task's samples, and the same arguments give the same bytes.
"""
from __future__ import annotations

import json
import os
import random
import textwrap
from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence

from .tasks import Sample, TaskDef

IMAGE_ROOT = "images"


@dataclass(frozen=True)
class TaskFiles:
    """Paths (relative to the data root) of one written task."""

    name: str
    train_json: str
    annotation_file: str
    question_file: str
    reference_file: str

    @classmethod
    def for_task(cls, name: str) -> "TaskFiles":
        return cls(name, f"{name}/train.json", f"{name}/test.json", f"{name}/questions.jsonl",
                   f"{name}/references.jsonl")


def split_rng(seed: int, task: str, split: str) -> random.Random:
    """The random stream of one split of one task (string seeds hash deterministically)."""
    return random.Random(f"llava-dymoe-synthetic/{seed}/{task}/{split}")


def draw(task: TaskDef, seed: int, split: str, n: int, image_size: int) -> List[Sample]:
    """``n`` samples of ``task`` for ``split``."""
    rng = split_rng(seed, task.name, split)
    return [task.make(rng, image_size) for _ in range(n)]


def _write_json(path: str, obj) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")


def _write_jsonl(path: str, rows: Iterable[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


def _save_images(root: str, task: str, split: str, samples: Sequence[Sample], image_size: int) -> List[str]:
    folder = os.path.join(root, IMAGE_ROOT, task)
    os.makedirs(folder, exist_ok=True)
    names = []
    for i, s in enumerate(samples):
        name = f"{task}/{split}-{i:05d}.png"
        s.scene.image(image_size).save(os.path.join(root, IMAGE_ROOT, name), format="PNG")
        names.append(name)
    return names


def _meta_rows(task: str, split: str, samples: Sequence[Sample], images: Sequence[str], image_size: int):
    for i, (s, image) in enumerate(zip(samples, images)):
        yield {"id": f"{task}-{split}-{i:05d}", "task": task, "split": split, "image": image,
               "question": s.question, "answer": s.answer, "query": s.query,
               "scene": s.scene.to_dict(image_size)}


def write_task(root: str, task: TaskDef, seed: int, n_train: int, n_test: int,
               image_size: int = 64) -> TaskFiles:
    """Draw and write the train and test splits of ``task`` under ``root``."""
    files = TaskFiles.for_task(task.name)
    os.makedirs(os.path.join(root, task.name), exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        samples = draw(task, seed, split, n, image_size)
        images = _save_images(root, task.name, split, samples, image_size)
        meta = list(_meta_rows(task.name, split, samples, images, image_size))
        _write_jsonl(os.path.join(root, task.name, f"meta_{split}.jsonl"), meta)
        if split == "train":
            _write_json(os.path.join(root, files.train_json), [
                {"id": m["id"], "image": m["image"], "conversations": [
                    {"from": "human", "value": "<image>\n" + m["question"]},
                    {"from": "gpt", "value": m["answer"]}]} for m in meta])
        else:
            _write_json(os.path.join(root, files.annotation_file), [
                {"question_id": m["id"], "image": m["image"], "text": m["question"], "answer": m["answer"]}
                for m in meta])
            _write_jsonl(os.path.join(root, files.question_file),
                         ({"question_id": m["id"], "image": m["image"], "text": m["question"]} for m in meta))
            _write_jsonl(os.path.join(root, files.reference_file),
                         ({"question_id": m["id"], "answer": m["answer"]} for m in meta))
    return files


def suite_yaml(name: str, tasks: Sequence[TaskDef], description: str, notes: Sequence[str] = (),
               training: Optional[dict] = None) -> str:
    """The suite YAML (paths relative to the data root) for ``tasks`` in training order; ``notes``: extra
    comment lines after the header; ``training``: the suite's LLaVA training overrides."""
    lines = [
        "# Synthetic CoIN-like continual suite over one shared image world (llava_dymoe.synthetic).",
        "# Generate the data root first:  python -m llava_dymoe.synthetic DATA_ROOT [--seed N]",
        "# Every generator is llava.eval.model_vqa_loader (it honours --max_new_tokens). Deviation from",
        "# CoIN: the multiple-choice task uses it too instead of model_vqa_science (1024 new tokens, too",
        "# slow on CPU); its questions carry the options and the letter instruction in their text.",
        "# Layout under DATA_ROOT: images/<task>/<split>-NNNNN.png and <task>/{train.json, test.json,",
        "# questions.jsonl, references.jsonl, meta_train.jsonl, meta_test.jsonl}.",
        *notes,
        f"name: {name}",
        "description: >-",
        *("  " + line for line in textwrap.wrap(description, 96)),
        "defaults:",
        f"  image_root: {IMAGE_ROOT}",
        "  generator: llava.eval.model_vqa_loader",
        "  conv_mode: vicuna_v1",
        "  temperature: 0",
        *(["training:"] + [f"  {k}: {v}" for k, v in training.items()] if training else []),
        "tasks:",
    ]
    for task in tasks:
        f = TaskFiles.for_task(task.name)
        lines += [f"  - name: {task.name}  # {task.analogue}: {task.description}",
                  f"    train_json: {f.train_json}",
                  f"    annotation_file: {f.annotation_file}",
                  f"    question_file: {f.question_file}",
                  f"    reference_file: {f.reference_file}",
                  f"    max_new_tokens: {task.max_new_tokens}",
                  f"    scorer: {task.scorer}"]
    return "\n".join(lines) + "\n"
