"""A ``checkpoint-N`` that does not load (a cut file, no trainer state) is named and skipped, and training
resumes from the newest one that loads, in ``train`` and in ``cli run`` (which removes it), instead of
failing the same way at every rerun.  A path given with ``--resume_from_checkpoint`` must load.

One tiny run (2 steps, ``checkpoint-1`` and ``checkpoint-2``) serves every test: each works on copies."""
import os
import shutil

import pytest

from llava_dymoe.errors import ConfigError
from llava_dymoe.integration.llava_args import dymoe_flags, llava_train_argv, run_python
from llava_dymoe.trainer.saving import check_loadable, newest_loadable

from reliability_helpers import run_module, tree_hashes

ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def _argv(tiny, data, out):
    return llava_train_argv(tiny.llm, tiny.clip, data.train_json, data.image_folder, str(out), lora=False,
                            max_steps=2, overrides={"save_strategy": "steps", "save_steps": 1}) + dymoe_flags()


@pytest.fixture(scope="module")
def saved_run(tiny, tmp_path_factory):
    from llava_dymoe.smoke_data import write_smoke_dataset

    root = tmp_path_factory.mktemp("resume_checks")
    data = write_smoke_dataset(str(root / "data"), n_train=8, n_test=2, seed=0)
    out = root / "run"
    run_python("llava_dymoe.train", _argv(tiny, data, out), module=True, env=ONE_THREAD, timeout=300)
    return data, out


def _interrupted(saved_run, dest):
    """A copy of the run as if killed after checkpoint-2: its claim and both checkpoint-N, no finished task."""
    _, out = saved_run
    dest.mkdir()
    shutil.copy(out / "dymoe_run.json", dest / "dymoe_run.json")
    for name in ("checkpoint-1", "checkpoint-2"):
        shutil.copytree(out / name, dest / name)
    return dest


def _cut(path):
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


@pytest.mark.parametrize("name", ["dymoe_experts.safetensors", "non_lora_trainables.bin", "optimizer.pt",
                                  "scheduler.pt", "trainer_state.json"])
def test_a_cut_or_missing_file_is_named(saved_run, tmp_path, name):
    ck = _interrupted(saved_run, tmp_path / "run") / "checkpoint-2"
    check_loadable(str(ck), deepspeed=False, task_id=1)
    if name == "trainer_state.json":
        (ck / name).unlink()
    else:
        _cut(ck / name)
    before = tree_hashes(tmp_path)
    with pytest.raises(ConfigError, match=f"--resume_from_checkpoint {ck} cannot be resumed from: its {name} "
                                          "does not load"):
        check_loadable(str(ck), deepspeed=False, task_id=1, flag="--resume_from_checkpoint")
    assert tree_hashes(tmp_path) == before  # checking reads only


def test_fallback_to_the_newest_loadable_and_the_runner_removes(saved_run, tmp_path):
    run = _interrupted(saved_run, tmp_path / "run")
    _cut(run / "checkpoint-2" / "optimizer.pt")
    said = []
    assert newest_loadable(str(run), False, 1, report=said.append) == str(run / "checkpoint-1")
    assert "checkpoint-2 cannot be resumed from (its optimizer.pt does not load" in said[0]
    assert "skipping it" in said[0] and (run / "checkpoint-2").exists()
    (run / "checkpoint-2" / "optimizer.pt").unlink()  # killed while saving: named without a flag nobody passed
    said.clear()
    assert newest_loadable(str(run), False, 1, report=said.append) == str(run / "checkpoint-1")
    assert f"checkpoint {run / 'checkpoint-2'} has no optimizer.pt: its save did not finish" in said[0]
    assert "--resume_from_checkpoint" not in said[0]
    _cut(run / "checkpoint-1" / "dymoe_experts.safetensors")
    said.clear()
    assert newest_loadable(str(run), False, 1, report=said.append, remove=True) is None  # cli run's stage folder
    assert len(said) == 2 and all("removing it" in s for s in said) and sorted(os.listdir(run)) == ["dymoe_run.json"]


def test_a_rerun_resumes_from_the_newest_valid_checkpoint(saved_run, tiny, tmp_path):
    """input: rerun into a run killed after checkpoint-2, whose banks file is cut -> exit 0, resumed from
    checkpoint-1 and saying so; the task finishes."""
    data, _ = saved_run
    run = _interrupted(saved_run, tmp_path / "run")
    _cut(run / "checkpoint-2" / "dymoe_experts.safetensors")
    res = run_module("llava_dymoe.train", *_argv(tiny, data, run), env=ONE_THREAD, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "checkpoint-2 cannot be resumed from (its dymoe_experts.safetensors does not load" in res.stderr
    assert f"resuming from {run / 'checkpoint-1'}" in res.stderr and (run / "dymoe_task.json").exists()
