"""The CoIN-shaped synthetic suite: determinism, CoIN's instructions, its three measured properties.

* image tokens are at least two thirds of every prompt (template included, the tiny tokenizer, the
  16x16-patch tiny CLIP that LLaVA splices in place of ``<image>``);
* the prompt does not name the task (a text-only nearest-centroid classifier names at most 80 %
  of the test questions' tasks; at least three tasks share instruction and question form);
* every answer is determined by image plus text: recomputed here from the metadata with this
  module's own code, checked against the pixels, and no two samples with the same question and the
  same image pixels disagree.
"""
import hashlib
import json
import os
import re
from collections import Counter, defaultdict

import numpy as np
import pytest
from PIL import Image

from llava_dymoe.eval.scorers import get
from llava_dymoe.eval.suite import load_suite
from llava_dymoe.synthetic.generate import generate_suite
from llava_dymoe.synthetic.properties import read_meta

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TASKS = ["science", "textvqa", "imagenet", "gqa", "vizwiz", "grounding", "vqav2", "ocrvqa"]
SCORERS = {"science": "sqa_letter", "imagenet": "contains", "grounding": "grounding_iou"}
SHORT = "Answer the question using a single word or phrase."
LETTER = "Answer with the option's letter from the given choices directly."
VIZWIZ = "When the provided information is insufficient, respond with 'Unanswerable'."
BOX = "Please provide the bounding box coordinate of the region this sentence describes: "
NUMBERS = ["zero", "one", "two", "three", "four"]
#: the cover colour of each genre, as the images show it (this module's own copy)
COVERS = {"animal": (245, 205, 160), "plant": (190, 232, 190), "vehicle": (188, 204, 245), "fruit": (245, 235, 150)}
N_TRAIN, N_TEST = 48, 40


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    return generate_suite(str(tmp_path_factory.mktemp("coin_shaped")), seed=0, n_train=N_TRAIN, n_test=N_TEST,
                          suite="coin_shaped")


def _meta(suite, task):
    return read_meta(suite.root, task, "train") + read_meta(suite.root, task, "test")


def _digests(root):
    return {os.path.relpath(os.path.join(d, n), root): hashlib.sha256(open(os.path.join(d, n), "rb").read()).hexdigest()
            for d, _, files in os.walk(root) for n in files}


def test_same_seed_same_bytes_and_tasks_independent(tmp_path):
    a = generate_suite(str(tmp_path / "a"), seed=2, n_train=6, n_test=3, suite="coin_shaped")
    b = generate_suite(str(tmp_path / "b"), seed=2, n_train=6, n_test=3, suite="coin_shaped")
    c = generate_suite(str(tmp_path / "c"), seed=3, n_train=6, n_test=3, suite="coin_shaped")
    alone = generate_suite(str(tmp_path / "alone"), seed=2, n_train=6, n_test=3, suite="coin_shaped",
                           tasks=["vizwiz"])
    da, dc = _digests(a.root), _digests(c.root)
    assert a.task_names == TASKS and len(da) == 8 * (9 + 6) + 2
    assert da == _digests(b.root)
    assert all(dc[f"{t}/meta_train.jsonl"] != da[f"{t}/meta_train.jsonl"] for t in TASKS)
    for name in ("vizwiz/train.json", "vizwiz/meta_test.jsonl", "images/vizwiz/test-00002.png"):
        assert open(alone.path(name), "rb").read() == open(a.path(name), "rb").read()
    assert json.load(open(a.path("synthetic.json")))["name"] == "coin_shaped"


def test_suite_yaml_loads_names_scorers_and_matches_the_checked_in_file(suite):
    checked_in = os.path.join(REPO, "eval_suites", "coin_shaped.yaml")
    assert open(checked_in).read() == open(suite.suite_yaml).read()
    loaded = load_suite(suite.suite_yaml, data_root=suite.root)
    assert loaded.task_names == TASKS == load_suite(checked_in).task_names
    for spec in loaded.tasks:
        get(spec.scorer)  # a registered scorer
        assert spec.scorer == SCORERS.get(spec.name, "exact")
        assert spec.generator == "llava.eval.model_vqa_loader" and spec.max_new_tokens <= 32
        assert all(os.path.isfile(p) for p in (spec.train_json, spec.question_file, spec.reference_file))


