"""patches/llava-torch-1.1.1-dymoe.diff on a pristine copy of llava-torch 1.1.1: two DyMoE tasks through the
patched fork's own train() (no run-time patch), the fork's builder hook rebuilds the checkpoint, and the fork's
model_vqa_loader answers through the eval shim."""
import json
import os

import pytest
import torch
from safetensors.torch import load_file

from line_marks import on_line, patched_llava_copy
from llava_dymoe.integration import checkpoint as ckpt
from llava_dymoe.integration.llava_args import UPSTREAM_TRAIN, dymoe_flags, llava_train_argv, run_python

pytestmark = [pytest.mark.llava11, on_line("1.1", "the 1.2 line's diff is tested in tests/integration/test_fork_diff.py")]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DIFF = os.path.join(REPO, "patches", "llava-torch-1.1.1-dymoe.diff")


@pytest.fixture(scope="module")
def forked(tmp_path_factory):
    return {**patched_llava_copy(DIFF, tmp_path_factory.mktemp("fork11_site")), "OMP_NUM_THREADS": "1"}


def test_two_tasks_and_an_eval_through_the_patched_fork(forked, tiny, smoke_data, tmp_path):
    t1, t2 = tmp_path / "1_a_llava_dymoe", tmp_path / "2_b_llava_dymoe"
    logs = ""
    for t, out, prev in ((1, t1, None), (2, t2, str(t1))):
        argv = llava_train_argv(tiny.llm, tiny.clip, smoke_data.train_json, smoke_data.image_folder, str(out),
                                lora=False, max_steps=2, extra=dymoe_flags("dymoe", t, prev, experts_per_task=2))
        logs += run_python(UPSTREAM_TRAIN, argv, env=forked, log_path=str(out) + ".log", timeout=600).stdout
    assert "llava_dymoe.patches: patched" not in logs  # the fork's own call sites, no run-time patch
    a, b = load_file(os.path.join(t1, ckpt.EXPERTS)), load_file(os.path.join(t2, ckpt.EXPERTS))
    assert a and all(torch.equal(a[k], b[k]) for k in a)
    assert json.load(open(t2 / "config.json"))["dymoe"]["config"]["num_tasks"] == 2
    code = ("import sys; from llava.model.builder import load_pretrained_model as L; "
            "t, m, p, c = L(sys.argv[1], sys.argv[2], 'x', device='cpu', device_map='cpu'); "
            "q = m.model.layers[0].self_attn.q_proj; print('RESULT', type(q).__name__, q.num_tasks, q.num_experts)")
    assert "RESULT DyMoELinear 2 4" in run_python(code, [str(t2), tiny.llm], env=forked).stdout.splitlines()
    question = tmp_path / "q.jsonl"
    question.write_text(open(smoke_data.questions).readline())
    answers = tmp_path / "answers.jsonl"
    run_python("llava_dymoe.eval", ["llava.eval.model_vqa_loader", "--model-path", str(t2), "--model-base", tiny.llm,
                                    "--question-file", str(question), "--image-folder", smoke_data.image_folder,
                                    "--answers-file", str(answers), "--temperature", "0", "--conv-mode", "vicuna_v1"],
               module=True, env=forked, timeout=600)
    assert [json.loads(line)["model_id"] for line in open(answers)] == ["2_b_llava_dymoe"]
