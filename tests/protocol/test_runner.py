"""The continual sequence runner (``cli run``) on the tiny LLaVA with a 2-task suite written here.

End to end (real training subprocesses, real upstream ``model_vqa_loader`` through the shim):
the matrix, metrics, report and run identity; resume after a SIGKILL during stage 2's training
(stage 1's files unchanged byte for byte, planted half-written files detected and redone);
eval-only redo over a finished checkpoint; refusal of a mismatching rerun and of a finished stage
whose files changed; bad input.

Both tasks train on the smoke data; their reference files make the scores known in advance with
the ``contains`` scorer: a reference listing every letter matches any answer with a letter, one
that is no substring of any answer never matches.  TaskA: 2 of 4 questions -> 50 %; TaskB: 1 of 4 -> 25 %.
"""
import hashlib
import json
import math
import os
import shutil
import signal
import string
import subprocess
import sys
import time

import pytest

from llava_dymoe.cli import main as cli
from llava_dymoe.eval.matrix import AccuracyMatrix
from llava_dymoe.eval.metrics import summary
from llava_dymoe.eval.scorers import score_file
from llava_dymoe.integration import checkpoint as ckpt

ANY = list(string.ascii_letters)  # contained in every answer with a letter in it
NEVER = "\u2603never-an-answer\u2603"
HITS = {"TaskA": 2, "TaskB": 1}
SUITE = """name: tiny2
defaults:
  image_root: images
  generator: llava.eval.model_vqa_loader
  scorer: contains
  max_new_tokens: 6
training:
  max_steps: 2          # overridden by --train-arg max_steps=3
  learning_rate: 0.001
tasks:
  - name: TaskA
    train_json: train.json
    question_file: questions.jsonl
    annotation_file: questions.jsonl
    reference_file: {refs_a}
  - name: TaskB
    train_json: train.json
    question_file: questions.jsonl
    annotation_file: questions.jsonl
    reference_file: {refs_b}
"""


