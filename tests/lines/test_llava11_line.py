"""The 1.1 upstream line (llava-torch 1.1.1, transformers 4.31.0) end to end with the tiny model.

Run in .venv-llava11 by ``make test-llava11``; on the 1.2 line the same scenarios are covered by
tests/integration (sequence, ZeRO), tests/patches/test_eval_shim.py and tests/protocol/test_runner.py.
Everything goes through the public entry points (``python -m llava_dymoe.train`` / ``.eval`` /
``.cli run``) and the line's own upstream modules (``train()`` without arguments, its
``model_vqa_loader`` that hard-codes 128 new tokens, hence one question per eval here).
"""
import json
import os

import pytest
import torch
from safetensors.torch import load_file

from line_marks import on_line
from llava_dymoe.integration import checkpoint as ckpt
from llava_dymoe.integration.llava_args import (DYMOE_TRAIN_MODULE, UPSTREAM_TRAIN, dymoe_flags, llava_train_argv,
                                                run_python, single_rank_env)

pytestmark = [pytest.mark.llava11,
              on_line("1.1", "the 1.2 line runs these scenarios in tests/integration, tests/patches, tests/protocol")]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def _train(tiny, data, out, task_id, prev=None, method="dymoe", deepspeed=None, steps=3):
    argv = llava_train_argv(tiny.llm, tiny.clip, data.train_json, data.image_folder, str(out), lora=False,
                            max_steps=steps, deepspeed=deepspeed,
                            extra=dymoe_flags(method, task_id, prev and str(prev), experts_per_task=2,
                                              lora_dropout=0))
    env = single_rank_env() if deepspeed else None
    return run_python(DYMOE_TRAIN_MODULE, argv, module=True, env=env, log_path=str(out) + ".log", timeout=600)


def _sequence(tiny, data, root, method="dymoe", deepspeed=None):
    t1, t2 = root / f"1_a_llava_{method}", root / f"2_b_llava_{method}"
    p1 = _train(tiny, data, t1, 1, method=method, deepspeed=deepspeed)
    p2 = _train(tiny, data, t2, 2, prev=t1, method=method, deepspeed=deepspeed)
    return str(t1), str(t2), p1.stdout + p2.stdout


