"""Every answer of the synthetic suite is correct by construction.

The checks below recompute each answer from the metadata JSONL alone (scene + structured
query), with their own code: nothing here calls the generator's answer functions.  The
metadata is in turn checked against the PNG pixels, so a rendering bug cannot hide behind
consistent metadata.  Each reference scores 1.0 with its task's scorer and a wrong answer 0.
"""
import json
import os
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from llava_dymoe.eval.scorers import get

TASKS = ("choice", "read", "classify", "vqa", "ground")
NUMBERS = ["zero", "one", "two", "three", "four"]


def _meta(suite, task):
    rows = []
    for split in ("train", "test"):
        with open(suite.path(f"{task}/meta_{split}.jsonl")) as f:
            rows += [json.loads(line) for line in f]
    return rows


def _kind(o):
    return f"{o['colour']} {o['shape']}"


def _only(objects, key, value):
    hits = [o for o in objects if o[key] == value]
    assert len(hits) == 1, f"{key}={value!r} must pick exactly one object, got {hits}"
    return hits[0]


def _box(o, scene):
    c, m, s = scene["cell"], scene["margin"], scene["image_size"]
    px = (o["col"] * c + m, o["row"] * c + m, (o["col"] + 1) * c - m, (o["row"] + 1) * c - m)
    return px, "[" + ", ".join("%.2f" % (v / s) for v in px) + "]"


def recompute(task, row):
    """The answer of one metadata row, from its scene and query only."""
    scene, query = row["scene"], row["query"]
    objs = scene["objects"]
    for o in objs:
        o["kind"] = _kind(o)
    if task == "choice":
        key, other = ("colour", "shape") if query["type"] == "shared_colour" else ("shape", "colour")
        assert 2 <= len(objs) <= 3
        shared = {o[key] for o in objs}
        assert len(shared) == 1, "every object has the asked attribute in common"
        assert len({o[other] for o in objs}) == len(objs), "and differs in the other one"
        fixed = {"shared_shape": ["circle", "square", "triangle", "cross"],
                 "shared_colour": ["blue", "green", "red", "yellow"]}
        assert query["options"] == fixed[query["type"]], "options are listed in one fixed order per question type"
        for i, opt in enumerate(query["options"]):  # the question lists the options in order
            assert f"\n{'ABCD'[i]}. {opt}\n" in row["question"]
        assert row["question"].startswith(f"Which {key} are the objects")
        return "ABCD"[query["options"].index(shared.pop())]
    if task == "read":
        return scene["text"]["word"]
    if task == "classify":
        counts = Counter(o["kind"] for o in objs).most_common()
        assert len(counts) == 1 or counts[0][1] > counts[1][1], "the main object must be a strict majority"
        return counts[0][0]
    if task == "vqa":
        if query["type"] == "count_colour":
            assert query["given"] in row["question"]
            return NUMBERS[sum(o["colour"] == query["given"] for o in objs)]
        if query["type"] == "colour_of_shape":
            return _only(objs, "shape", query["given"])["colour"]
        return _only(objs, "colour", query["given"])["shape"]
    if task == "ground":
        assert query["given"] in row["question"]
        assert len(objs) == 1 and not scene["text"] and not scene["letters"], "a grounding scene has one object"
        return _box(_only(objs, "kind", query["given"]), scene)[1]
    raise AssertionError(task)


@pytest.mark.parametrize("task", TASKS)
def test_answers_recomputed_from_metadata(synthetic_suite, task):
    rows = _meta(synthetic_suite, task)
    assert len(rows) == 90
    for row in rows:
        assert recompute(task, row) == row["answer"], row["id"]
    # the files agree with the metadata
    train = {r["id"]: r for r in json.load(open(synthetic_suite.path(f"{task}/train.json")))}
    refs = {r["question_id"]: r["answer"] for r in map(json.loads, open(synthetic_suite.path(f"{task}/references.jsonl")))}
    for row in rows:
        if row["split"] == "train":
            conv = train[row["id"]]["conversations"]
            assert conv[0]["value"] == "<image>\n" + row["question"] and conv[1]["value"] == row["answer"]
        else:
            assert refs[row["id"]] == row["answer"]


