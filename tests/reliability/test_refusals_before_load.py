"""Refused before the model loads, in one ``error:`` line, leaving nothing behind (issue 27).

A corrupt ``dymoe_task.json`` in ``--dymoe_prev_ckpt``, ``--bits 4`` without bitsandbytes, a misspelt flag,
an ``--output_dir`` that cannot be created, task 2 writing inside task 1's folder.  The entry points are
called with a base model that does not exist: anything that loaded a model would fail differently."""
import json
import os

import pytest

from llava_dymoe.errors import ConfigError, OutputDirError
from llava_dymoe.integration import output_dir as od
from llava_dymoe.integration.process_hygiene import TRAIN_LOCK

from reliability_helpers import one_line_refusal, run_module, tree_hashes


def _train(data, out, *extra):
    return run_module("llava_dymoe.train", "--model_name_or_path", "no/such-model", "--data_path", data.train_json,
                      "--image_folder", data.image_folder, "--output_dir", out, *extra)


def _finished(path, marker_text):
    path.mkdir()
    (path / od.MARKER).write_text(marker_text)
    (path / od.CONFIG).write_text(json.dumps({"dymoe": {"task_id": 1}}))
    return path


@pytest.mark.parametrize("marker", ['{"task_id": 1, "meth', "[]", ""])
def test_corrupt_marker_of_the_previous_task(data, tmp_path, marker):
    """input: --dymoe_prev_ckpt whose dymoe_task.json is cut, a list, or empty -> exit 2, files untouched."""
    from llava_dymoe.trainer.preflight import check_sequence_flags

    prev = _finished(tmp_path / "t1", marker)
    before = tree_hashes(prev)
    with pytest.raises(ConfigError, match=r"--dymoe_prev_ckpt .*t1: its dymoe_task.json is corrupt"):
        check_sequence_flags(["--dymoe_task_id", "2", "--dymoe_prev_ckpt", str(prev)])
    assert tree_hashes(prev) == before


def test_corrupt_marker_through_the_entry_point(data, tmp_path):
    prev = _finished(tmp_path / "t1", "{not json")
    before = tree_hashes(prev)
    out = tmp_path / "t2"
    res = _train(data, out, "--dymoe_task_id", "2", "--dymoe_prev_ckpt", prev)
    one_line_refusal(res, "its dymoe_task.json is corrupt", "train that task again")
    assert tree_hashes(prev) == before and not out.exists()


def test_bits_without_bitsandbytes(data, tmp_path, monkeypatch):
    import importlib.util

    from llava_dymoe.trainer.preflight import check_quantisation_flags

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "bitsandbytes" else real(n, *a))
    for bits in ("4", "8"):
        with pytest.raises(ConfigError, match=f"--bits {bits} loads the base model quantised with bitsandbytes"):
            check_quantisation_flags(["--bits", bits])
    check_quantisation_flags(["--bits", "16"])


def test_output_dir_under_a_file(data, tmp_path):
    """input: --output_dir FILE/out (what an unwritable parent looks like to root) -> exit 2, the file unchanged."""
    blocker = tmp_path / "notes.txt"
    blocker.write_text("x")
    res = _train(data, blocker / "out")
    one_line_refusal(res, f"--output_dir {blocker / 'out'} cannot be created", f"{blocker} is a file")
    assert blocker.read_text() == "x"


def test_output_dir_without_write_permission(tmp_path, monkeypatch):
    """``os.access`` says no (root may write anywhere, so the check is simulated): refused, naming the folder."""
    from llava_dymoe.trainer import preflight

    monkeypatch.setattr(preflight.os, "access", lambda p, mode: p != str(tmp_path))
    with pytest.raises(OutputDirError, match=r"cannot be created: .* is not writable \(permission denied\)"):
        preflight.check_writable(str(tmp_path / "a" / "b"))
    with pytest.raises(OutputDirError, match="is not writable"):
        preflight.check_writable(str(tmp_path))


def test_output_dir_inside_the_previous_task(data, tmp_path):
    prev = _finished(tmp_path / "t1", json.dumps({"task_id": 1, "method": "dymoe", "sha256": {}}))
    before = tree_hashes(prev)
    res = _train(data, prev / "task2", "--dymoe_task_id", "2", "--dymoe_prev_ckpt", prev)
    one_line_refusal(res, "is inside --dymoe_prev_ckpt", "read-only")
    assert tree_hashes(prev) == before


