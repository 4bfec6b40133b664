"""A two-task DyMoE sequence through the real upstream train() (plain, ZeRO-2, ZeRO-3), shared by the tests."""
import os

import pytest

from variant_recipes import TRAINED_VARIANTS
from llava_dymoe.integration.llava_args import (DYMOE_TRAIN_MODULE, dymoe_flags, llava_train_argv, run_python,
                                                single_rank_env)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS = 4


def train_task(tiny, data, out, task_id, prev=None, method="dymoe", deepspeed=None, steps=STEPS, **cfg):
    argv = llava_train_argv(tiny.llm, tiny.clip, data.train_json, data.image_folder, str(out), lora=False,
                            max_steps=steps, deepspeed=deepspeed,
                            extra=dymoe_flags(method, task_id, prev and str(prev), lora_dropout=0, **cfg))
    env = single_rank_env() if deepspeed else None
    return run_python(DYMOE_TRAIN_MODULE, argv, module=True, env=env, log_path=str(out) + ".log", timeout=600)


def _sequence(tiny, data, root, deepspeed=None):
    ds = os.path.join(REPO, "scripts", f"{deepspeed}.json") if deepspeed else None
    t1, t2 = root / "1_task_llava_dymoe", root / "2_task_llava_dymoe"
    train_task(tiny, data, t1, 1, deepspeed=ds)
    train_task(tiny, data, t2, 2, prev=t1, deepspeed=ds)
    return str(t1), str(t2)


@pytest.fixture(scope="session")
def sequence(tiny, smoke_data, tmp_path_factory):
    """(task-1 dir, task-2 dir) of a plain two-task dymoe run (16 experts per task, the default)."""
    return _sequence(tiny, smoke_data, tmp_path_factory.mktemp("seq_plain"))


@pytest.fixture(scope="session")
def sequence_zero(tiny, smoke_data, tmp_path_factory):
    """The same sequence under ZeRO-2 and ZeRO-3 (gradient checkpointing on, one rank)."""
    return {stage: _sequence(tiny, smoke_data, tmp_path_factory.mktemp(f"seq_{stage}"), stage)
            for stage in ("zero2", "zero3")}


@pytest.fixture(scope="session")
def variant_sequences(tiny, smoke_data, tmp_path_factory):
    """``{method: (task-1 dir, task-2 dir)}``: a two-task run of the ``TRAINED_VARIANTS`` recipes, 3 steps per
    task, routing statistics on."""
    out = {}
    for method in TRAINED_VARIANTS:
        root = tmp_path_factory.mktemp(f"seq_{method}")
        t1, t2 = root / f"1_task_llava_{method}", root / f"2_task_llava_{method}"
        train_task(tiny, smoke_data, t1, 1, method=method, steps=3, log_routing=True)
        train_task(tiny, smoke_data, t2, 2, prev=t1, method=method, steps=3, log_routing=True)
        out[method] = (str(t1), str(t2))
    return out