def _colour_name(rgb):
    r, g, b = (int(v) for v in rgb)
    if r > 150 and g > 150 and b < 100:
        return "yellow"
    return {0: "red", 1: "green", 2: "blue"}[int(np.argmax([r, g, b]))]


@pytest.mark.parametrize("task", TASKS)
def test_metadata_matches_the_pixels(synthetic_suite, task):
    for row in _meta(synthetic_suite, task)[::3]:
        scene = row["scene"]
        img = np.asarray(Image.open(os.path.join(synthetic_suite.image_folder, row["image"])).convert("RGB"))
        c = scene["cell"]
        empty_colours = set()
        text_cells = set()
        if scene["text"]:
            t = scene["text"]
            text_cells = {(t["row"], t["col"] + i) for i in range(len(t["word"]))}
        filled = {(o["row"], o["col"]): o for o in scene["objects"]}
        for r in range(scene["grid"]):
            for col in range(scene["grid"]):
                patch = img[r * c:(r + 1) * c, col * c:(col + 1) * c]
                if (r, col) in filled:
                    o = filled[(r, col)]
                    assert _colour_name(patch[c // 2, c // 2]) == o["colour"], (row["id"], o)
                    ink = np.argwhere((patch != patch[0, 0]).any(axis=2))  # the cell corner is background
                    (x1, y1, x2, y2), _ = _box(o, scene)
                    assert (ink[:, 1].min() + col * c, ink[:, 0].min() + r * c) == (x1, y1)
                    assert (ink[:, 1].max() + col * c + 1, ink[:, 0].max() + r * c + 1) == (x2, y2)
                elif (r, col) in text_cells:
                    dark = (patch.sum(axis=2) < 100).sum()
                    assert 10 < dark < c * c // 2, (row["id"], r, col)  # one glyph of black ink
                else:
                    assert (patch == patch[0, 0]).all(), (row["id"], r, col)  # empty cell
                    empty_colours.add(tuple(patch[0, 0]))
        assert len(empty_colours) <= 1  # one background colour


def _other_class(ref):
    """A class name sharing no word with ``ref``."""
    return next(c for c in ("green square", "red circle", "blue triangle") if not set(c.split()) & set(ref.split()))


WRONG = {
    "choice": lambda ref: "ABCD"[("ABCD".index(ref) + 1) % 4],
    "read": lambda ref: "cat" if ref != "cat" else "dog",
    "classify": _other_class,
    "vqa": lambda ref: "purple",
    "ground": lambda ref: "[0.60, 0.60, 0.99, 0.99]" if ref[1] == "0" and ref[2:4] in (".0", ".2") else
    "[0.01, 0.01, 0.24, 0.24]",
}


@pytest.mark.parametrize("task", TASKS)
def test_each_reference_scores_one_and_a_wrong_answer_zero(synthetic_suite, task):
    scorer = get({"choice": "sqa_letter", "read": "exact", "classify": "contains", "vqa": "exact",
                  "ground": "grounding_iou"}[task])
    refs = [json.loads(line)["answer"] for line in open(synthetic_suite.path(f"{task}/references.jsonl"))]
    assert all(scorer(ref, ref) == 1.0 for ref in refs)
    for ref in refs:
        wrong = WRONG[task](ref)
        assert wrong != ref and scorer(wrong, ref) == 0.0, (ref, wrong)


def test_answers_are_spread_out(synthetic_suite):
    """No task is solved by its majority answer: the share of the most frequent answer is bounded."""
    bound = {"choice": 0.45, "read": 0.3, "classify": 0.3, "vqa": 0.35, "ground": 0.3}
    for task, limit in bound.items():
        answers = [row["answer"] for row in _meta(synthetic_suite, task)]
        assert Counter(answers).most_common(1)[0][1] / len(answers) < limit, task
