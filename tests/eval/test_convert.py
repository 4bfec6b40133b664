"""CoIN test JSON -> upstream question files + references, on fixtures written here."""
import json

import pytest
import yaml

from llava_dymoe import cli
from llava_dymoe.eval import convert
from llava_dymoe.eval.io import read_records
from llava_dymoe.eval.scorers import score_file
from llava_dymoe.eval.suite import load_suite

VQA = [
    {"question_id": 11, "image": "TextVQA/train_images/a.jpg", "text": "<image>\nWhat brand?\nAnswer briefly.",
     "answer": "nike"},
    {"question_id": 12, "image": "TextVQA/train_images/b.jpg", "text": "What number?", "answer": "7"},
]
SQA = [{"question_id": "sqa1", "image": "ScienceQA/1.png",
        "text": "Which is a mammal?\nA. cat\nB. fish\nAnswer with the option's letter.", "answer": "A"},
       {"question_id": "sqa2", "text": "Text-only?\nA. yes\nB. no", "answer": "B"}]
GROUNDING = [{"question_id": 5, "image": "COCO2014/train2014/x.jpg", "text": "Where is the dog?",
              "answer": "[0.10, 0.20, 0.50, 0.60]", "answer_bbox": "[0.1, 0.2, 0.5, 0.6]", "size": [640, 480]}]


def _write(path, obj):
    path.write_text(json.dumps(obj))
    return str(path)


def test_vqa_questions_and_references(tmp_path):
    test = _write(tmp_path / "val.json", VQA)
    res = convert.convert_coin_file(test, str(tmp_path / "out/q.jsonl"), str(tmp_path / "out/refs.jsonl"))
    assert res["n"] == 2
    lines = (tmp_path / "out/q.jsonl").read_text().splitlines()
    assert [json.loads(x) for x in lines] == [
        {"question_id": 11, "image": "TextVQA/train_images/a.jpg", "text": "What brand?\nAnswer briefly."},
        {"question_id": 12, "image": "TextVQA/train_images/b.jpg", "text": "What number?"}]
    assert read_records(str(tmp_path / "out/refs.jsonl")) == [{"question_id": 11, "answer": "nike"},
                                                               {"question_id": 12, "answer": "7"}]


def test_science_questions(tmp_path):
    test = _write(tmp_path / "test.json", SQA)
    convert.convert_coin_file(test, str(tmp_path / "q.json"), str(tmp_path / "r.jsonl"),
                              question_format="science_json")
    qs = json.loads((tmp_path / "q.json").read_text())
    assert isinstance(qs, list) and qs[0] == {
        "id": "sqa1", "image": "ScienceQA/1.png",
        "conversations": [{"from": "human", "value": SQA[0]["text"]}, {"from": "gpt", "value": "A"}]}
    assert "image" not in qs[1]
    # end to end with an upstream-style answers file
    ans = tmp_path / "merge.jsonl"
    ans.write_text("".join(json.dumps({"question_id": q, "prompt": "", "text": t, "answer_id": "",
                                       "model_id": "m", "metadata": {}}) + "\n"
                           for q, t in [("sqa1", "A"), ("sqa2", "A")]))
    assert score_file("sqa_letter", str(ans), str(tmp_path / "r.jsonl"))["score"] == 50.0


def test_grounding_references_are_boxes(tmp_path):
    test = _write(tmp_path / "test.json", GROUNDING)
    convert.convert_coin_file(test, str(tmp_path / "q.jsonl"), str(tmp_path / "r.jsonl"), grounding=True)
    ref = read_records(str(tmp_path / "r.jsonl"))[0]
    assert ref == {"question_id": 5, "answer": [0.1, 0.2, 0.5, 0.6], "size": [640, 480]}
    ans = tmp_path / "m.jsonl"
    ans.write_text(json.dumps({"question_id": 5, "text": "[0.1, 0.2, 0.5, 0.62]"}) + "\n")
    assert score_file("grounding_iou", str(ans), str(tmp_path / "r.jsonl"))["score"] == 100.0
    bad = _write(tmp_path / "bad.json", [{**GROUNDING[0], "answer_bbox": "somewhere"}])
    with pytest.raises(ValueError, match="cannot read a box"):
        convert.convert_coin_file(bad, str(tmp_path / "q2.jsonl"), str(tmp_path / "r2.jsonl"), grounding=True)


