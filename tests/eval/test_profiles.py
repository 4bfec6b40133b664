"""Suite ``clean_scorer`` and the clean-profile matrix / report section written beside ``matrix.csv``."""
import json
import os

import pytest
import yaml

from llava_dymoe.eval.matrix import AccuracyMatrix
from llava_dymoe.eval.profiles import MATRIX_CLEAN_CSV, WHY_THEY_DIFFER, build_clean_matrix, write_clean_outputs
from llava_dymoe.eval.suite import load_suite
from llava_dymoe.protocol.layout import RunLayout


def _suite(tmp_path, **clean):
    tasks = []
    for name, scorer in (("VizWiz", "coin_vizwiz"), ("OCR", "coin_ocrvqa")):
        t = {"name": name, "train_json": f"{name}/train.json", "question_file": f"{name}/q.jsonl",
             "annotation_file": f"{name}/test.json", "reference_file": f"{name}/refs.jsonl", "image_root": "img",
             "generator": "llava.eval.model_vqa_loader", "scorer": scorer}
        if name in clean:
            t["clean_scorer"] = clean[name]
        tasks.append(t)
    p = tmp_path / "suite.yaml"
    p.write_text(yaml.safe_dump({"name": "mini", "tasks": tasks}))
    return load_suite(str(p), data_root=str(tmp_path))


def _jsonl(path, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


def _run(tmp_path, suite):
    """Two stages; answers chosen so that the profiles disagree (hand-worked below)."""
    _jsonl(str(tmp_path / "VizWiz/refs.jsonl"), [{"question_id": 1, "answer": "yes"},
                                                 {"question_id": 2, "answer": "red"}])
    _jsonl(str(tmp_path / "OCR/refs.jsonl"), [{"question_id": 1, "answer": "Harry Potter"},
                                              {"question_id": 2, "answer": "Dune"}])
    layout = RunLayout(str(tmp_path / "out"), "dymoe")
    answers = {  # (stage, evaluated task) -> predictions for ids 1, 2
        (1, "VizWiz"): ["Yes.", "red"],           # coin: 0 + 1 = 50 %, clean (exact): 1 + 1 = 100 %
        (2, "VizWiz"): ["yes", " red "],          # coin: 50 %, clean: 100 %
        (2, "OCR"): ["Harry Potter.", "dune"],    # coin: 0 + 1 = 50 %, clean: 100 %
    }
    records = []
    for t, task in ((1, "VizWiz"), (2, "OCR")):
        scores = {}
        for (s, evaluated), preds in answers.items():
            if s != t:
                continue
            _jsonl(os.path.join(layout.eval_dir(t, task, evaluated), "answers.jsonl"),
                   [{"question_id": i + 1, "text": p} for i, p in enumerate(preds)])
            scores[evaluated] = 50.0  # what the runner stored from the coin scorer
        records.append({"stage": t, "task": task, "name": layout.stage_name(t, task), "scores": scores})
    return layout, records


def test_suite_clean_scorer_is_optional_and_checked(tmp_path):
    s = _suite(tmp_path, VizWiz="exact")
    assert s.task("VizWiz").clean_scorer == "exact" and s.task("OCR").clean_scorer is None
    with pytest.raises(ValueError, match="clean_scorer"):
        _suite(tmp_path, VizWiz="nope")


def test_clean_matrix_and_report_section(tmp_path):
    suite = _suite(tmp_path, VizWiz="exact", OCR="exact")
    layout, records = _run(tmp_path, suite)
    os.makedirs(layout.root, exist_ok=True)
    (tmp_path / "out/report.md").write_text("# run\n")
    clean = write_clean_outputs(layout, suite, records)
    want = AccuracyMatrix(["VizWiz", "OCR"], ["1_VizWiz", "2_OCR"], [[100.0, float("nan")], [100.0, 100.0]])
    assert clean == want
    assert AccuracyMatrix.from_csv(str(tmp_path / "out" / MATRIX_CLEAN_CSV)) == want
    report = (tmp_path / "out/report.md").read_text()
    assert report.startswith("# run\n") and "## Scoring profiles" in report and WHY_THEY_DIFFER in report
    # coin: MFN = 50, MAA = (50 + 50) / 2 = 50, BWT = 50 - 50 = 0; clean: 100, 100, 0
    assert "| coin (CoIN's scripts) | `matrix.csv` | 50.00 | 50.00 | 0.00 |" in report
    assert "| clean | `matrix_clean.csv` | 100.00 | 100.00 | 0.00 |" in report


def test_task_without_clean_scorer_keeps_its_score_and_no_clean_scorer_writes_nothing(tmp_path):
    suite = _suite(tmp_path, VizWiz="exact")
    layout, records = _run(tmp_path, suite)
    m = build_clean_matrix(suite, records, lambda rec, task: os.path.join(
        layout.eval_dir(rec["stage"], rec["task"], task), "answers.jsonl"))
    assert m.get("2_OCR", "OCR") == 50.0 and m.get("2_OCR", "VizWiz") == 100.0
    bare = _suite(tmp_path)
    assert write_clean_outputs(layout, bare, records) is None
    assert not os.path.exists(tmp_path / "out" / MATRIX_CLEAN_CSV)


def test_a_cell_the_clean_scorer_cannot_score_is_left_empty_and_reported(tmp_path):
    suite = _suite(tmp_path, VizWiz="exact", OCR="coin_textvqa")  # OCR refs are strings: coin_textvqa refuses
    layout, records = _run(tmp_path, suite)
    with pytest.raises(ValueError, match="10 official"):
        build_clean_matrix(suite, records, lambda rec, task: os.path.join(
            layout.eval_dir(rec["stage"], rec["task"], task), "answers.jsonl"))
    os.makedirs(layout.root, exist_ok=True)
    (tmp_path / "out/report.md").write_text("# run\n")
    clean = write_clean_outputs(layout, suite, records)
    assert clean.get("2_OCR", "VizWiz") == 100.0 and clean.get("2_OCR", "OCR") != clean.get("2_OCR", "OCR")  # NaN
    report = (tmp_path / "out/report.md").read_text()
    assert "could not score" in report and "stage '2_OCR', task 'OCR'" in report
