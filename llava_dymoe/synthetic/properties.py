"""Measured properties of a written synthetic suite (what makes ``coin_shaped`` CoIN-shaped).

Computed from the files on disk (metadata JSONL and PNGs), so the tests and the generator's
table measure the same thing:

* ``image_token_share``: image tokens / all prompt tokens of every question, the prompt built as
  LLaVA builds it (``vicuna_v1`` template, ``<image>\\n`` + question, ``tokenizer_image_token``
  with the tiny tokenizer), the one ``<image>`` id replaced by the CLIP's patches
  (LLaVA's ``prepare_inputs_labels_for_multimodal`` splices ``patches`` features in its place);
* ``classifier_accuracy``: a text-only nearest-centroid classifier over bags of words, fitted on the
  training questions, names the task of this share of the test questions;
* ``shared_forms``: question forms (colour, shape, number, genre words masked; instruction lines
  kept) asked by at least three tasks;
* ``conflicts``: groups of samples with the same question text and the same image pixels whose
  answers differ (must be 0), and how many such groups span two tasks.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
from collections import Counter, defaultdict
from typing import Dict, List, Optional, Sequence

from .world import COLOURS, NUMBER_WORDS, SHAPES

#: Words masked when a question is reduced to its form.
SLOT_WORDS = {**{c: "{colour}" for c in COLOURS}, **{s: "{shape}" for s in SHAPES},
              **{n: "{number}" for n in NUMBER_WORDS}}


def read_meta(root: str, task: str, split: str) -> List[dict]:
    with open(os.path.join(root, task, f"meta_{split}.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def _words(text: str) -> List[str]:
    return re.findall(r"[a-z']+", text.lower())


def question_form(question: str) -> str:
    """The question with its slot words masked: ``"What colour is the {shape}?\\nAnswer ..."``."""
    return re.sub(r"[A-Za-z]+", lambda m: SLOT_WORDS.get(m.group(0), m.group(0)), question)


def tiny_tokenizer(path: Optional[str] = None):
    """The tiny LLaVA's tokenizer (trained afresh, deterministic, about 2 s) or the one saved at ``path``."""
    from transformers import LlamaTokenizer

    if path:
        return LlamaTokenizer.from_pretrained(path)
    from llava_dymoe.tiny import train_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        return train_tokenizer(tmp)


def prompt_text_tokens(tokenizer, question: str, conv_mode: str = "vicuna_v1") -> int:
    """Tokens of the whole prompt except the image: template, ``<image>\\n`` + question, up to ``ASSISTANT:``."""
    from llava.constants import DEFAULT_IMAGE_TOKEN, IMAGE_TOKEN_INDEX
    from llava.conversation import conv_templates
    from llava.mm_utils import tokenizer_image_token

    conv = conv_templates[conv_mode].copy()
    conv.append_message(conv.roles[0], DEFAULT_IMAGE_TOKEN + "\n" + question)
    conv.append_message(conv.roles[1], None)
    ids = tokenizer_image_token(conv.get_prompt(), tokenizer)
    assert ids.count(IMAGE_TOKEN_INDEX) == 1
    return len(ids) - 1


def image_token_share(rows: Sequence[dict], tokenizer, image_tokens: int) -> Dict[str, float]:
    text = {}
    for r in rows:
        if r["question"] not in text:
            text[r["question"]] = prompt_text_tokens(tokenizer, r["question"])
    shares = [image_tokens / (image_tokens + text[r["question"]]) for r in rows]
    return {"min": min(shares), "mean": sum(shares) / len(shares), "image_tokens": image_tokens,
            "text_tokens_min": min(text.values()), "text_tokens_max": max(text.values())}


def _unit(counts: Counter) -> Dict[str, float]:
    norm = math.sqrt(sum(v * v for v in counts.values())) or 1.0
    return {k: v / norm for k, v in counts.items()}


def classifier_accuracy(train: Dict[str, List[str]], test: Dict[str, List[str]]) -> Dict[str, float]:
    """Nearest centroid (cosine) over bags of words: overall and per-task share of test questions
    whose task it names; ``train``/``test`` map task -> questions."""
    centroids = {}
    for task, questions in train.items():
        total = Counter()
        for q in questions:
            for k, v in _unit(Counter(_words(q))).items():
                total[k] += v
        centroids[task] = _unit(total)
    per_task, hits, n = {}, 0, 0
    for task, questions in test.items():
        right = 0
        for q in questions:
            vec = _unit(Counter(_words(q)))
            best = max(centroids, key=lambda t: (sum(v * centroids[t].get(k, 0.0) for k, v in vec.items()), t))
            right += best == task
        per_task[task] = right / len(questions)
        hits, n = hits + right, n + len(questions)
    return {"overall": hits / n, "per_task": per_task}


