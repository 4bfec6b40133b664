"""Clear refusals: one ``error:`` line, exit status 2, no traceback (unless LLAVA_DYMOE_DEBUG=1), files untouched.

Output folders we did not write, sequence flags that do not fit, and the range checks of
``cli metrics`` / ``cli score`` / ``cli drift``.  No model is loaded anywhere in this file.
"""
import json
import os

import pytest

from llava_dymoe.cli import main as cli
from llava_dymoe.errors import DataError, DyMoEError, OutputDirError, ResultRangeError
from llava_dymoe.integration import output_dir as od
from llava_dymoe.integration.process_hygiene import TRAIN_LOCK

from reliability_helpers import one_line_refusal as _one_line_refusal, run_module, tree_hashes


def _train(data, out, *extra, env=None):
    return run_module("llava_dymoe.train", "--model_name_or_path", "no/such-model", "--data_path", data.train_json,
                      "--image_folder", data.image_folder, "--output_dir", out, *extra, env=env)


def _upstream_lora_checkpoint(path):
    path.mkdir(parents=True)
    for name, content in {"adapter_config.json": "{}", "adapter_model.safetensors": "x", "non_lora_trainables.bin": "y",
                          "config.json": json.dumps({"model_type": "llava_llama"}),
                          "trainer_state.json": json.dumps({"global_step": 5})}.items():
        (path / name).write_text(content)
    (path / "checkpoint-5").mkdir()
    (path / "checkpoint-5" / "trainer_state.json").write_text("{}")
    return path


# ----------------------------------------------------------------------------- --output_dir
def test_upstream_lora_checkpoint_is_not_overwritten(data, tmp_path):
    out = _upstream_lora_checkpoint(tmp_path / "llava-v1.5-7b-lora")
    before = tree_hashes(out)
    line = _one_line_refusal(_train(data, out), f"--output_dir {out} is not empty and was not written by llava_dymoe",
                             "adapter_config.json", "--overwrite_output_dir True")
    assert "Choose a new or empty --output_dir" in line
    assert tree_hashes(out) == before


def test_foreign_folder_with_a_few_files(data, tmp_path):
    out = tmp_path / "notes"
    out.mkdir()
    for i in range(7):
        (out / f"n{i}.txt").write_text(str(i))
    before = tree_hashes(out)
    _one_line_refusal(_train(data, out), "n0.txt, n1.txt", "(7 entries)")
    assert tree_hashes(out) == before


def test_a_file_as_output_dir(data, tmp_path):
    out = tmp_path / "file"
    out.write_text("x")
    _one_line_refusal(_train(data, out), "is a file, not a folder")
    assert out.read_text() == "x"


def test_finished_task_checkpoint_is_never_modified(data, tmp_path):
    out = tmp_path / "1_task_llava_dymoe"
    out.mkdir()
    (out / od.MARKER).write_text(json.dumps({"task_id": 1, "method": "dymoe", "sha256": {}}))
    (out / od.CONFIG).write_text(json.dumps({"dymoe": {"task_id": 1}}))
    before = tree_hashes(out)
    for extra in ((), ("--overwrite_output_dir", "True")):
        _one_line_refusal(_train(data, out, *extra), "finished DyMoE task checkpoint", "never modified")
    assert tree_hashes(out) == before


def test_overwrite_output_dir_lets_a_foreign_folder_be_used(data, tmp_path):
    from llava_dymoe.trainer.preflight import training_preflight

    out = _upstream_lora_checkpoint(tmp_path / "lora")
    before = tree_hashes(out)
    argv = ["--data_path", data.train_json, "--image_folder", data.image_folder, "--output_dir", str(out),
            "--overwrite_output_dir", "True"]
    assert training_preflight(argv) == argv
    after = tree_hashes(out)
    assert set(after) - set(before) == {od.CLAIM, TRAIN_LOCK} and all(after[k] == v for k, v in before.items())
    assert od.check_output_dir(str(out)) == "ours"  # claimed: a rerun is accepted without the flag


