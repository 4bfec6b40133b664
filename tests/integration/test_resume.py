"""Intermediate checkpoints and resume inside a task (issue 17 item 4).

A task trained with ``--save_strategy steps --save_steps 2`` is killed right after the save of step 2
(``os._exit``, no clean-up), then the same command is run again: LLaVA's ``train()`` resumes from
``checkpoint-2``.  The final banks must equal those of the uninterrupted run of the session fixtures
(``--save_strategy no``; saving consumes no randomness): bit-identical without DeepSpeed, and
bit-identical as measured on CPU with one rank under ZeRO-2 and ZeRO-3 (DeepSpeed restores its fp32
master weights and Adam moments from ``global_step2``).  ZeRO-2 shares ZeRO-3's DeepSpeed code path
and runs in the slow suite (suite time).
"""
import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO, STEPS
from llava_dymoe.integration import checkpoint as ckpt
from llava_dymoe.integration.llava_args import dymoe_flags, llava_train_argv, single_rank_env

KILLER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kill_after_save.py")


def _run(tiny, data, out, task_id, prev=None, deepspeed=None, kill_after=None):
    argv = llava_train_argv(tiny.llm, tiny.clip, data.train_json, data.image_folder, str(out), lora=False,
                            max_steps=STEPS, deepspeed=deepspeed and os.path.join(REPO, "scripts", f"{deepspeed}.json"),
                            overrides={"save_strategy": "steps", "save_steps": 2},
                            extra=dymoe_flags("dymoe", task_id, prev and str(prev), lora_dropout=0))
    env = dict(os.environ, PYTHONUNBUFFERED="1", **(single_rank_env() if deepspeed else {}))
    cmd = [sys.executable, KILLER, *argv] if kill_after else [sys.executable, "-m", "llava_dymoe.train", *argv]
    if kill_after:
        env["KILL_AFTER_SAVE"] = str(kill_after)
    log = str(out) + (".killed.log" if kill_after else ".log")
    with open(log, "w") as f:
        proc = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=600)
    return proc.returncode, open(log).read()


def _experts(path):
    return load_file(os.path.join(path, ckpt.EXPERTS))


def _kill_and_resume(tiny, data, out, task_id, prev=None, deepspeed=None):
    rc, _ = _run(tiny, data, out, task_id, prev, deepspeed, kill_after=2)
    assert rc == 137
    # no tmp-checkpoint-*, no final files; the training lock (a dot-file) was dropped with its holder
    assert sorted(os.listdir(out)) == [".dymoe_train.lock", "checkpoint-2", ckpt_claim()]
    at_kill = _experts(out / "checkpoint-2")
    rc, log = _run(tiny, data, out, task_id, prev, deepspeed)
    assert rc == 0, log[-3000:]
    return at_kill, log


def ckpt_claim():
    from llava_dymoe.integration.output_dir import CLAIM

    return CLAIM


def _assert_resumed_equal(out, reference, at_kill):
    final, ref = _experts(out), _experts(reference)
    assert set(final) == set(ref) == set(at_kill)
    diff = {k: (final[k] - ref[k]).abs().max().item() for k in ref}
    assert all(torch.equal(final[k], ref[k]) for k in ref), max(diff.values())
    # the resumed part trained: the new bank moved between step 2 and step 4
    task_id = json.load(open(os.path.join(out, "config.json")))["dymoe"]["task_id"]
    new = [k for k in ref if k.endswith(f".t{task_id - 1}")]
    assert any(not torch.equal(final[k], at_kill[k]) for k in new)
    assert json.load(open(os.path.join(out, "trainer_state.json")))["global_step"] == STEPS


def test_checkpoint_n_holds_banks_router_and_projector_and_resumes_bit_identical(sequence, tiny, smoke_data,
                                                                                   tmp_path):
    """Task 2 of the plain sequence, killed after checkpoint-2 and resumed = the uninterrupted task 2."""
    t1, t2 = sequence
    out = tmp_path / "2_task_resumed"
    at_kill, log = _kill_and_resume(tiny, smoke_data, out, 2, prev=t1)
    assert "resumed 46 trainable tensors from" in log and "checkpoint-2" in log
    ck = out / "checkpoint-2"
    files = set(os.listdir(ck))
    assert {ckpt.CONFIG, ckpt.EXPERTS, ckpt.NON_LORA, ckpt.ARGS, "optimizer.pt", "scheduler.pt", "rng_state.pth",
            "trainer_state.json", "training_args.bin"} <= files
    assert ckpt.MARKER not in files and not ckpt.is_finished(str(ck))  # not a finished task
    assert not files & {"pytorch_model.bin", "model.safetensors", "adapter_model.bin"}  # no base model
    # every bank of both tasks and their routers; the old bank as task 1 saved it
    old = _experts(t1)
    assert any(".dymoe_router.t1" in k for k in at_kill) and set(old) < set(at_kill)
    assert all(torch.equal(at_kill[k], old[k]) for k in old)
    assert sorted(torch.load(ck / ckpt.NON_LORA, weights_only=True)) == sorted(
        torch.load(os.path.join(t2, ckpt.NON_LORA), weights_only=True))
    args = torch.load(ck / "training_args.bin", weights_only=False)  # the PicklingError of issue 17
    assert type(args).__name__ == "DyMoETrainingArguments" and args.dymoe_task_id == 2
    _assert_resumed_equal(out, t2, at_kill)
    assert ckpt.verify(str(out))["task_id"] == 2
    projector_a = torch.load(os.path.join(out, ckpt.NON_LORA), weights_only=True)
    projector_b = torch.load(os.path.join(t2, ckpt.NON_LORA), weights_only=True)
    assert all(torch.equal(projector_a[k], projector_b[k]) for k in projector_b)


@pytest.mark.parametrize("stage", ["zero3", pytest.param("zero2", marks=pytest.mark.slow)])
def test_resume_under_zero_is_bit_identical(sequence_zero, tiny, smoke_data, tmp_path, stage):
    """Task 1 under ZeRO-2/3 (one rank, CPU), killed after checkpoint-2 and resumed = the uninterrupted task 1."""
    out = tmp_path / f"1_task_{stage}_resumed"
    at_kill, log = _kill_and_resume(tiny, smoke_data, out, 1, deepspeed=stage)
    assert "resumed DeepSpeed state" in log
    ds = os.listdir(out / "checkpoint-2" / "global_step2")
    model_states = torch.load(out / "checkpoint-2" / "global_step2" / next(f for f in ds if "model_states" in f),
                              map_location="cpu", weights_only=False)
    # DeepSpeed's own state holds the trainable weights only (not the frozen base model)
    assert all("dymoe_" in k or "mm_projector" in k for k in model_states["module"])
    assert not model_states.get("frozen_param_fragments")
    _assert_resumed_equal(out, sequence_zero[stage][0], at_kill)