def shared_forms(rows_by_task: Dict[str, List[dict]], min_tasks: int = 3) -> Dict[str, List[str]]:
    """Question forms (instruction lines included) asked by at least ``min_tasks`` tasks."""
    tasks_of = defaultdict(set)
    for task, rows in rows_by_task.items():
        for r in rows:
            tasks_of[question_form(r["question"])].add(task)
    return {form: sorted(ts) for form, ts in sorted(tasks_of.items()) if len(ts) >= min_tasks}


def pixel_hash(path: str) -> str:
    from PIL import Image

    with Image.open(path) as img:
        return hashlib.sha1(img.convert("RGB").tobytes()).hexdigest()


def conflicts(root: str, rows_by_task: Dict[str, List[dict]], image_root: str = "images") -> Dict[str, int]:
    """Groups of (question text, image pixels) with more than one answer, and groups shared by tasks."""
    answers, tasks = defaultdict(set), defaultdict(set)
    for task, rows in rows_by_task.items():
        for r in rows:
            key = (r["question"], pixel_hash(os.path.join(root, image_root, r["image"])))
            answers[key].add(r["answer"])
            tasks[key].add(task)
    return {"groups": len(answers), "conflicting": sum(len(a) > 1 for a in answers.values()),
            "cross_task_groups": sum(len(t) > 1 for t in tasks.values())}


def measure(root: str, tasks: Sequence[str], image_tokens: int, tokenizer=None,
            check_pixels: bool = True) -> dict:
    """Every property of the suite written under ``root`` (tasks in training order)."""
    train = {t: read_meta(root, t, "train") for t in tasks}
    test = {t: read_meta(root, t, "test") for t in tasks}
    both = {t: train[t] + test[t] for t in tasks}
    tokenizer = tokenizer or tiny_tokenizer()
    out = {"image_token_share": image_token_share([r for t in tasks for r in both[t]], tokenizer, image_tokens),
           "classifier": classifier_accuracy({t: [r["question"] for r in train[t]] for t in tasks},
                                             {t: [r["question"] for r in test[t]] for t in tasks}),
           "shared_forms": shared_forms(both),
           "majority": {t: 100.0 * Counter(r["answer"] for r in test[t]).most_common(1)[0][1] / len(test[t])
                        for t in tasks}}
    if check_pixels:
        out["conflicts"] = conflicts(root, both)
    return out


def table(props: dict) -> str:
    """The properties as a short plain-text table (what the generator prints)."""
    share, clf = props["image_token_share"], props["classifier"]
    forms = props["shared_forms"]
    widest = max((len(ts) for ts in forms.values()), default=0)
    rows = [("image-token share of every prompt", f"min {share['min']:.3f}, mean {share['mean']:.3f} "
             f"({share['image_tokens']} image, {share['text_tokens_min']}-{share['text_tokens_max']} text tokens)",
             ">= 0.667", share["min"] >= 2 / 3),
            ("text-only task classifier (test)", f"{100 * clf['overall']:.1f} % ("
             + ", ".join(f"{t} {100 * v:.0f}" for t, v in clf["per_task"].items()) + ")",
             "<= 80 %", clf["overall"] <= 0.8),
            ("forms shared by >= 3 tasks", f"{len(forms)} forms, up to {widest} tasks each", ">= 1", len(forms) >= 1)]
    if "conflicts" in props:
        c = props["conflicts"]
        rows.append(("same question + same image, other answer", f"{c['conflicting']} of {c['groups']} groups "
                     f"({c['cross_task_groups']} groups span tasks)", "0", c["conflicting"] == 0))
    w = max(len(r[0]) for r in rows)
    lines = [f"{'property'.ljust(w)}  {'needed':9}  ok  measured"]
    lines += [f"{name.ljust(w)}  {need:9}  {'yes' if ok else 'NO ':3} {value}" for name, value, need, ok in rows]
    lines += [f"  shared form: {form!r}: {', '.join(ts)}" for form, ts in forms.items()]
    return "\n".join(lines)