@pytest.mark.parametrize("setup, expected", [
    (lambda p: None, "new"),  # does not exist
    (lambda p: p.mkdir(), "new"),
    (lambda p: (p.mkdir(), (p / ".DS_Store").write_text("")), "new"),
    (lambda p: (p.mkdir(), (p / od.CLAIM).write_text("{}"), (p / "checkpoint-50").mkdir()), "ours"),
    (lambda p: (p.mkdir(), (p / od.CONFIG).write_text(json.dumps({"dymoe": {"task_id": 1}}))), "ours"),
])
def test_new_empty_or_unfinished_runs_of_ours_are_accepted(tmp_path, setup, expected):
    out = tmp_path / "out"
    setup(out)
    before = tree_hashes(out) if out.exists() else {}
    assert od.check_output_dir(str(out)) == expected
    assert (tree_hashes(out) if out.exists() else {}) == before  # the check itself writes nothing


def test_rerun_into_a_claimed_folder_passes_the_preflight(data, tmp_path):
    from llava_dymoe.trainer.preflight import training_preflight

    out = str(tmp_path / "out")
    argv = ["--data_path", data.train_json, "--image_folder", data.image_folder, "--output_dir", out]
    training_preflight(argv)
    os.makedirs(os.path.join(out, "checkpoint-2"))  # an interrupted run of ours
    training_preflight(argv)
    assert sorted(os.listdir(out)) == [TRAIN_LOCK, "checkpoint-2", od.CLAIM]


def test_output_dir_is_the_previous_task(tmp_path):
    prev = tmp_path / "t1"
    prev.mkdir()
    with pytest.raises(OutputDirError, match="same folder"):
        od.check_output_dir(str(prev), prev_ckpt=str(prev))


def test_output_dir_constants_match_the_checkpoint_module():
    from llava_dymoe.integration import checkpoint as ckpt

    from llava_dymoe.trainer.preflight import RESUME_FILES

    assert (od.MARKER, od.CONFIG) == (ckpt.MARKER, ckpt.CONFIG) and od.CLAIM not in ckpt.CHECKPOINT_FILES
    assert RESUME_FILES == (ckpt.CONFIG, ckpt.EXPERTS, ckpt.NON_LORA)
    assert issubclass(ckpt.CheckpointError, DyMoEError) and issubclass(DyMoEError, ValueError)


# ----------------------------------------------------------------------------- --resume_from_checkpoint

def _intermediate(path, task_id=1, deepspeed=False):
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"dymoe": {"task_id": task_id, "method": "dymoe"}}))
    for name in ("dymoe_experts.safetensors", "non_lora_trainables.bin", "trainer_state.json"):
        (path / name).write_text("x")
    if deepspeed:
        (path / "global_step2").mkdir()
    else:
        (path / "optimizer.pt").write_text("x")
    return path


@pytest.mark.parametrize("case,needle", [
    ("missing", "no such folder"),
    ("not_ours", "is not an intermediate DyMoE checkpoint"),
    ("other_task", "was saved by task 2, this run is task 1"),
    ("deepspeed_ckpt", "resume it with the same --deepspeed config"),
    ("plain_ckpt_under_deepspeed", "was saved without DeepSpeed"),
    ("unfinished_save", "its save did not finish"),
])
def test_resume_from_checkpoint_refusals(data, tmp_path, case, needle):
    ck = tmp_path / "run" / "checkpoint-2"
    extra = []
    if case == "not_ours":
        ck.mkdir(parents=True)
        (ck / "pytorch_model.bin").write_text("x")
    elif case == "other_task":
        _intermediate(ck, task_id=2)
    elif case == "deepspeed_ckpt":
        _intermediate(ck, deepspeed=True)
    elif case == "plain_ckpt_under_deepspeed":
        _intermediate(ck)
        extra = ["--deepspeed", "scripts/zero2.json"]
    elif case == "unfinished_save":
        _intermediate(ck)
        (ck / "optimizer.pt").unlink()
    before = tree_hashes(tmp_path)
    out = tmp_path / "out"
    res = _train(data, str(out), "--resume_from_checkpoint", str(ck), *extra, "--skip_data_check")
    _one_line_refusal(res, "--resume_from_checkpoint", needle)
    assert tree_hashes(tmp_path) == before and not out.exists()


