"""A 2-rank ZeRO-3 DyMoE sequence with gradient checkpointing (slow suite): ``deepspeed --num_gpus 2 --module
llava_dymoe.train`` (gloo on CPU), task 1 then task 2.  Task 1's banks must reach task 2 bit-identical on every
tensor (frozen, partitioned over two ranks, gathered collectively at the save) and task 2's bank must train."""
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO
from llava_dymoe.integration import checkpoint as ckpt
from llava_dymoe.integration.llava_args import dymoe_flags, free_port, llava_train_argv


def _train_two_ranks(tiny, data, out, task_id, prev=None):
    launcher = shutil.which("deepspeed", path=os.path.dirname(sys.executable)) or shutil.which("deepspeed")
    if launcher is None:
        pytest.skip("no deepspeed launcher")
    argv = llava_train_argv(tiny.llm, tiny.clip, data.train_json, data.image_folder, str(out), lora=False,
                            max_steps=3, deepspeed=os.path.join(REPO, "scripts", "zero3.json"),
                            overrides={"gradient_checkpointing": True},
                            extra=dymoe_flags("dymoe", task_id, prev and str(prev), lora_dropout=0,
                                              experts_per_task=4))
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR",
                                                             "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    with open(str(out) + ".log", "w") as log:
        proc = subprocess.run([launcher, "--num_gpus", "2", "--master_port", str(free_port()), "--module",
                               "llava_dymoe.train", *argv], stdout=log, stderr=subprocess.STDOUT, env=env,
                              timeout=1800)
    text = open(str(out) + ".log").read()
    assert proc.returncode == 0, text[-4000:]
    return text


@pytest.mark.slow
def test_two_rank_zero3_sequence_with_gradient_checkpointing(tiny, smoke_data, tmp_path):
    t1, t2 = tmp_path / "1_task_2rank", tmp_path / "2_task_2rank"
    _train_two_ranks(tiny, smoke_data, t1, 1)
    # two ranks x 2 samples x 3 steps = 12 of the 16 samples (one rank: 6)
    assert json.load(open(t1 / "trainer_state.json"))["log_history"][-1]["epoch"] == 0.75
    text = _train_two_ranks(tiny, smoke_data, t2, 2, prev=t1)
    peaks = re.findall(r"peak memory, rank (\d): (\d+) MiB resident", text)
    assert sorted(r for r, _ in peaks) == ["0", "1"], text[-2000:]  # every rank reports its footprint
    print("task 2 peak resident memory per rank (MiB):", dict(peaks))
    old, new = load_file(os.path.join(t1, ckpt.EXPERTS)), load_file(os.path.join(t2, ckpt.EXPERTS))
    assert old and set(old) < set(new)
    assert [k for k in old if not torch.equal(old[k], new[k])] == []
    trained = [k for k in new if k.endswith("dymoe_B.t1")]
    assert trained and all(new[k].abs().sum() > 0 for k in trained)
    assert ckpt.verify(str(t2))["task_id"] == 2