def test_coin_instructions(suite):
    first = {t: _meta(suite, t) for t in TASKS}
    for r in first["science"]:
        assert r["question"].endswith("\n" + LETTER) and "\nA. " in r["question"]
    for t in ("textvqa", "gqa", "vqav2", "ocrvqa"):
        assert all(r["question"].count("\n") == 1 and r["question"].endswith("\n" + SHORT) for r in first[t]), t
    assert all(r["question"] == "What is the object in the image?\n" + SHORT for r in first["imagenet"])
    assert all(r["question"].endswith(f"?\n{VIZWIZ}\n{SHORT}") for r in first["vizwiz"])
    assert all(r["question"].startswith(BOX) for r in first["grounding"])
    ocr = Counter(r["question"].split("\n")[0] for r in first["ocrvqa"])
    assert {"Who wrote this book?", "What is the title of this book?", "What is the genre of this book?"} <= set(ocr)
    assert Counter(r["answer"] for r in first["vizwiz"])["unanswerable"] >= 0.15 * len(first["vizwiz"])


# ----------------------------------------------------------------------------- image tokens
def test_image_tokens_are_two_thirds_of_every_prompt(suite):
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModel

    from llava_dymoe.synthetic.properties import image_token_share, tiny_tokenizer
    from llava_dymoe.synthetic.suites import get_suite
    from llava_dymoe.tiny import GEOMETRIES

    spec = get_suite("coin_shaped")
    size, patch = GEOMETRIES["coin_shaped"]
    assert (size, size // patch) == (spec.image_size, spec.patches)
    # the tiny CLIP of that geometry gives 16x16 patch features; LLaVA's select_feature "patch" drops CLS
    cfg = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           image_size=size, patch_size=patch)
    with torch.no_grad():
        hidden = CLIPVisionModel(cfg)(torch.zeros(1, 3, size, size), output_hidden_states=True).hidden_states[-2]
    n_image = hidden.shape[1] - 1
    assert n_image == 256
    rows = [r for t in TASKS for r in _meta(suite, t)]
    share = image_token_share(rows, tiny_tokenizer(), n_image)
    assert share["min"] >= 2 / 3, share
    assert share["text_tokens_max"] <= 97 and share["mean"] > 0.75, share


# ----------------------------------------------------------------------------- the prompt does not name the task
def test_text_alone_does_not_name_the_task():
    from llava_dymoe.synthetic.properties import classifier_accuracy, question_form
    from llava_dymoe.synthetic.suites import get_suite
    from llava_dymoe.synthetic.writer import draw

    tasks = get_suite("coin_shaped").tasks  # questions only (no images): the generator's default sizes
    train = {t.name: [s.question for s in draw(t, 0, "train", 1000, 96)] for t in tasks}
    test = {t.name: [s.question for s in draw(t, 0, "test", 100, 96)] for t in tasks}
    clf = classifier_accuracy(train, test)
    assert clf["overall"] <= 0.80, clf
    assert clf["per_task"]["gqa"] < 0.6 and clf["per_task"]["vqav2"] < 0.6, clf
    forms = defaultdict(set)
    for task, qs in train.items():
        for q in qs:
            forms[question_form(q)].add(task)
    colour = forms["What colour is the {shape}?\n" + SHORT]
    count = forms["How many {colour} objects are there?\n" + SHORT]
    assert {"textvqa", "gqa", "vqav2", "ocrvqa"} <= colour and {"textvqa", "gqa", "vqav2"} <= count


def test_properties_printed_by_the_generator(tmp_path, capsys):
    from llava_dymoe.synthetic.__main__ import main

    assert main([str(tmp_path / "cli"), "--suite", "coin_shaped", "--n-train", "8", "--n-test", "4"]) == 0
    out = capsys.readouterr().out
    manifest = json.loads(out[:out.index("\n}\n") + 2])
    assert manifest["tasks"] == TASKS and manifest["name"] == "coin_shaped" and manifest["image_size"] == 96
    for needle in ("image-token share of every prompt", "text-only task classifier", "forms shared by >= 3 tasks",
                   "same question + same image, other answer"):
        assert needle in out