def _old_banks_identical(t1, t2):
    a, b = load_file(os.path.join(t1, ckpt.EXPERTS)), load_file(os.path.join(t2, ckpt.EXPERTS))
    assert a and set(a) <= set(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    return a, b


@pytest.fixture(scope="module")
def seq11(tiny, smoke_data, tmp_path_factory):
    return _sequence(tiny, smoke_data, tmp_path_factory.mktemp("line11_seq"))


@pytest.fixture(scope="module")
def one_question(smoke_data, tmp_path_factory):
    path = tmp_path_factory.mktemp("line11_q") / "questions.jsonl"
    with open(smoke_data.questions) as f:
        path.write_text(f.readline())
    return str(path)


def test_two_dymoe_tasks_old_banks_bit_identical(seq11):
    t1, t2, log = seq11
    a, b = _old_banks_identical(t1, t2)
    assert any(k.endswith("dymoe_B.t1") for k in b) and not any(k.endswith(".t1") for k in a)
    block = json.load(open(os.path.join(t2, "config.json")))["dymoe"]
    assert block["task_id"] == 2 and block["config"]["num_tasks"] == 2
    assert ckpt.verify(t2)["task_id"] == 2
    # the 1.1 line's patch set: T1-T3 plus the single-modality sampler fix; train() got no argument
    assert "patched llava.train.llava_trainer:get_modality_length_grouped_indices (T4" in log
    assert "unexpected keyword argument" not in log and "tokenization mismatch" not in log


def test_eval_through_the_lines_own_model_vqa_loader(seq11, tiny, smoke_data, one_question, tmp_path):
    import llava.eval.model_vqa_loader as loader_mod

    assert "--max_new_tokens" not in open(loader_mod.__file__).read()  # really the 1.1.1 module
    answers = tmp_path / "answers.jsonl"
    proc = run_python("llava_dymoe.eval", [
        "llava.eval.model_vqa_loader", "--model-path", seq11[1], "--model-base", tiny.llm,
        "--question-file", one_question, "--image-folder", smoke_data.image_folder,
        "--answers-file", str(answers), "--temperature", "0", "--conv-mode", "vicuna_v1"],
        module=True, env=ONE_THREAD, timeout=600)
    rows = [json.loads(line) for line in open(answers)]
    assert [r["question_id"] for r in rows] == [json.loads(open(one_question).readline())["question_id"]]
    assert isinstance(rows[0]["text"], str) and rows[0]["model_id"] == "2_b_llava_dymoe"
    assert "is a DyMoE checkpoint; rebuilding it" in proc.stdout
    assert "reverted patch set 'eval'" in proc.stdout


def test_a_baseline_method_two_tasks(tiny, smoke_data, tmp_path):
    t1, t2, _ = _sequence(tiny, smoke_data, tmp_path, method="olora")
    a, b = _old_banks_identical(t1, t2)  # O-LoRA: the task-1 adapter is frozen in task 2
    assert json.load(open(os.path.join(t2, "config.json")))["dymoe"]["method"] == "olora"


def test_zero2_one_rank_two_tasks(tiny, smoke_data, tmp_path):
    t1, t2, log = _sequence(tiny, smoke_data, tmp_path, deepspeed=os.path.join(REPO, "scripts", "zero2.json"))
    _old_banks_identical(t1, t2)
    assert "NCCL" not in log


def test_runner_two_stages(tiny, smoke_data, one_question, tmp_path):
    from llava_dymoe.cli import main as cli
    from llava_dymoe.eval.matrix import AccuracyMatrix

    suite = tmp_path / "s.yaml"
    suite.write_text(f"""name: line11
defaults:
  image_root: images
  generator: llava.eval.model_vqa_loader
  scorer: contains
  max_new_tokens: 6
tasks:
  - name: TaskA
    train_json: train.json
    question_file: {one_question}
    annotation_file: {one_question}
    reference_file: answers_ref.jsonl
  - name: TaskB
    train_json: train.json
    question_file: {one_question}
    annotation_file: {one_question}
    reference_file: answers_ref.jsonl
""")
    out = tmp_path / "run"
    assert cli(["run", "--suite", str(suite), "--data-root", smoke_data.root, "--method", "dymoe",
                "--output-dir", str(out), "--base", tiny.llm, "--vision-tower", tiny.clip,
                "--train-arg", "max_steps=2", "--dymoe-arg", "experts_per_task=2", "--threads", "1"]) == 0
    m = AccuracyMatrix.from_csv(os.path.join(out, "matrix.csv"))
    assert m.tasks == ["TaskA", "TaskB"] and m.stages == ["1_TaskA", "2_TaskB"]
    assert m.get("2_TaskB", "TaskA") == m.get("2_TaskB", "TaskA")  # evaluated (not NaN)
    jobs = open(os.path.join(out, "stages", "2_TaskB", "eval", "jobs.json")).read()
    assert "llava.eval.model_vqa_loader" in jobs and "--max_new_tokens" not in jobs  # 1.1.1's has no such flag


def test_upstream_lora_training_still_works(tiny, smoke_data, tmp_path):
    out = tmp_path / "llava-tiny-lora"
    argv = llava_train_argv(tiny.llm, tiny.clip, smoke_data.train_json, smoke_data.image_folder, str(out),
                            max_steps=2, overrides={"group_by_modality_length": False})
    run_python(UPSTREAM_TRAIN, argv, log_path=str(out) + ".log", env=ONE_THREAD, timeout=600)
    assert {"adapter_model.bin", "non_lora_trainables.bin"} <= set(os.listdir(out)) or \
        {"adapter_model.safetensors", "non_lora_trainables.bin"} <= set(os.listdir(out))
