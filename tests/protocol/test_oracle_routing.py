"""``--oracle-routing`` and ``DYMOE_EVAL_MAX_TASKS``: routing restricted to the banks of task i gives back R[i, i].

``incmoelora`` on the tiny LLaVA, two short stages, projector frozen (``--dymoe-arg
train_projector=False``).  The old banks are frozen and copied bit for bit, so stage 2's checkpoint
loaded with bank t0 only *is* stage 1's model: the restricted evaluation of task 1 after stage 2 must
reproduce R[1, 1] exactly (same answer texts, same score), while the unrestricted model differs
(its logits), which is what makes the check able to fail.  Stage 1 runs without the flag (default
outputs only), stage 2 adds it on resume.
"""
import hashlib
import json
import os

import pytest
import torch

from smoke_suite import write_smoke_suite
from llava_dymoe.cli import main as cli
from llava_dymoe.eval.matrix import AccuracyMatrix
from llava_dymoe.integration import checkpoint as ckpt
from llava_dymoe.integration.eval_loader import MAX_TASKS_ENV, load_dymoe_for_eval, restrict_to_tasks

STAGE1, STAGE2 = "1_TaskA", "2_TaskB"


def _argv(suite, smoke_data, tiny, out, *extra):
    return ["run", "--suite", suite, "--data-root", smoke_data.root, "--method", "incmoelora", "--output-dir",
            str(out), "--base", tiny.llm, "--vision-tower", tiny.clip, "--train-arg", "max_steps=3",
            "--dymoe-arg", "experts_per_task=2", "--dymoe-arg", "train_projector=False", "--threads", "1",
            "--no-plot", *extra]


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    return write_smoke_suite(tmp_path_factory.mktemp("oracle_suite") / "oracle2.yaml", "oracle2",
                             tasks=("TaskA", "TaskB"), learning_rate=0.001)