# ----------------------------------------------------------------------------- answers from image plus text
def _kind(o):
    return f"{o['colour']} {o['shape']}"


def _only(objs, key, value):
    hits = [o for o in objs if o[key] == value]
    assert len(hits) == 1, (key, value, objs)
    return hits[0]


def _board_answer(query, scene, question):
    objs, kind = scene["objects"], query["type"]
    if kind == "read":
        assert question.startswith("What is written")
        return scene["text"]["word"]
    if kind == "count_colour":
        assert f"How many {query['given']} objects" in question
        return NUMBERS[sum(o["colour"] == query["given"] for o in objs)]
    if kind == "colour_of_shape":
        assert question.startswith(f"What colour is the {query['given']}?")
        return _only(objs, "shape", query["given"])["colour"]
    if kind == "shape_of_colour":
        assert question.startswith(f"What shape is the {query['given']} object?")
        return _only(objs, "colour", query["given"])["shape"]
    if kind == "is_there":
        assert question.startswith(f"Is there a {query['given']}?")
        return "yes" if any(_kind(o) == query["given"] for o in objs) else "no"
    raise AssertionError(kind)


def recompute(task, row):
    """The answer of one metadata row, from its scene and query only."""
    scene, query, q = row["scene"], row["query"], row["question"]
    objs = scene["objects"]
    domain = {"vqav2": "photo", "vizwiz": "degraded", "ocrvqa": "cover"}.get(task, "plain")
    assert scene["domain"] == domain
    if task == "science":
        key = "colour" if query["type"] == "shared_colour" else "shape"
        (shared,) = {o[key] for o in objs}
        return "ABCD"[query["options"].index(shared)]
    if task == "imagenet":
        counts = Counter(_kind(o) for o in objs).most_common()
        assert len(counts) == 1 or counts[0][1] > counts[1][1]
        return counts[0][0]
    if task == "grounding":
        (o,) = objs
        assert q == f"{BOX}the {_kind(o)}."
        c, m, s = scene["cell"], scene["margin"], scene["image_size"]
        px = (o["col"] * c + m, o["row"] * c + m, (o["col"] + 1) * c - m, (o["row"] + 1) * c - m)
        return "[" + ", ".join("%.2f" % (v / s) for v in px) + "]"
    if task == "vizwiz" and scene["covered"]:
        return "unanswerable"
    if task == "ocrvqa":
        first = q.split("\n")[0]
        if first == "Who wrote this book?":
            return scene["author"]
        if first == "What is the title of this book?":
            return scene["text"]["word"]
        if first == "What is the genre of this book?":
            return scene["genre"]
        assert len(objs) == 1 and 1 <= objs[0]["row"] <= 2
    return _board_answer(query, scene, q)


@pytest.mark.parametrize("task", TASKS)
def test_answers_recomputed_from_metadata(suite, task):
    rows = _meta(suite, task)
    assert len(rows) == N_TRAIN + N_TEST
    refs = {r["question_id"]: r["answer"] for r in map(json.loads, open(suite.path(f"{task}/references.jsonl")))}
    for row in rows:
        assert recompute(task, row) == row["answer"], row["id"]
        if row["split"] == "test":
            assert refs[row["id"]] == row["answer"]
    assert Counter(r["answer"] for r in rows).most_common(1)[0][1] < 0.5 * len(rows)


def _pixels(suite, row):
    return np.asarray(Image.open(os.path.join(suite.image_folder, row["image"])).convert("RGB")).astype(int)


