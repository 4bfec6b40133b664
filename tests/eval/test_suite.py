"""Suite YAML loading: the shipped coin.yaml, path resolution and validation errors."""
import os

import pytest
import yaml

from llava_dymoe.eval.suite import load_suite

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COIN = os.path.join(REPO, "eval_suites", "coin.yaml")


def test_coin_suite_order_and_fields():
    s = load_suite(COIN)
    assert s.name == "coin"
    assert s.task_names == ["ScienceQA", "TextVQA", "ImageNet", "GQA", "VizWiz", "Grounding", "VQAv2", "OCR-VQA"]
    scorers = {t.name: t.scorer for t in s.tasks}  # the coin profile by default, the clean one beside it
    assert scorers == {"ScienceQA": "coin_sqa", "TextVQA": "coin_textvqa", "ImageNet": "coin_imagenet",
                       "GQA": "coin_gqa", "VizWiz": "coin_vizwiz", "Grounding": "coin_grounding",
                       "VQAv2": "coin_vqav2", "OCR-VQA": "coin_ocrvqa"}
    clean = {t.name: t.clean_scorer for t in s.tasks}
    assert clean == {"ScienceQA": "sqa_letter", "TextVQA": "vqa_soft", "ImageNet": "contains", "GQA": "exact",
                     "VizWiz": "exact", "Grounding": "grounding_iou", "VQAv2": "vqa_soft", "OCR-VQA": "exact"}
    assert [t.name for t in s.tasks if t.is_grounding] == ["Grounding"]
    for t in s.tasks:
        assert t.conv_mode == "vicuna_v1" and t.temperature == 0.0 and t.max_new_tokens > 0
        assert t.train_json.startswith("Instructions_Original/") and t.train_json.endswith("/train.json")
        assert t.generator.startswith("llava.eval.model_vqa")
        assert t.image_root == "cl_dataset"
    assert s.task("ScienceQA").generator == "llava.eval.model_vqa_science"
    assert s.task("ScienceQA").question_format == "science_json"
    assert s.task("TextVQA").question_format == "jsonl"
    assert s.data_root is None  # paths stay relative until a data root is given


def test_coin_suite_resolves_paths(tmp_path):
    s = load_suite(COIN, data_root=str(tmp_path))
    t = s.task("GQA")
    assert s.data_root == str(tmp_path)
    assert t.train_json == os.path.join(str(tmp_path), "Instructions_Original/GQA/train.json")
    assert t.image_root == os.path.join(str(tmp_path), "cl_dataset")
    assert t.scoring_file == t.reference_file and t.reference_file.startswith(str(tmp_path))


def _suite(tmp_path, tasks, **top):
    doc = {"name": "mini", "tasks": tasks, **top}
    p = tmp_path / "suite.yaml"
    p.write_text(yaml.safe_dump(doc))
    return str(p)


def _task(name="A", **kw):
    t = {"name": name, "train_json": f"{name}/train.json", "question_file": f"{name}/q.jsonl",
         "annotation_file": f"{name}/test.json", "image_root": "img",
         "generator": "llava.eval.model_vqa_loader", "scorer": "exact"}
    t.update(kw)
    return t


def test_defaults_absolute_paths_and_scoring_file(tmp_path):
    a = {k: v for k, v in _task("A").items() if k != "image_root"}  # falls back to defaults
    p = _suite(tmp_path, [a, _task("B", image_root="/abs/img", max_new_tokens=16)],
               defaults={"conv_mode": "llava_v1", "image_root": "shared"})
    s = load_suite(p, data_root="/root")
    a, b = s.tasks
    assert a.conv_mode == "llava_v1" and a.image_root == "/root/shared"
    assert b.image_root == "/abs/img" and b.max_new_tokens == 16
    assert a.scoring_file == "/root/A/test.json"  # no reference_file: annotation file


@pytest.mark.parametrize("tasks,top,match", [
    ([_task("A"), _task("A")], {}, r"task 'A': field 'name' is duplicated"),
    ([_task("A", scorer="bleu")], {}, r"task 'A': field 'scorer' = 'bleu' is not a known scorer"),
    ([_task("A", generator="llava.eval.run_llava")], {}, r"task 'A': field 'generator'"),
    ([{k: v for k, v in _task("A").items() if k != "question_file"}], {}, r"task 'A': missing field 'question_file'"),
    ([{k: v for k, v in _task("A").items() if k != "name"}], {}, r"task #1: missing field 'name'"),
    ([_task("A", scorrer="exact")], {}, r"task 'A': unknown field\(s\) scorrer"),
    ([_task("A", max_new_tokens=0)], {}, r"task 'A': field 'max_new_tokens'"),
    ([_task("A", temperature=-1)], {}, r"task 'A': field 'temperature'"),
    ([_task("A", train_json="")], {}, r"task 'A': missing field 'train_json'"),
    ([], {}, r"'tasks' must be a non-empty list"),
    ([_task("A")], {"order": 1}, r"unknown top-level key"),
    (["A"], {}, r"task #1: expected a mapping"),
])
def test_validation_errors(tmp_path, tasks, top, match):
    p = _suite(tmp_path, tasks, **top)
    with pytest.raises(ValueError, match=match) as info:
        load_suite(p)
    assert p in str(info.value)


def test_bad_yaml_and_missing_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: x\ntasks: [\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_suite(str(p))
    with pytest.raises(FileNotFoundError):
        load_suite(str(tmp_path / "none.yaml"))
    with pytest.raises(KeyError, match="no task 'Z'"):
        load_suite(COIN).task("Z")
