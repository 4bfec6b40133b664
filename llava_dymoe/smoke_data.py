"""A small LLaVA-format dataset (real PNG files + conversation JSON) for smoke runs.

Each image is a solid background with one coloured square; the single-turn instruction asks
for the square's colour and the answer is ``"The square is <colour>."``.  The files follow
LLaVA's formats exactly (llava-integration.md §1.8):

* ``train.json``: a JSON list of ``{"id", "image", "conversations": [human, gpt]}``;
* ``questions.jsonl``: one ``{"question_id", "image", "text"}`` per line, what
  ``llava.eval.model_vqa_loader`` reads;
* ``answers_ref.jsonl``: ``{"question_id", "answer"}`` for scoring.

The continual suite of the demo is a different, richer generator; this one exists so that
``make demo``, the tests and the benchmarks can exercise the upstream stack quickly.
"""
from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from typing import Dict, List

COLOURS: Dict[str, tuple] = {
    "red": (220, 30, 30), "green": (30, 180, 60), "blue": (40, 60, 220), "yellow": (235, 220, 40),
}
QUESTION = "What color is the square in the image?"


@dataclass
class SmokeData:
    root: str
    train_json: str
    image_folder: str
    questions: str
    references: str
    n_train: int
    n_test: int


def _image(colour: str, rng: random.Random, size: int):
    from PIL import Image, ImageDraw

    w = size + rng.choice([0, 8, 16])  # non-square images exercise LLaVA's 'pad' aspect path
    h = size + rng.choice([0, 8])
    img = Image.new("RGB", (w, h), (128, 128, 128))
    side = max(4, min(w, h) // 2)
    x0, y0 = rng.randrange(0, w - side + 1), rng.randrange(0, h - side + 1)
    ImageDraw.Draw(img).rectangle([x0, y0, x0 + side - 1, y0 + side - 1], fill=COLOURS[colour])
    return img


def write_smoke_dataset(root: str, n_train: int = 32, n_test: int = 8, seed: int = 0,
                        image_size: int = 32) -> SmokeData:
    """Write the dataset under ``root`` (deterministic for ``seed``) and return its paths."""
    rng = random.Random(seed)
    img_dir = os.path.join(root, "images")
    os.makedirs(img_dir, exist_ok=True)
    names = sorted(COLOURS)
    train: List[dict] = []
    questions, refs = [], []
    for i in range(n_train + n_test):
        colour = names[i % len(names)]
        fname = f"{i:05d}.png"
        _image(colour, rng, image_size).save(os.path.join(img_dir, fname))
        answer = f"The square is {colour}."
        if i < n_train:
            train.append({"id": f"smoke-{i}", "image": fname, "conversations": [
                {"from": "human", "value": "<image>\n" + QUESTION},
                {"from": "gpt", "value": answer}]})
        else:
            qid = f"smoke-q{i - n_train}"
            questions.append({"question_id": qid, "image": fname, "text": QUESTION})
            refs.append({"question_id": qid, "answer": answer})
    data = SmokeData(root, os.path.join(root, "train.json"), img_dir,
                     os.path.join(root, "questions.jsonl"), os.path.join(root, "answers_ref.jsonl"),
                     n_train, n_test)
    with open(data.train_json, "w") as f:
        json.dump(train, f, indent=1)
    for path, rows in ((data.questions, questions), (data.references, refs)):
        with open(path, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    return data