# ----------------------------------------------------------------------------- sequence flags, before loading
def test_task_two_without_previous_checkpoint(data, tmp_path):
    out = tmp_path / "out"
    _one_line_refusal(_train(data, out, "--dymoe_task_id", "2"), "--dymoe_task_id 2 continues a sequence")
    assert not out.exists()


def test_previous_checkpoint_not_finished(data, tmp_path):
    prev = tmp_path / "half"
    prev.mkdir()
    (prev / "config.json").write_text("{}")
    before = tree_hashes(prev)
    _one_line_refusal(_train(data, tmp_path / "out", "--dymoe_task_id", "2", "--dymoe_prev_ckpt", prev),
                      "is not a finished DyMoE task checkpoint")
    assert tree_hashes(prev) == before and not (tmp_path / "out").exists()


def test_previous_checkpoint_holds_another_task_count(data, tmp_path):
    prev = tmp_path / "t1"
    prev.mkdir()
    (prev / od.MARKER).write_text(json.dumps({"task_id": 1, "method": "dymoe", "sha256": {}}))
    _one_line_refusal(_train(data, tmp_path / "out", "--dymoe_task_id", "3", "--dymoe_prev_ckpt", prev),
                      "holds 1 task(s), so this run is task 2, not --dymoe_task_id 3")


def test_unknown_method_and_lora(data, tmp_path):
    _one_line_refusal(_train(data, tmp_path / "o1", "--dymoe_method", "dymo"), "--dymoe_method")
    _one_line_refusal(_train(data, tmp_path / "o2", "--lora_enable", "True"), "DyMoE replaces LLaVA's LoRA")


def test_prepare_keeps_the_same_sequence_messages():
    from types import SimpleNamespace

    from llava_dymoe.errors import ConfigError
    from llava_dymoe.trainer.prepare import _check_sequence

    args = SimpleNamespace(dymoe_task_id=2, dymoe_prev_ckpt="p", dymoe_method="dymoe")
    prev = {"dymoe": {"task_id": 1, "method": "incmoelora"}, "config": SimpleNamespace(num_tasks=1)}
    with pytest.raises(ConfigError, match="trained with --dymoe_method incmoelora"):
        _check_sequence(args, prev)
    _check_sequence(args, {"dymoe": {"method": "dymoe"}, "config": SimpleNamespace(num_tasks=1)})


# ----------------------------------------------------------------------------- how entry points print refusals
def test_refusal_printing_and_debug(capsys, monkeypatch):
    from llava_dymoe.errors import print_refusal, run_refusing

    assert print_refusal(DataError("short reason", details="line 1\nline 2")) == 2
    assert capsys.readouterr().err == "line 1\nline 2\nerror: short reason\n"

    def refuse():
        raise OutputDirError("no")

    monkeypatch.delenv("LLAVA_DYMOE_DEBUG", raising=False)
    with pytest.raises(SystemExit) as e:
        run_refusing(refuse)
    assert e.value.code == 2 and capsys.readouterr().err == "error: no\n"
    monkeypatch.setenv("LLAVA_DYMOE_DEBUG", "1")
    with pytest.raises(OutputDirError):
        run_refusing(refuse)


# ----------------------------------------------------------------------------- cli metrics
@pytest.mark.parametrize("cell, text", [("150", "(stage 's2', task 'B') = 150"),
                                        ("-40", "(stage 's2', task 'B') = -40")])
def test_metrics_refuses_scores_outside_0_100(tmp_path, cell, text):
    p = tmp_path / "matrix.csv"
    p.write_text(f"stage,A,B\ns1,80,\ns2,75,{cell}\n")
    before = tree_hashes(tmp_path)
    res = run_module("llava_dymoe.cli", "metrics", p)
    _one_line_refusal(res, str(p), "outside [0, 100]", text)
    assert res.stdout == "" and tree_hashes(tmp_path) == before


