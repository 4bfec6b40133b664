"""scripts/gpu_check.sh: syntax, refusal without a GPU, and its Python parts dry-run on the CPU."""
import json
import os
import subprocess
import sys

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, "scripts", "gpu_check.sh")


def _env():
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="2")
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _results(text):
    return [json.loads(line[len("RESULT "):]) for line in text.splitlines() if line.startswith("RESULT ")]


def test_script_parses_and_has_help():
    subprocess.run(["bash", "-n", SCRIPT], check=True)
    out = subprocess.run(["bash", SCRIPT, "--help"], capture_output=True, text=True, check=True).stdout
    assert "--dry-run" in out and "ZeRO-2" in out
    bad = subprocess.run(["bash", SCRIPT, "--bogus"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown argument" in bad.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_without_cuda_it_refuses_unless_dry_run(tmp_path):
    proc = subprocess.run(["bash", SCRIPT, "--out", str(tmp_path)], capture_output=True, text=True, env=_env())
    assert proc.returncode == 2 and "no CUDA device" in proc.stderr


def test_layer_check_dry_run():
    proc = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "gpu_check.py"), "layer", "--dry-run"],
                          capture_output=True, text=True, env=_env(), timeout=600)
    (res,) = _results(proc.stdout)
    assert proc.returncode == 0 and res["ok"] and res["device"] == "cpu", proc.stdout + proc.stderr
    assert float(res["train_fp32_sparse_vs_dense"]) <= 1e-4


@pytest.mark.slow
def test_whole_script_dry_run(tmp_path):
    """tests (two core files + layer check), the 2-task ZeRO-2 sequence on the tiny model, bench_step on tiny."""
    proc = subprocess.run(["bash", SCRIPT, "--dry-run", "--out", str(tmp_path)], capture_output=True, text=True,
                          env=_env(), timeout=3000)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [line.split("\t") for line in open(tmp_path / "steps.tsv").read().splitlines()]
    assert [r[0] for r in rows] == ["tests", "sequence", "bench"] and all(r[1] == "ok" for r in rows)
    seq = _results(open(tmp_path / "sequence.log").read())[-1]
    assert seq["old_banks_bit_identical"] and seq["new_bank_moved"] and seq["zero"] == 2
    assert " size " in proc.stdout and "dymoe2" in proc.stdout
