"""Process hygiene (issue 17 item 6): a SIGKILLed runner takes its whole tree along (the stage child, what a
launcher started under it, DataLoader workers), and two trainings never work in one output folder at once."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from llava_dymoe.integration import process_hygiene as hygiene

from reliability_helpers import run_module, tree_hashes

#: A stage child: starts a "rank" (a grandchild that, like llava_dymoe.train under the DeepSpeed launcher, only
#: has the environment variable) and a DataLoader worker, writes every pid, then works forever.
CHILD = textwrap.dedent("""
    import os, subprocess, sys, time
    from llava_dymoe.integration.process_hygiene import die_with_parent_if_asked
    die_with_parent_if_asked()
    out = sys.argv[1]
    rank = subprocess.Popen([sys.executable, "-c", "from llava_dymoe.integration.process_hygiene import "
                             "die_with_parent_if_asked as d; d(); import time; time.sleep(600)"])
    import torch
    from torch.utils.data import DataLoader, Dataset

    class Slow(Dataset):
        def __len__(self):
            return 10 ** 6
        def __getitem__(self, i):
            open(os.path.join(out, "worker.pid"), "w").write(str(os.getpid()))
            time.sleep(0.2)
            return i

    it = iter(DataLoader(Slow(), num_workers=1))
    next(it)
    open(os.path.join(out, "pids"), "w").write(f"{os.getpid()} {rank.pid}")
    while True:
        next(it)
""")

RUNNER = textwrap.dedent("""
    import sys
    from llava_dymoe.protocol.launch import run_logged
    out = sys.argv[1]
    run_logged([sys.executable, "-c", sys.argv[2], out], env={}, log_path=out + "/stage.log",
               commands_log=out + "/commands.log", label="stage")
""")


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux-only")
def test_sigkill_of_the_runner_ends_the_whole_stage_tree(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop(hygiene.DIE_WITH_PARENT_ENV, None)
    runner = subprocess.Popen([sys.executable, "-c", RUNNER, str(tmp_path), CHILD], env=env)
    try:
        deadline = time.time() + 120
        while not ((tmp_path / "pids").exists() and (tmp_path / "worker.pid").exists()):
            assert runner.poll() is None and time.time() < deadline, (tmp_path / "stage.log").read_text()
            time.sleep(0.2)
        child, rank = map(int, (tmp_path / "pids").read_text().split())
        worker = int((tmp_path / "worker.pid").read_text())
        assert all(map(_alive, (child, rank, worker)))
        assert os.getpgid(child) == child != os.getpgid(runner.pid)  # the stage leads its own group
        runner.send_signal(signal.SIGKILL)
        runner.wait()
        deadline = time.time() + 20  # the worker's watchdog polls every 5 s
        while any(map(_alive, (child, rank, worker))) and time.time() < deadline:
            time.sleep(0.2)
        assert not [p for p in (child, rank, worker) if _alive(p)]
    finally:
        runner.kill()
        for name in ("pids", "worker.pid"):
            for pid in ((tmp_path / name).read_text().split() if (tmp_path / name).exists() else []):
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except OSError:
                    pass


def test_a_second_training_in_a_busy_output_dir_is_refused(data, tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from llava_dymoe.integration.process_hygiene "
                               "import hold_output_lock; hold_output_lock(sys.argv[1]); print('held', flush=True); "
                               "time.sleep(600)", str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        (out / "dymoe_run.json").write_text("{}")  # an unfinished run of ours: only the lock stands in the way
        before = tree_hashes(out)
        res = run_module("llava_dymoe.train", "--model_name_or_path", "no/such-model", "--data_path", data.train_json,
                         "--image_folder", data.image_folder, "--output_dir", out)
        assert res.returncode == 2 and "Traceback" not in res.stderr
        assert res.stderr.strip().splitlines()[-1] == (
            f"error: another training (pid {holder.pid}) is working in --output_dir {out}; wait for it to finish "
            "or stop it, then rerun (an interrupted run resumes from its checkpoint-N)")
        assert tree_hashes(out) == before
    finally:
        holder.kill()
        holder.wait()
    # the kernel dropped the dead holder's lock: the folder is free again
    f = hygiene.hold_output_lock(str(out))
    assert f is not None and (out / hygiene.TRAIN_LOCK).read_text() == str(os.getpid())
    hygiene._HELD.remove(f)
    f.close()


def test_without_the_variable_nothing_changes(monkeypatch):
    monkeypatch.delenv(hygiene.DIE_WITH_PARENT_ENV, raising=False)
    hygiene.die_with_parent_if_asked()  # a no-op: a user's nohup run is not tied to its shell
