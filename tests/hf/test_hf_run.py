"""``llava-dymoe run --host hf-llava``: a whole two-task sequence on the HF LLaVA host (train_hf per stage, eval_hf
per evaluated task, the shared scorers and accuracy matrix), then the same command resumes without training."""
import glob
import json
import os
import subprocess
import sys

import pytest

transformers = pytest.importorskip("transformers", minversion="5.0")

import torch  # noqa: E402
from hf_helpers import REPO  # noqa: E402

SUITE = """name: hfsmoke
defaults:
  image_root: images
  generator: llava.eval.model_vqa_loader
  scorer: contains
  max_new_tokens: 4
training:
  max_steps: 3
  learning_rate: 0.001
tasks:
  - name: A
    train_json: {a}/train.json
    question_file: {a}/questions.jsonl
    annotation_file: {a}/questions.jsonl
    reference_file: {a}/answers_ref.jsonl
    image_root: {a}/images
  - name: B
    train_json: {b}/train.json
    question_file: {b}/questions.jsonl
    annotation_file: {b}/questions.jsonl
    reference_file: {b}/answers_ref.jsonl
    image_root: {b}/images
"""


def _run(argv):
    env = {**os.environ, "PYTHONPATH": REPO, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "llava_dymoe.console", "run", *argv], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=600)


def test_run_host_hf_llava_two_stages_then_resume(hf_tiny, hf_tasks, tmp_path):
    from safetensors.torch import load_file

    from llava_dymoe.integration.checkpoint import sha256_file

    first, second = hf_tasks
    root = os.path.dirname(first.root)
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE.format(a=os.path.basename(first.root), b=os.path.basename(second.root)))
    out = tmp_path / "run"
    argv = ["--host", "hf-llava", "--suite", str(suite), "--data-root", root, "--method", "dymoe",
            "--output-dir", str(out), "--base", hf_tiny, "--no-plot"]
    proc = _run(argv)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out / "matrix.csv") as f:
        rows = [line.strip().split(",") for line in f if line.strip()]
    assert len(rows) == 3 and rows[0][-2:] == ["A", "B"]
    assert sorted(os.path.relpath(p, out) for p in glob.glob(str(out / "stages" / "*" / "eval" / "*" / "answers.jsonl"))) \
        == [os.path.join("stages", s, "eval", t, "answers.jsonl") for s, t in (("1_A", "A"), ("2_B", "A"), ("2_B", "B"))]
    with open(out / "run.json") as f:
        assert json.load(f)["host"] == "hf-llava"
    ckpts = sorted(glob.glob(str(out / "checkpoints" / "*")))
    assert len(ckpts) == 2
    for path in ckpts:
        with open(os.path.join(path, "config.json")) as f:
            assert json.load(f)["dymoe"]["host"] == "hf-llava"
    a = load_file(os.path.join(ckpts[0], "dymoe_experts.safetensors"))
    b = load_file(os.path.join(ckpts[1], "dymoe_experts.safetensors"))
    assert len(a) == 42 and all(torch.equal(b[k], v) for k, v in a.items())
    before = {p: sha256_file(p) for p in glob.glob(str(out / "checkpoints" / "*" / "*"))}
    again = _run(argv)  # everything finished: nothing is trained or answered again
    assert again.returncode == 0, again.stderr[-3000:]
    assert "training" not in again.stderr and before == {p: sha256_file(p) for p in before}


def test_anchor_selectors_are_refused_on_the_hf_host_before_training(hf_tiny, hf_tasks, tmp_path):
    """dymoe_plus (= anchored_keys) and the other anchor selectors read LLaVA's vision tower and embeddings, not ported
    to the HF hosts: the stage fails at once with a message naming the host and what runs there instead."""
    first, second = hf_tasks
    root = os.path.dirname(first.root)
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE.format(a=os.path.basename(first.root), b=os.path.basename(second.root)))
    out = tmp_path / "run"
    proc = _run(["--host", "hf-llava", "--suite", str(suite), "--data-root", root, "--method", "dymoe_plus",
                 "--output-dir", str(out), "--base", hf_tiny, "--no-plot"])
    assert proc.returncode != 0
    log = open(out / "stages" / "1_A" / "train.log").read()
    assert "--dymoe_method dymoe_plus (task_selector='shortlist')" in log and "'hf-llava'" in log
    assert "use --dymoe_method key_selector" in log and "Traceback" not in log.split("ConfigError")[-1]
    assert not glob.glob(str(out / "checkpoints" / "*" / "dymoe_experts.safetensors"))
