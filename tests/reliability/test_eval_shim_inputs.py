"""The eval shim's inputs, checked before any model loads: the answers file and the question file.

An existing answers file is never overwritten without ``--overwrite-answers``; ``--answers-file
answers.jsonl`` (no folder part) works; a question without ``question_id`` is one ``error:`` line
(upstream: ``KeyError`` after the model load).  The checkpoint and base do not exist: nothing here loads."""
import json
import os

import pytest

from llava_dymoe.errors import DataError, OutputDirError
from llava_dymoe.eval.shim import check_shim_args

from reliability_helpers import one_line_refusal, run_module, tree_hashes

LOADER = "llava.eval.model_vqa_loader"


def _shim(data, answers, *extra, cwd=None):
    return run_module("llava_dymoe.eval", LOADER, "--model-path", "no/such-ckpt", "--model-base", "no/such-base",
                      "--question-file", data.questions, "--image-folder", data.image_folder,
                      "--answers-file", answers, *extra)


def test_existing_answers_file_is_not_overwritten(data, tmp_path):
    """input: --answers-file F, F holds other answers -> exit 2, F unchanged; --overwrite-answers lets it through."""
    answers = tmp_path / "answers.jsonl"
    answers.write_text(json.dumps({"question_id": "x", "text": "kept"}) + "\n")
    before = tree_hashes(tmp_path)
    res = _shim(data, answers)
    one_line_refusal(res, f"--answers-file {answers} already exists (1 line(s))", "--overwrite-answers")
    assert tree_hashes(tmp_path) == before
    argv = ["--question-file", data.questions, "--image-folder", data.image_folder, "--answers-file", str(answers)]
    assert check_shim_args(LOADER, argv + ["--overwrite-answers"]) == argv  # our flag is taken off
    answers.write_text("")
    assert check_shim_args(LOADER, argv) == argv  # an empty file holds nothing to lose


def test_answers_file_without_a_folder_part_is_made_absolute(data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rest = check_shim_args(LOADER, ["--answers-file", "answers.jsonl"])
    assert rest == ["--answers-file", str(tmp_path / "answers.jsonl")]
    assert check_shim_args(LOADER, ["--answers-file=a.jsonl"]) == [f"--answers-file={tmp_path / 'a.jsonl'}"]


def test_answers_file_that_cannot_be_written(data, tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputDirError, match="cannot be written: .*f is a file, not a folder"):
        check_shim_args(LOADER, ["--answers-file", str(tmp_path / "f" / "a.jsonl")])
    with pytest.raises(OutputDirError, match="is a folder"):
        check_shim_args(LOADER, ["--answers-file", str(tmp_path)])


def test_question_without_question_id(data, tmp_path):
    """input: a question file line without question_id -> exit 2 with the data check's report, no answers file."""
    rows = [json.loads(line) for line in open(data.questions)]
    del rows[1]["question_id"]
    open(data.questions, "w").writelines(json.dumps(r) + "\n" for r in rows)
    answers = tmp_path / "out" / "answers.jsonl"
    res = _shim(data, answers)
    one_line_refusal(res, "the check of --question-file found 1 problem(s) (bad question id x1)", "--skip-data-check")
    assert f"{data.questions} sample 1: no 'question_id' field" in res.stderr
    assert not os.path.exists(tmp_path / "out")
    with pytest.raises(DataError):
        check_shim_args(LOADER, ["--question-file", data.questions, "--image-folder", data.image_folder])
    check_shim_args(LOADER, ["--question-file", data.questions, "--skip-data-check"])  # the user knows better
    check_shim_args("llava.eval.model_vqa_mmbench", ["--question-file", data.questions])  # its own TSV format