@pytest.fixture(scope="module")
def suite_file(smoke_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("runner_suite")
    qids = [json.loads(line)["question_id"] for line in open(smoke_data.questions)]
    refs = {}
    for task, hits in HITS.items():
        refs[task] = root / f"refs_{task}.jsonl"
        refs[task].write_text("".join(json.dumps({"question_id": q, "answer": ANY if i < hits else NEVER}) + "\n"
                                      for i, q in enumerate(qids)))
    path = root / "tiny2.yaml"
    path.write_text(SUITE.format(refs_a=refs["TaskA"], refs_b=refs["TaskB"]))
    return str(path)


def run_argv(suite_file, smoke_data, tiny, out, method="dymoe", *extra):
    return ["run", "--suite", suite_file, "--data-root", smoke_data.root, "--method", method, "--output-dir",
            str(out), "--base", tiny.llm, "--vision-tower", tiny.clip, "--train-arg", "max_steps=3",
            "--dymoe-arg", "experts_per_task=2", "--threads", "1", *extra]


@pytest.fixture(scope="module")
def finished_run(suite_file, smoke_data, tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("runner") / "run"
    start = time.perf_counter()
    assert cli(run_argv(suite_file, smoke_data, tiny, out)) == 0
    print(f"2-stage tiny run: {time.perf_counter() - start:.1f} s")
    return out


def tree_hashes(root, *subdirs):
    """{relative path: sha256} of every file under root/subdir."""
    out = {}
    for sub in subdirs:
        for dirpath, _, files in os.walk(os.path.join(root, sub)):
            for name in files:
                path = os.path.join(dirpath, name)
                out[os.path.relpath(path, root)] = hashlib.sha256(open(path, "rb").read()).hexdigest()
    return out


STAGE1 = ("checkpoints/1_TaskA_llava_dymoe", "stages/1_TaskA/eval", "stages/1_TaskA/stage.json")


def stage1_hashes(out):
    hashes = tree_hashes(out, *STAGE1[:2])
    hashes["stage.json"] = hashlib.sha256(open(os.path.join(out, STAGE1[2]), "rb").read()).hexdigest()
    assert any(k.endswith(ckpt.EXPERTS) for k in hashes) and any(k.endswith("answers.jsonl") for k in hashes)
    return hashes


def test_two_stage_run_fills_the_matrix_and_writes_the_reports(finished_run, suite_file, tiny):
    out = finished_run
    m = AccuracyMatrix.from_csv(os.path.join(out, "matrix.csv"))
    assert m.tasks == ["TaskA", "TaskB"] and m.stages == ["1_TaskA", "2_TaskB"]
    assert math.isnan(m.get("1_TaskA", "TaskB"))
    expected = {("1_TaskA", "TaskA"): 50.0, ("2_TaskB", "TaskA"): 50.0, ("2_TaskB", "TaskB"): 25.0}
    for (stage, task), value in expected.items():
        answers = os.path.join(out, "stages", stage, "eval", task, "answers.jsonl")
        assert m.get(stage, task) == value == score_file("contains", answers, _refs(suite_file, task))["score"]
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    assert metrics == summary(m)
    assert metrics["mfn"] == 37.5 and metrics["maa"] == 43.75 and metrics["mft"] == 37.5 and metrics["bwt"] == 0.0
    report = open(os.path.join(out, "report.md")).read()
    assert "# dymoe on tiny2" in report and "| 2_TaskB | 50.00 | 25.00 |" in report and "| 37.50 | 43.75 |" in report
    assert open(os.path.join(out, "matrix.png"), "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    run = json.load(open(os.path.join(out, "run.json")))
    assert (run["method"], run["suite"], run["base"], run["tasks"]) == ("dymoe", "tiny2", tiny.llm, ["TaskA", "TaskB"])
    assert run["train_args"] == {"max_steps": "3", "learning_rate": "0.001"}  # --train-arg wins over the suite
    from llava_dymoe.eval.report import load_run

    assert load_run(str(out))["name"] == "dymoe"


def _refs(suite_file, task):
    return os.path.join(os.path.dirname(suite_file), f"refs_{task}.jsonl")


def test_each_stage_trains_from_the_previous_checkpoint_and_logs_its_commands(finished_run, tiny):
    out = str(finished_run)
    t1, t2 = (os.path.join(out, "checkpoints", d) for d in ("1_TaskA_llava_dymoe", "2_TaskB_llava_dymoe"))
    assert ckpt.verify(t1)["task_id"] == 1 and ckpt.verify(t2)["task_id"] == 2
    block = json.load(open(os.path.join(t2, "config.json")))["dymoe"]
    assert block["prev_ckpt"] == t1 and block["config"]["experts_per_task"] == 2
    assert json.load(open(os.path.join(t2, "trainer_state.json")))["global_step"] == 3
    log = open(os.path.join(out, "commands.log")).read().splitlines()
    trains = [line for line in log if "train]" in line]
    assert len(trains) == 2 and all("-m llava_dymoe.train" in line and "OMP_NUM_THREADS=1" in line for line in trains)
    assert f"--dymoe_prev_ckpt {t1}" in trains[1] and "--dymoe_prev_ckpt" not in trains[0]
    assert "--max_steps 3" in trains[0] and "--learning_rate 0.001" in trains[0]
    shims = [line for line in log if "-m llava_dymoe.eval llava.eval.model_vqa_loader" in line]
    assert len(shims) == 3 and all("--max_new_tokens 6" in line and f"--model-base {tiny.llm}" in line
                                   for line in shims)
    assert sum("-m llava_dymoe.protocol.eval_batch" in line for line in log) == 2
    for stage in ("1_TaskA", "2_TaskB"):
        rec = json.load(open(os.path.join(out, "stages", stage, "stage.json")))
        assert rec["train_seconds"] > 0 and rec["eval_seconds"] > 0
        for name in ("train.log", "eval.log"):
            assert os.path.getsize(os.path.join(out, "stages", stage, name)) > 0


def test_rerun_of_a_finished_run_skips_every_stage(finished_run, suite_file, smoke_data, tiny, capsys):
    before = tree_hashes(finished_run, "checkpoints", "stages")
    assert cli(run_argv(suite_file, smoke_data, tiny, finished_run)) == 0
    assert tree_hashes(finished_run, "checkpoints", "stages") == before
    assert capsys.readouterr().err.count("finished earlier: verified, skipped") == 2
    # --stages 1 stops after stage 1 but still reports the stage that finished earlier
    assert cli(run_argv(suite_file, smoke_data, tiny, finished_run, "dymoe", "--stages", "1")) == 0
    assert AccuracyMatrix.from_csv(os.path.join(finished_run, "matrix.csv")).stages == ["1_TaskA", "2_TaskB"]
    assert tree_hashes(finished_run, "checkpoints", "stages") == before


def test_finished_checkpoint_with_incomplete_eval_is_only_evaluated(finished_run, suite_file, smoke_data, tiny,
                                                                    tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    ckpt2 = tree_hashes(out, "checkpoints/2_TaskB_llava_dymoe")
    keep = tree_hashes(out, "stages/2_TaskB/eval/TaskA")
    os.remove(out / "stages/2_TaskB/stage.json")
    os.remove(out / "stages/2_TaskB/eval/TaskB/score.json")  # answers without a score: partial
    assert cli(run_argv(suite_file, smoke_data, tiny, out)) == 0
    err = capsys.readouterr().err
    assert "checkpoint finished earlier (verified): evaluating only" in err
    assert "partial evaluation of TaskB" in err and "evaluating TaskB" in err
    assert tree_hashes(out, "checkpoints/2_TaskB_llava_dymoe") == ckpt2
    assert tree_hashes(out, "stages/2_TaskB/eval/TaskA") == keep
    rec = json.load(open(out / "stages/2_TaskB/stage.json"))
    assert rec["train_seconds"] is None and rec["scores"] == {"TaskA": 50.0, "TaskB": 25.0}


def test_kill_during_stage2_training_then_resume(suite_file, smoke_data, tiny, tmp_path, capsys):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "llava_dymoe.cli", *run_argv(suite_file, smoke_data, tiny, out)]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    train_log = out / "stages/2_TaskB/train.log"
    deadline = time.time() + 120
    try:  # kill once stage 2's training process is up (it has applied the train patches)
        while not (train_log.is_file() and "patched llava.train" in train_log.read_text()):
            assert proc.poll() is None and time.time() < deadline, "the runner ended before stage 2 trained"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (out / "stages/2_TaskB/stage.json").exists() and not ckpt.is_finished(
        str(out / "checkpoints/2_TaskB_llava_dymoe"))
    before = stage1_hashes(out)
    # what an interrupted stage can leave behind: a checkpoint without its marker, answers without a score
    (out / "checkpoints/2_TaskB_llava_dymoe").mkdir(exist_ok=True)
    (out / "checkpoints/2_TaskB_llava_dymoe/config.json").write_text("{half")
    (out / "stages/2_TaskB/eval/TaskA").mkdir(parents=True)
    (out / "stages/2_TaskB/eval/TaskA/answers.jsonl").write_text('{"question_id": "smoke-q0", "te')
    capsys.readouterr()
    assert cli(run_argv(suite_file, smoke_data, tiny, out)) == 0
    err = capsys.readouterr().err
    assert "1/2 TaskA finished earlier: verified, skipped" in err
    assert "half-written checkpoint" in err and "partial evaluation of TaskA" in err
    assert stage1_hashes(out) == before
    rec = json.load(open(out / "stages/2_TaskB/stage.json"))
    assert rec["train_seconds"] > 0 and rec["scores"] == {"TaskA": 50.0, "TaskB": 25.0}
    assert ckpt.verify(str(out / "checkpoints/2_TaskB_llava_dymoe"))["task_id"] == 2
    m = AccuracyMatrix.from_csv(str(out / "matrix.csv"))
    assert m.stages == ["1_TaskA", "2_TaskB"] and m.get(1, 1) == 25.0
    assert open(out / "stages/2_TaskB/train.log").read().count("===== ") == 2  # both attempts logged


def test_unfinished_stage_with_checkpoint_n_resumes_inside_the_stage(suite_file, smoke_data, tiny, tmp_path, capsys):
    """A stage trained with ``save_strategy=steps`` and interrupted after ``checkpoint-2`` resumes from it on the
    rerun (LLaVA's train() picks the last checkpoint-N; a half-written later one is removed first) and ends with
    the same banks as the uninterrupted stage (``tests/integration/test_resume.py``: resume is bit-identical)."""
    from safetensors.torch import load_file

    out = tmp_path / "run"
    argv = run_argv(suite_file, smoke_data, tiny, out, "dymoe", "--stages", "1", "--train-arg", "save_strategy=steps",
                    "--train-arg", "save_steps=2")
    assert cli(argv) == 0
    ck = out / "checkpoints/1_TaskA_llava_dymoe"
    uninterrupted = load_file(ck / ckpt.EXPERTS)
    assert (ck / "checkpoint-2" / "optimizer.pt").is_file()
    # what a kill after the save of step 2 leaves (tests/integration/test_resume.py): checkpoint-2 and the
    # output-dir claim, no final files, no stage record, no evaluation; plus a checkpoint-3 killed while saving
    from llava_dymoe.integration.output_dir import CLAIM

    for name in os.listdir(ck):
        if name not in ("checkpoint-2", CLAIM) and not name.startswith("."):
            (shutil.rmtree if (ck / name).is_dir() else os.remove)(ck / name)
    shutil.rmtree(out / "stages/1_TaskA/eval")
    os.remove(out / "stages/1_TaskA/stage.json")
    (ck / "checkpoint-3").mkdir()
    (ck / "checkpoint-3" / ckpt.CONFIG).write_text("{half")
    capsys.readouterr()
    assert cli(argv) == 0
    err = capsys.readouterr().err
    assert "checkpoint-3 cannot be resumed from" in err and "is not an intermediate DyMoE checkpoint" in err
    assert "unfinished training" in err and "resuming from checkpoint-2" in err
    assert "half-written checkpoint" not in err
    log = open(out / "stages/1_TaskA/train.log").read()
    assert "resumed" in log and "trainable tensors from" in log and "checkpoint-2" in log
    assert json.load(open(ck / "trainer_state.json"))["global_step"] == 3
    assert not (ck / "checkpoint-3").exists() and ckpt.verify(str(ck))["task_id"] == 1
    resumed = load_file(ck / ckpt.EXPERTS)
    assert set(resumed) == set(uninterrupted)
    assert all(torch_equal(resumed[k], uninterrupted[k]) for k in uninterrupted)
    rec = json.load(open(out / "stages/1_TaskA/stage.json"))
    assert rec["train_seconds"] > 0 and rec["scores"] == {"TaskA": 50.0}


def torch_equal(a, b):
    import torch

    return torch.equal(a, b)


def test_mismatching_rerun_or_foreign_folder_is_refused(finished_run, suite_file, smoke_data, tiny, tmp_path,
                                                        capsys):
    before = tree_hashes(finished_run, "checkpoints", "stages")
    assert cli(run_argv(suite_file, smoke_data, tiny, finished_run, "incmoelora")) == 2
    err = capsys.readouterr().err
    assert "belongs to another run" in err and "method: 'dymoe' in the folder, 'incmoelora' now" in err
    argv = run_argv(suite_file, smoke_data, tiny, finished_run)
    argv[argv.index("--base") + 1] = tiny.clip
    argv[argv.index("max_steps=3")] = "max_steps=4"
    assert cli(argv) == 2
    err = capsys.readouterr().err
    assert "base:" in err and "train_args:" in err and "new --output-dir" in err
    assert cli(run_argv(suite_file, smoke_data, tiny, finished_run, "dymoe", "--task-order", "TaskB,TaskA")) == 2
    assert "tasks: ['TaskA', 'TaskB'] in the folder, ['TaskB', 'TaskA'] now" in capsys.readouterr().err
    assert tree_hashes(finished_run, "checkpoints", "stages") == before
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    assert cli(run_argv(suite_file, smoke_data, tiny, tmp_path / "other")) == 2
    assert "is not empty and has no run.json" in capsys.readouterr().err
    from llava_dymoe.protocol.layout import RunLayout

    with RunLayout(str(finished_run), "dymoe").locked():  # as if another invocation were working there
        assert cli(run_argv(suite_file, smoke_data, tiny, finished_run)) == 2
    assert f"another `llava_dymoe.cli run` is working in {finished_run} (pid {os.getpid()})" in \
        capsys.readouterr().err


def test_finished_stage_with_changed_files_is_not_overwritten(finished_run, suite_file, smoke_data, tiny, tmp_path,
                                                              capsys):
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    answers = out / "stages/1_TaskA/eval/TaskA/answers.jsonl"
    answers.write_text(answers.read_text() + "\n")
    assert cli(run_argv(suite_file, smoke_data, tiny, out)) == 2
    err = capsys.readouterr().err
    assert "stage 1_TaskA finished earlier, but" in err and "was modified after the stage finished" in err
    assert "delete" in err and str(out / "stages/1_TaskA") in err


def _edited(argv, replace=None, drop=None, add=()):
    """``argv`` with the value after flag ``replace[0]`` (or the item ``replace[0]``) set to ``replace[1]``."""
    argv = list(argv)
    if replace:
        old, value = replace
        i = argv.index(old) + 1 if old.startswith("--") else argv.index(old)
        argv[i] = value
    if drop:
        i = argv.index(drop)
        del argv[i:i + 2]
    return argv + list(add)


@pytest.mark.parametrize("edit, message", [
    ({"replace": ("--base", "/nonexistent/llm")}, "--base /nonexistent/llm: no such directory"),
    ({"drop": "--base"}, "--base is required"),
    ({"replace": ("experts_per_task=2", "experts=2")}, "unknown DyMoE flag"),
    ({"replace": ("experts_per_task=2", "task_id=3")}, "the runner sets --dymoe_task_id"),
    ({"replace": ("max_steps=3", "output_dir=x")}, "the runner sets --output_dir itself"),
    ({"replace": ("max_steps=3", "max_steps")}, "expected KEY=VALUE"),
    ({"add": ["--launcher", "deepspeed"]}, "--launcher deepspeed needs --deepspeed CONFIG"),
    ({"replace": ("--data-root", "/nonexistent/data")}, "task 'TaskA': train_json -> /nonexistent/data/train.json"),
    ({"replace": ("--method", "nosuch")}, "nosuch"),
    ({"add": ["--stages", "3"]}, "has 2 tasks; choose 1..2"),
    ({"add": ["--task-order", "TaskB,TaskC"]}, "unknown task(s) 'TaskC'; give each task at most once, from: TaskA, "
                                               "TaskB"),
    ({"add": ["--task-order", "TaskB,TaskB"]}, "task(s) 'TaskB' listed twice"),
    ({"add": ["--task-order", "TaskB,,TaskA"]}, "no empty name"),
    ({"add": ["--task-order", "random:x"]}, "after 'random:' give an integer seed"),
    ({"add": ["--task-order", "TaskB", "--stages", "2"]}, "has 1 task in --task-order; choose 1..1"),
])
def test_bad_input_is_refused_before_any_work(suite_file, smoke_data, tiny, tmp_path, capsys, edit, message):
    argv = _edited(run_argv(suite_file, smoke_data, tiny, tmp_path / "run"), **edit)
    assert cli(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_suite_with_unknown_scorer_or_bad_training_block_is_refused(suite_file, smoke_data, tiny, tmp_path, capsys):
    text = open(suite_file).read()
    for bad, message in ((text.replace("scorer: contains", "scorer: nope"), "'scorer' = 'nope' is not a known"),
                         (text.replace("learning_rate: 0.001", "data_path: x.json"), "'training' may not set"),
                         (text.replace("learning_rate: 0.001", "--lr: 1"), "is not a flag name")):
        bad_suite = tmp_path / "bad.yaml"
        bad_suite.write_text(bad)
        assert cli(run_argv(str(bad_suite), smoke_data, tiny, tmp_path / "run")) == 2
        assert message in capsys.readouterr().err


def test_deepspeed_launcher_then_resume_with_the_python_launcher(suite_file, smoke_data, tiny, tmp_path):
    """Stage 1 under ``deepspeed --num_gpus 1 --module llava_dymoe.train`` (ZeRO-2, gloo on CPU); stage 2
    resumed with ``--launcher python --deepspeed`` (a one-process DeepSpeed world)."""
    zero2 = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                         "scripts", "zero2.json")
    out = tmp_path / "run"
    argv = run_argv(suite_file, smoke_data, tiny, out, "incmoelora", "--deepspeed", zero2)
    assert cli(argv + ["--launcher", "deepspeed", "--num-gpus", "1", "--stages", "1"]) == 0
    assert cli(argv) == 0
    log = open(out / "commands.log").read()
    assert "--num_gpus 1" in log and "--module llava_dymoe.train" in log and "WORLD_SIZE=1" in log
    m = AccuracyMatrix.from_csv(str(out / "matrix.csv"))
    assert m.stages == ["1_TaskA", "2_TaskB"] and m.get(1, 1) == 25.0


def test_task_order_trains_the_named_task_first_and_analyses_read_the_runs_order(suite_file, smoke_data, tiny,
                                                                                    tmp_path, capsys):
    """``--task-order``: stage 1 is TaskB; run.json, the matrix and ``read_run_suite`` follow the new order."""
    from llava_dymoe.protocol.task_order import read_run_suite

    out = tmp_path / "run"
    assert cli(run_argv(suite_file, smoke_data, tiny, out, "dymoe", "--task-order", " TaskB , TaskA",
                        "--stages", "1")) == 0
    assert "task order (--task-order  TaskB , TaskA): TaskB, TaskA" in capsys.readouterr().err
    run = json.load(open(out / "run.json"))
    assert run["tasks"] == ["TaskB", "TaskA"] and run["suite"] == "tiny2"
    assert sorted(os.listdir(out / "stages")) == ["1_TaskB"]
    m = AccuracyMatrix.from_csv(str(out / "matrix.csv"))
    assert m.tasks == ["TaskB", "TaskA"] and m.stages == ["1_TaskB"]
    answers = os.path.join(out, "stages", "1_TaskB", "eval", "TaskB", "answers.jsonl")
    assert m.get("1_TaskB", "TaskB") == 25.0 == score_file("contains", answers, _refs(suite_file, "TaskB"))["score"]
    assert read_run_suite(run).task_names == ["TaskB", "TaskA"]
    assert read_run_suite({**run, "tasks": ["TaskA", "TaskB"]}).task_names == ["TaskA", "TaskB"]


def test_reeval_answers_every_cell_again_with_another_rule_and_leaves_the_run_untouched(finished_run):
    """``protocol.reeval``: TAG kept at inference on a finished run; outputs under reeval/, cached, resumable."""
    from llava_dymoe.protocol.reeval import main as reeval_main, reevaluate

    out = str(finished_run)
    before = tree_hashes(out, "checkpoints", "stages")
    matrix = reevaluate(out, "cascade")
    assert tree_hashes(out, "checkpoints", "stages") == before  # nothing of the run itself changed
    assert matrix.stages == ["1_TaskA", "2_TaskB"] and math.isnan(matrix.get("1_TaskA", "TaskB"))
    root = os.path.join(out, "reeval", "cascade")
    for stage, task in (("1_TaskA", "TaskA"), ("2_TaskB", "TaskA"), ("2_TaskB", "TaskB")):
        rec = json.load(open(os.path.join(root, stage, task, "score.json")))
        assert rec["assign_rule"] == "cascade" and matrix.get(stage, task) == rec["score"]
        marker = hashlib.sha256(open(os.path.join(out, "checkpoints", f"{stage}_llava_dymoe", ckpt.MARKER),
                                     "rb").read()).hexdigest()
        assert rec["checkpoint_marker_sha256"] == marker
    assert "ASSIGN RULE" in open(os.path.join(root, "eval_2.log")).read()  # the loader announced the override
    assert json.load(open(os.path.join(root, "metrics.json"))) == summary(matrix)
    cached = tree_hashes(out, "reeval")
    assert reevaluate(out, "cascade") == matrix and tree_hashes(out, "reeval") == cached  # nothing redone
    os.remove(os.path.join(root, "2_TaskB", "TaskA", "score.json"))  # a partial cell is redone
    assert reevaluate(out, "cascade") == matrix
    assert os.path.isfile(os.path.join(root, "2_TaskB", "TaskA", "score.json"))
    assert reeval_main([out, "--assign-rule", "nearest"]) == 2
    assert reeval_main([out, "--task-selector", "prism"]) == 2  # dymoe has no anchors to answer with
    with pytest.raises(SystemExit) as e:  # argparse: not allowed with --assign-rule
        reeval_main([out, "--assign-rule", "cascade", "--task-selector", "prism"])
    assert e.value.code == 2
    assert reeval_main([str(finished_run) + "_missing", "--assign-rule", "cascade"]) == 2