def test_metrics_json_matrix_and_debug(tmp_path, monkeypatch):
    p = tmp_path / "matrix.json"
    p.write_text(json.dumps({"tasks": ["A"], "stages": ["s1"], "values": [[0.8]]}))
    assert cli(["metrics", str(p)]) == 2  # every cell in [0, 1]: fractions? (test_metrics_on_fractions...)
    assert cli(["metrics", str(p), "--scale", "percent"]) == 0
    p.write_text(json.dumps({"tasks": ["A"], "stages": ["s1"], "values": [[101.5]]}))
    assert cli(["metrics", str(p)]) == 2
    monkeypatch.setenv("LLAVA_DYMOE_DEBUG", "1")
    with pytest.raises(ResultRangeError, match="101.5"):
        cli(["metrics", str(p)])


def test_metrics_on_fractions_needs_a_scale(tmp_path, capsys):
    """input: matrix.csv written as fractions (0.8, 0.7, 0.6) -> exit 2 naming --scale; with --scale fraction
    the metrics are in percent; the file is never changed."""
    p = tmp_path / "matrix.csv"
    p.write_text("stage,A,B\ns1,0.8,\ns2,0.7,0.6\n")
    before = tree_hashes(tmp_path)
    res = run_module("llava_dymoe.cli", "metrics", p)
    _one_line_refusal(res, str(p), "every score lies in [0, 1]", "--scale fraction", "--scale percent")
    assert res.stdout == ""
    assert cli(["metrics", str(p), "--scale", "fraction"]) == 0
    assert json.loads(capsys.readouterr().out)["mfn"] == pytest.approx(65.0)
    assert cli(["metrics", str(p), "--scale", "percent"]) == 0
    assert json.loads(capsys.readouterr().out)["mfn"] == pytest.approx(0.65)
    p.write_text("stage,A,B\ns1,80,\ns2,70,60\n")
    assert cli(["metrics", str(p), "--scale", "fraction"]) == 2
    assert "--scale fraction, but a cell is 80" in capsys.readouterr().err
    p.write_text("stage,A,B\ns1,0.8,\ns2,0.7,0.6\n")
    assert tree_hashes(tmp_path) == before


def test_metrics_of_a_run_folder_and_a_nan_cell(tmp_path, capsys):
    assert cli(["metrics", str(tmp_path)]) == 2
    assert f"{tmp_path} is a folder without a matrix.csv" in capsys.readouterr().err
    (tmp_path / "matrix.csv").write_text("stage,A,B\ns1,80,\ns2,70,nan\n")
    assert cli(["metrics", str(tmp_path)]) == 2  # the run folder's matrix is read; B after s2 has no score
    err = capsys.readouterr().err
    assert "holds no score (empty, or NaN" in err and "is empty (not evaluated)" not in err
    (tmp_path / "matrix.csv").write_text("stage,A,B\ns1,80,\ns2,70,60\n")
    assert cli(["metrics", str(tmp_path)]) == 0 and json.loads(capsys.readouterr().out)["mfn"] == 65.0


# ----------------------------------------------------------------------------- cli score (helper)
def _score(tmp_path, answer_ids, question_ids=("q1", "q2", "q3")):
    from llava_dymoe.eval.scorers import score_file

    refs, answers = tmp_path / "refs.jsonl", tmp_path / "answers.jsonl"
    refs.write_text("".join(json.dumps({"question_id": q, "answer": "red"}) + "\n" for q in question_ids))
    answers.write_text("".join(json.dumps({"question_id": q, "text": "red"}) + "\n" for q in answer_ids))
    return score_file("exact", str(answers), str(refs)), str(answers), str(refs)


def test_score_with_no_matching_question_ids_is_refused(tmp_path):
    from llava_dymoe.result_checks import check_answer_coverage

    result, answers, refs = _score(tmp_path, ["other-1", "other-2"])
    assert result["score"] == 0.0
    with pytest.raises(ResultRangeError,
                       match=r"none of the 3 question ids .* ids like 'other-1', references like 'q1'"):
        check_answer_coverage(result, answers, refs)


def test_score_with_some_missing_answers_warns(tmp_path):
    from llava_dymoe.result_checks import check_answer_coverage

    result, answers, refs = _score(tmp_path, ["q1"])
    warning = check_answer_coverage(result, answers, refs)
    assert warning.startswith("WARNING: 2 of 3 questions") and "'q2', 'q3'" in warning
    assert check_answer_coverage(_score(tmp_path, ["q1", "q2", "q3"])[0], answers, refs) is None