def test_the_domains_are_visible_in_the_pixels(suite):
    for row in _meta(suite, "ocrvqa")[:20]:  # the cover colour is the genre's; title above, author below
        img, scene = _pixels(suite, row), row["scene"]
        assert tuple(img[scene["cell"] + 1, 1]) == COVERS[scene["genre"]] or scene["objects"][0]["col"] == 0
        c = scene["cell"]
        assert (img[:c].sum(axis=2) < 100).sum() > 20 and (img[3 * c:].sum(axis=2) < 100).sum() > 20
    for row in _meta(suite, "vqav2")[:20]:  # sky above the horizon, floor below
        img = _pixels(suite, row)
        assert tuple(img[0, 0]) == (200, 222, 245) and tuple(img[-1, -1]) == (196, 186, 170)
    for row in _meta(suite, "vizwiz"):  # a covered lens is dark, a readable image is not; both are blurred
        img = _pixels(suite, row)
        assert (img.mean() < 100) == row["scene"]["covered"], row["id"]
        assert row["scene"]["blur"] >= 1
    for row in _meta(suite, "gqa")[:20]:  # the plain board's background (an object's margin leaves the corner free)
        assert tuple(_pixels(suite, row)[0, 0]) == (235, 235, 235)


def test_same_question_same_image_same_answer(suite):
    answers, by_scene = defaultdict(set), defaultdict(set)
    for task in TASKS:
        for row in _meta(suite, task):
            answers[(row["question"], hashlib.sha1(_pixels(suite, row).tobytes()).hexdigest())].add(row["answer"])
            by_scene[(row["question"], json.dumps(row["scene"], sort_keys=True))].add(row["answer"])
    assert all(len(a) == 1 for a in answers.values())  # same question, same pixels
    assert all(len(a) == 1 for a in by_scene.values())  # same question, same scene metadata
    # the shared forms do meet across tasks with different images: the text alone leaves the answer open
    by_text = defaultdict(set)
    for (question, _), a in answers.items():
        by_text[question] |= a
    assert sum(len(a) > 1 for q, a in by_text.items() if re.match(r"What colour is the \w+\?", q)) >= 3


def test_base_mixture_uses_the_suite_answer_words():
    from llava_dymoe.synthetic.suites import get_suite
    from llava_dymoe.synthetic.writer import draw

    spec = get_suite("coin_shaped")
    words = lambda samples: {w for s in samples for w in re.findall(r"[a-z]+", s.answer.lower())}
    suite_words = words([s for t in spec.tasks for s in draw(t, 0, "train", 200, 96)])
    base_words = words([s for t in spec.base_tasks for s in draw(t, 0, "train", 200 * spec.mix_weights[t.name], 96)])
    assert suite_words <= base_words, suite_words - base_words
    assert not {t.name for t in spec.base_tasks} & {t.name for t in spec.tasks}


def test_tiny_geometry_option(monkeypatch, tmp_path):
    from types import SimpleNamespace

    from llava_dymoe import tiny

    seen = []
    monkeypatch.setattr(tiny, "build_tiny_llava", lambda out, seed, sizes, overwrite: seen.append(sizes) or
                        SimpleNamespace(llm="l", clip="c", seed=seed))
    assert tiny.main([str(tmp_path), "--geometry", "coin_shaped"]) == 0
    assert tiny.main([str(tmp_path)]) == 0  # the default is unchanged
    assert (seen[0].image_size, seen[0].patch_size) == (96, 6)
    assert (seen[1].image_size, seen[1].patch_size) == (32, 8)


def test_the_default_base_request_is_unchanged():
    """The cache key of the default base (demo, study) has no ``mixture``: existing base folders are reused."""
    from dataclasses import asdict

    from llava_dymoe.synthetic.base import MIX_WEIGHTS, BaseConfig, base_request, default_sizes

    sizes = default_sizes(64)
    default = base_request(BaseConfig(), sizes, True)
    assert "mixture" not in default["config"] and default["mix_weights"] == MIX_WEIGHTS
    assert set(default["config"]) == set(asdict(BaseConfig())) - {"mixture"}
    coin = base_request(BaseConfig(mixture="coin_shaped", image_size=96), default_sizes(96, 16), True)
    assert coin["config"]["mixture"] == "coin_shaped" and coin["sizes"]["patch_size"] == 6
    assert set(coin["mix_weights"]) >= set(MIX_WEIGHTS) | {"coverread", "photodescribe", "blurdescribe", "rowhas"}