def test_official_answers_textvqa_and_vqav2(tmp_path):
    test = _write(tmp_path / "val.json", VQA)
    textvqa = _write(tmp_path / "TextVQA_0.5.1_val.json",
                     {"data": [{"question_id": 11, "answers": ["nike"] * 7 + ["adidas"] * 3}]})
    convert.convert_coin_file(test, str(tmp_path / "q.jsonl"), str(tmp_path / "r.jsonl"), official_answers=textvqa)
    refs = read_records(str(tmp_path / "r.jsonl"))
    assert refs[0]["answer"] == ["nike"] * 7 + ["adidas"] * 3 and refs[1]["answer"] == "7"
    vqav2 = _write(tmp_path / "v2.json", {"annotations": [{"question_id": 12, "answers": [{"answer": "seven"}] * 10}]})
    assert convert.load_official_answers(vqav2) == {"12": ["seven"] * 10}


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="record 2: missing field"):
        convert.load_coin_test(_write(tmp_path / "a.json", [VQA[0], {"question_id": 3, "text": "x"}]))
    with pytest.raises(ValueError, match="appears twice"):
        convert.load_coin_test(_write(tmp_path / "b.json", [VQA[0], VQA[0]]))
    with pytest.raises(ValueError, match="no records"):
        convert.load_coin_test(_write(tmp_path / "c.json", []))
    with pytest.raises(ValueError, match="unknown question format"):
        convert.convert_coin_file(_write(tmp_path / "d.json", VQA), str(tmp_path / "q"), str(tmp_path / "r"),
                                  question_format="tsv")


def test_convert_suite_via_cli(tmp_path, capsys):
    root = tmp_path / "data"
    (root / "SQA").mkdir(parents=True)
    (root / "G").mkdir()
    _write(root / "SQA/test.json", SQA)
    _write(root / "G/test.json", GROUNDING)
    suite = {"name": "mini", "defaults": {"image_root": "img"}, "tasks": [
        {"name": "ScienceQA", "train_json": "SQA/train.json", "annotation_file": "SQA/test.json",
         "question_file": "conv/SQA/q.json", "reference_file": "conv/SQA/r.jsonl",
         "generator": "llava.eval.model_vqa_science", "scorer": "sqa_letter"},
        {"name": "Grounding", "train_json": "G/train.json", "annotation_file": "G/test.json",
         "question_file": "conv/G/q.jsonl", "reference_file": "conv/G/r.jsonl",
         "official_answers": "G/missing.json", "generator": "llava.eval.model_vqa", "scorer": "grounding_iou"}]}
    sp = tmp_path / "suite.yaml"
    sp.write_text(yaml.safe_dump(suite))
    assert cli.main(["convert-coin", "--suite", str(sp), "--data-root", str(root)]) == 0
    out = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [o["task"] for o in out] == ["ScienceQA", "Grounding"] and "warning" in out[1]
    assert isinstance(json.loads((root / "conv/SQA/q.json").read_text()), list)
    assert read_records(str(root / "conv/G/r.jsonl"))[0]["answer"] == [0.1, 0.2, 0.5, 0.6]
    # single-file mode and its errors
    assert cli.main(["convert-coin", "--test-json", str(root / "G/test.json"), "--generator", "llava.eval.model_vqa",
                     "--scorer", "grounding_iou", "--question-file", str(tmp_path / "q.jsonl"),
                     "--reference-file", str(tmp_path / "r.jsonl")]) == 0
    capsys.readouterr()
    assert cli.main(["convert-coin", "--test-json", "x.json"]) == 2
    assert "--question-file" in capsys.readouterr().err
    assert cli.main(["convert-coin", "--suite", str(sp)]) == 2
    assert "--data-root" in capsys.readouterr().err
    s = load_suite(str(sp), data_root=str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="annotation_file"):
        convert.convert_suite(s)