def test_misspelt_flag_names_the_nearest_and_leaves_no_folder(data, tmp_path, capsys, monkeypatch):
    """input: --dymoe_topk 2; refused by LLaVA's parser classes before the folder is claimed (the entry's
    main, in-process: run_refusing prints any ConfigError as one line).  A bad value is argparse's own
    refusal (exit 2), made by the same parse."""
    import sys

    from llava_dymoe import train

    monkeypatch.setattr(sys, "argv", list(sys.argv))  # main() hands LLaVA its argv through sys.argv
    out = tmp_path / "out"
    argv = ["--model_name_or_path", "no/such-model", "--data_path", data.train_json, "--image_folder",
            data.image_folder, "--output_dir", str(out), "--skip_data_check"]
    with pytest.raises(ConfigError, match=r"unknown training flag\(s\): --dymoe_topk; did you mean --dymoe_top_k\?"):
        train.main(argv + ["--dymoe_topk", "2"])
    assert not out.exists()
    with pytest.raises(SystemExit) as e:
        train.main(argv + ["--num_train_epochs", "many"])
    assert e.value.code == 2 and "invalid float value: 'many'" in capsys.readouterr().err and not out.exists()


def test_a_refusal_after_the_claim_takes_it_back(tmp_path):
    from llava_dymoe.trainer.preflight import claim_training_output, release_output_dir

    new, empty, used = tmp_path / "new", tmp_path / "empty", tmp_path / "used"
    empty.mkdir()
    used.mkdir()
    for out in (new, empty, used):
        claim_training_output(str(out), ["--output_dir", str(out)])
    (used / "trainer_state.json").write_text("{}")  # training wrote there: the claim stays
    for out in (new, empty, used):
        release_output_dir(str(out))
    assert not new.exists() and os.listdir(empty) == []
    assert sorted(os.listdir(used)) == sorted([TRAIN_LOCK, od.CLAIM, "trainer_state.json"])


def test_tiny_folder_whose_tiny_json_is_not_json(tmp_path):
    """input: python -m llava_dymoe.tiny DIR with DIR/tiny.json cut -> exit 2, DIR untouched."""
    (tmp_path / "tiny.json").write_text('{"seed": 0, "si')
    before = tree_hashes(tmp_path)
    res = run_module("llava_dymoe.tiny", tmp_path)
    one_line_refusal(res, f"{tmp_path / 'tiny.json'} is not readable JSON", "--overwrite")
    assert tree_hashes(tmp_path) == before


def test_corrupt_marker_of_the_evaluated_checkpoint(data, tmp_path):
    """input: --model-path whose dymoe_task.json is cut -> the shim refuses before loading; the loader's
    ``verify`` refuses the same file (for callers that load directly)."""
    from llava_dymoe.integration.checkpoint import CheckpointError, verify

    ckpt = _finished(tmp_path / "t1", '{"task_id": 1, "sha2')
    before = tree_hashes(ckpt)
    res = run_module("llava_dymoe.eval", "llava.eval.model_vqa_loader", "--model-path", ckpt, "--model-base",
                     "no/such-base", "--question-file", data.questions, "--image-folder", data.image_folder,
                     "--answers-file", tmp_path / "out" / "a.jsonl")
    one_line_refusal(res, f"--model-path {ckpt}: its dymoe_task.json is corrupt")
    with pytest.raises(CheckpointError, match="its dymoe_task.json is corrupt"):
        verify(str(ckpt))
    assert tree_hashes(ckpt) == before and not (tmp_path / "out").exists()


def test_cli_run_output_dir_under_a_file(data, tmp_path, capsys):
    """input: cli run --output-dir FILE/run -> exit 2 before the data check or any training, the file unchanged."""
    from llava_dymoe.cli import main as cli

    from reliability_helpers import write_suite

    blocker = tmp_path / "f"
    blocker.write_text("x")
    code = cli(["run", "--suite", write_suite(tmp_path / "s.yaml", data), "--data-root", data.root, "--method", "dymoe",
                "--output-dir", str(blocker / "run"), "--base", str(tmp_path), "--vision-tower", str(tmp_path)])
    assert code == 2 and f"--output-dir {blocker / 'run'} cannot be created: {blocker} is a file" in capsys.readouterr().err
    assert blocker.read_text() == "x"