@pytest.fixture(scope="module")
def oracle_run(suite, smoke_data, tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("oracle") / "run"
    assert cli(_argv(suite, smoke_data, tiny, out, "--stages", "1")) == 0
    assert not (out / "matrix_restricted.csv").exists() and not (out / "oracle_routing.json").exists()
    assert "Oracle routing" not in (out / "report.md").read_text()
    assert cli(_argv(suite, smoke_data, tiny, out, "--oracle-routing")) == 0
    return out


def _checkpoint(out, stage):
    return str(out / "checkpoints" / f"{stage}_llava_incmoelora")


def _answers(path):
    return [(r["question_id"], r["text"]) for r in map(json.loads, open(path))]


def test_restricted_evaluation_gives_back_r_ii_exactly(oracle_run):
    out = oracle_run
    own = out / "stages" / STAGE1 / "eval" / "TaskA"
    restricted = out / "stages" / STAGE2 / "restricted" / "TaskA"
    full = out / "stages" / STAGE2 / "eval" / "TaskA"
    assert len(_answers(own / "answers.jsonl")) == 4
    assert _answers(restricted / "answers.jsonl") == _answers(own / "answers.jsonl")
    rec, own_rec = (json.load(open(d / "score.json")) for d in (restricted, own))
    assert rec["score"] == own_rec["score"] and rec["per_question"] == own_rec["per_question"]
    assert rec["max_tasks"] == 1 and rec["projector_unchanged"] is True
    # the precondition: projector frozen, so every non-expert weight is the same in both checkpoints
    a, b = (torch.load(os.path.join(_checkpoint(out, s), ckpt.NON_LORA)) for s in (STAGE1, STAGE2))
    assert a and all(torch.equal(a[k], b[k]) for k in a)

    R = AccuracyMatrix.from_csv(str(out / "matrix.csv"))
    Rr = AccuracyMatrix.from_csv(str(out / "matrix_restricted.csv"))
    assert Rr.stages == R.stages == [STAGE1, STAGE2]
    assert Rr.get(STAGE2, "TaskA") == R.get(STAGE1, "TaskA") == own_rec["score"]
    assert Rr.get(STAGE2, "TaskB") == R.get(STAGE2, "TaskB") and Rr.get(STAGE1, "TaskA") == R.get(STAGE1, "TaskA")
    assert json.load(open(full / "score.json"))["score"] == R.get(STAGE2, "TaskA")
    cells = json.load(open(out / "oracle_routing.json"))["cells"]
    assert cells == [{"stage": STAGE2, "task": "TaskA", "banks": 1, "restricted": own_rec["score"],
                      "full": R.get(STAGE2, "TaskA"), "own": own_rec["score"], "own_stage": STAGE1,
                      "projector_unchanged": True, "same_answers_as_own": True}]
    report = (out / "report.md").read_text()
    assert "## Oracle routing" in report and f"| {STAGE2} | TaskA |" in report
    log = (out / "commands.log").read_text()
    assert f"{MAX_TASKS_ENV}=1 " in log and "restricted eval TaskA" in log
    assert "ORACLE ROUTING" in (out / "stages" / STAGE2 / "restricted_eval.log").read_text()
    # the stage record is the default one: it does not vouch for the restricted files
    assert not any("restricted" in k for k in json.load(open(out / "stages" / STAGE2 / "stage.json"))["files"])


def _logits(path, tiny, **kw):
    from PIL import Image
    from llava.mm_utils import process_images
    from llava_dymoe.integration.tiny_model import vicuna_prompt_ids

    tok, model, processor, _ = load_dymoe_for_eval(path, tiny.llm, "x", device="cpu", device_map="cpu", **kw)
    model = model.float()
    ids = vicuna_prompt_ids(tok, "What color is the square in the image?")
    pix = process_images([Image.new("RGB", (40, 32), (220, 30, 30))], processor, model.config)
    with torch.inference_mode():
        return model(input_ids=ids, images=pix).logits[0]


def test_restricted_load_is_the_earlier_model_and_the_full_one_is_not(oracle_run, tiny, monkeypatch):
    own = _logits(_checkpoint(oracle_run, STAGE1), tiny)
    restricted = _logits(_checkpoint(oracle_run, STAGE2), tiny, max_tasks=1)
    full = _logits(_checkpoint(oracle_run, STAGE2), tiny)
    assert torch.equal(restricted, own)
    assert (full - own).abs().max().item() > 1e-4  # the later bank changes the model: the test can fail
    monkeypatch.setenv(MAX_TASKS_ENV, "1")  # the environment variable does what max_tasks does
    assert torch.equal(_logits(_checkpoint(oracle_run, STAGE2), tiny), own)
    monkeypatch.setenv(MAX_TASKS_ENV, "2")  # = all banks of stage 2
    assert torch.equal(_logits(_checkpoint(oracle_run, STAGE2), tiny), full)


def _tree(root):
    return {os.path.join(d, f): hashlib.sha256(open(os.path.join(d, f), "rb").read()).hexdigest()
            for d, _, files in os.walk(root) for f in files}


def test_rerun_with_the_flag_keeps_the_restricted_evaluations(oracle_run, suite, smoke_data, tiny, capsys):
    before = _tree(oracle_run / "stages")
    capsys.readouterr()
    assert cli(_argv(suite, smoke_data, tiny, oracle_run, "--oracle-routing")) == 0
    err = capsys.readouterr().err
    assert err.count("finished earlier: verified, skipped") == 2 and "oracle routing: evaluating" not in err
    assert _tree(oracle_run / "stages") == before


@pytest.mark.parametrize("value, message", [
    ("0", "is out of range: {ckpt} holds 1 task bank(s) (t0..t0), so k must be in 1..1"),
    ("2", "is out of range: {ckpt} holds 1 task bank(s) (t0..t0), so k must be in 1..1"),
    ("two", "'two' is not a whole number of task banks"),
])
def test_loader_refuses_a_bad_bank_count(oracle_run, tiny, monkeypatch, value, message):
    path = _checkpoint(oracle_run, STAGE1)
    monkeypatch.setenv(MAX_TASKS_ENV, value)
    with pytest.raises(ckpt.CheckpointError) as e:
        load_dymoe_for_eval(path, tiny.llm, "x", device="cpu", device_map="cpu")
    assert message.format(ckpt=path) in str(e.value) and MAX_TASKS_ENV in str(e.value)
    monkeypatch.delenv(MAX_TASKS_ENV)
    with pytest.raises(ckpt.CheckpointError, match="max_tasks=3 is out of range"):
        load_dymoe_for_eval(path, tiny.llm, "x", device="cpu", device_map="cpu", max_tasks=3)


def test_restriction_needs_one_bank_per_task(oracle_run):
    state = ckpt.load_task_state(_checkpoint(oracle_run, STAGE2))
    kept = restrict_to_tasks(state, "ckpt", 1)
    assert kept["config"].num_tasks == 1 and {k.rsplit(".", 1)[1] for k in kept["experts"]} == {"t0"}
    assert len(kept["experts"]) * 2 == len(state["experts"]) and state["config"].num_tasks == 2
    state["config"].expand = False
    with pytest.raises(ckpt.CheckpointError, match="expand=False"):
        restrict_to_tasks(state, "ckpt", 1)


def test_runner_refuses_oracle_routing_without_banks_per_task_or_with_the_variable_set(
        suite, smoke_data, tiny, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    assert cli(_argv(suite, smoke_data, tiny, out, "--oracle-routing", "--dymoe-arg", "expand=False")) == 2
    assert "--oracle-routing: method 'incmoelora' keeps one bank" in capsys.readouterr().err
    monkeypatch.setenv(MAX_TASKS_ENV, "1")
    assert cli(_argv(suite, smoke_data, tiny, out)) == 2
    assert f"{MAX_TASKS_ENV}=1 is set in this environment" in capsys.readouterr().err
    assert not out.exists()
