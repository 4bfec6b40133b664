"""The synthetic suite generator: deterministic bytes, LLaVA formats, a loadable suite YAML, caching."""
import hashlib
import json
import os

import pytest
from PIL import Image

from llava_dymoe.eval.io import read_records
from llava_dymoe.eval.suite import load_suite
from llava_dymoe.synthetic.__main__ import main
from llava_dymoe.synthetic.generate import generate_suite

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TASKS = ["choice", "read", "classify", "vqa", "ground"]
SCORERS = {"choice": "sqa_letter", "read": "exact", "classify": "contains", "vqa": "exact",
           "ground": "grounding_iou"}


def _digests(root):
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            out[os.path.relpath(path, root)] = hashlib.sha256(open(path, "rb").read()).hexdigest()
    return out


def test_same_seed_same_bytes_other_seed_other_data(tmp_path):
    a = generate_suite(str(tmp_path / "a"), seed=3, n_train=12, n_test=6)
    b = generate_suite(str(tmp_path / "b"), seed=3, n_train=12, n_test=6)
    c = generate_suite(str(tmp_path / "c"), seed=4, n_train=12, n_test=6)
    da, db, dc = _digests(a.root), _digests(b.root), _digests(c.root)
    assert len(da) == 5 * (18 + 6) + 2  # per task 18 PNGs + 6 files; suite.yaml + synthetic.json
    assert da == db
    assert set(dc) == set(da)
    for task in TASKS:  # a different seed changes every task's data and images
        assert dc[f"{task}/train.json"] != da[f"{task}/train.json"]
        assert dc[f"{task}/meta_test.jsonl"] != da[f"{task}/meta_test.jsonl"]
    assert sum(dc[k] != da[k] for k in da if k.endswith(".png")) > 0.8 * 5 * 18


def test_a_task_does_not_depend_on_the_others(tmp_path):
    alone = generate_suite(str(tmp_path / "alone"), seed=0, n_train=5, n_test=3, tasks=["vqa"])
    full = generate_suite(str(tmp_path / "full"), seed=0, n_train=5, n_test=3)
    assert alone.task_names == ["vqa"]
    for name in ("vqa/train.json", "vqa/meta_test.jsonl", "images/vqa/test-00002.png"):
        assert open(alone.path(name), "rb").read() == open(full.path(name), "rb").read()


def test_train_json_is_llava_format(synthetic_suite):
    for task in TASKS:
        rows = json.load(open(synthetic_suite.path(synthetic_suite.tasks[task].train_json)))
        assert len(rows) == 60 and len({r["id"] for r in rows}) == 60
        for r in rows:
            assert set(r) == {"id", "image", "conversations"}
            human, gpt = r["conversations"]
            assert human["from"] == "human" and gpt["from"] == "gpt"
            assert human["value"].startswith("<image>\n") and human["value"].count("<image>") == 1
            assert gpt["value"] and "<image>" not in gpt["value"]
            img = Image.open(os.path.join(synthetic_suite.image_folder, r["image"]))
            assert img.format == "PNG" and img.mode == "RGB" and img.size == (64, 64)


def test_question_reference_and_annotation_files(synthetic_suite):
    for task in TASKS:
        files = synthetic_suite.tasks[task]
        questions = read_records(synthetic_suite.path(files.question_file))
        refs = read_records(synthetic_suite.path(files.reference_file))
        ann = read_records(synthetic_suite.path(files.annotation_file))
        assert len(questions) == len(refs) == len(ann) == 30
        assert all(set(q) == {"question_id", "image", "text"} and "<image>" not in q["text"] for q in questions)
        assert [q["question_id"] for q in questions] == [r["question_id"] for r in refs] == \
            [a["question_id"] for a in ann]
        assert all(a["text"] == q["text"] and a["answer"] == r["answer"] for q, r, a in zip(questions, refs, ann))
        assert all(os.path.isfile(os.path.join(synthetic_suite.image_folder, q["image"])) for q in questions)
        train_images = {r["image"] for r in json.load(open(synthetic_suite.path(files.train_json)))}
        assert not train_images & {q["image"] for q in questions}  # separate image files per split


def test_suite_yaml_loads_and_matches_the_checked_in_file(synthetic_suite):
    suite = load_suite(synthetic_suite.suite_yaml, data_root=synthetic_suite.root)
    assert suite.task_names == TASKS
    for spec in suite.tasks:
        assert spec.scorer == SCORERS[spec.name]
        assert spec.generator == "llava.eval.model_vqa_loader" and spec.conv_mode == "vicuna_v1"
        assert spec.temperature == 0.0 and spec.max_new_tokens <= 32
        for path in (spec.train_json, spec.question_file, spec.reference_file, spec.annotation_file):
            assert os.path.isfile(path), path
        assert os.path.isdir(spec.image_root)
    checked_in = os.path.join(REPO, "eval_suites", "synthetic.yaml")
    assert open(checked_in).read() == open(synthetic_suite.suite_yaml).read()
    assert load_suite(checked_in).task_names == TASKS


def test_cli_and_cache(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main([str(out), "--seed", "1", "--n-train", "4", "--n-test", "2", "--tasks", "ground,choice"]) == 0
    manifest = json.loads(capsys.readouterr().out)
    assert manifest["tasks"] == ["choice", "ground"] and manifest["seed"] == 1  # suite order kept
    stamp = os.path.getmtime(out / "choice" / "train.json")
    again = generate_suite(str(out), seed=1, n_train=4, n_test=2, tasks=["choice", "ground"])
    assert os.path.getmtime(out / "choice" / "train.json") == stamp and again.task_names == ["choice", "ground"]
    other = generate_suite(str(out), seed=1, n_train=5, n_test=2, tasks=["vqa"])  # a different request rewrites
    assert other.task_names == ["vqa"] and not (out / "choice").exists()
    assert len(json.load(open(out / "vqa" / "train.json"))) == 5


@pytest.mark.parametrize("bad", [dict(tasks=["describe"]), dict(tasks=["nope"]), dict(n_train=0)])
def test_bad_requests_are_refused(tmp_path, bad):
    with pytest.raises((ValueError, KeyError)):
        generate_suite(str(tmp_path / "x"), **bad)