# ----------------------------------------------------------------------------- cli drift
def _fake_checkpoint(path, tensors, expand=True):
    import torch
    from safetensors.torch import save_file

    path.mkdir()
    (path / "config.json").write_text(json.dumps({"dymoe": {"config": {"expand": expand}, "task_id": 1}}))
    save_file({k: torch.tensor(v, dtype=torch.float32) for k, v in tensors.items()},
              str(path / "dymoe_experts.safetensors"))
    return str(path)


def _drift(tmp_path, before, after):
    return cli(["drift", "--before", before, "--after", after, "--questions", str(tmp_path / "q.jsonl"),
                "--image-folder", str(tmp_path), "--model-base", "no/such-llm",
                "--output-dir", str(tmp_path / "drift")])


def test_drift_between_unrelated_checkpoints_is_refused(tmp_path, capsys):
    a = _fake_checkpoint(tmp_path / "a", {"l.dymoe_A.t0": [1.0, 2.0]})
    b = _fake_checkpoint(tmp_path / "b", {"l.dymoe_A.t0": [1.0, 2.5], "l.dymoe_A.t1": [0.0, 0.0]})
    c = _fake_checkpoint(tmp_path / "c", {"m.dymoe_A.t0": [1.0, 2.0]})
    before = tree_hashes(tmp_path)
    assert _drift(tmp_path, a, b) == 2
    assert "is not a later checkpoint of --before" in capsys.readouterr().err
    assert _drift(tmp_path, a, c) == 2
    assert "lacks 1 of its 1 bank tensors" in capsys.readouterr().err
    assert tree_hashes(tmp_path) == before and not (tmp_path / "drift").exists()


def test_drift_check_accepts_the_same_sequence(tmp_path):
    from llava_dymoe.result_checks import check_shared_banks

    a = _fake_checkpoint(tmp_path / "a", {"l.dymoe_A.t0": [1.0, 2.0]})
    b = _fake_checkpoint(tmp_path / "b", {"l.dymoe_A.t0": [1.0, 2.0], "l.dymoe_A.t1": [3.0, 4.0]})
    check_shared_banks(a, [a, b])
    la = _fake_checkpoint(tmp_path / "la", {"l.dymoe_A.t0": [1.0, 2.0]}, expand=False)
    lb = _fake_checkpoint(tmp_path / "lb", {"l.dymoe_A.t0": [1.5, 2.0]}, expand=False)
    check_shared_banks(la, [lb])  # one retrained bank: names and shapes must match, values change
    with pytest.raises(ResultRangeError, match="not a DyMoE task checkpoint"):
        check_shared_banks(a, [str(tmp_path)])


def test_invalid_architecture_flags_before_loading(data, tmp_path):
    out = tmp_path / "out"
    _one_line_refusal(_train(data, out, "--dymoe_top_k", "0"), "--dymoe_* flags (method dymoe): top_k must be")
    _one_line_refusal(_train(data, out, "--dymoe_target_modules", "q_proj,nope"), "unknown module name(s)")
    assert not out.exists()
    from llava_dymoe.trainer.preflight import check_config_flags

    check_config_flags(["--dymoe_top_k", "x"], "dymoe")  # not a number: LLaVA's parser reports it
    check_config_flags(["--dymoe_top_k", "2", "--dymoe_expand", "False"], "dymoe")


def test_preflight_imports_no_torch(data, tmp_path):
    """The pre-flight refuses within a second because it imports neither torch nor transformers."""
    import subprocess
    import sys

    code = ("import sys\n"
            "from llava_dymoe.trainer.preflight import training_preflight\n"
            f"training_preflight(['--data_path', {data.train_json!r}, '--image_folder', {data.image_folder!r}, "
            f"'--output_dir', {str(tmp_path / 'out')!r}, '--dymoe_top_k', '2'])\n"
            "print(sorted(m for m in ('torch', 'transformers', 'llava') if m in sys.modules))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.strip() == "[]", res.stderr
