"""patches/llava-torch-1.2.2.post1-dymoe.diff: applies to llava-torch 1.2.2.post1 and gives the same
DyMoE training and loading through the patched copy, with no run-time patch applied."""
import json
import os

import pytest

from line_marks import on_line, patched_llava_copy
from llava_dymoe.integration.llava_args import UPSTREAM_TRAIN, dymoe_flags, llava_train_argv, run_python

pytestmark = on_line("1.2", "the 1.1 line's diff is tested in tests/lines/test_fork_diff_llava11.py")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DIFF = os.path.join(REPO, "patches", "llava-torch-1.2.2.post1-dymoe.diff")


@pytest.fixture(scope="module")
def forked(tmp_path_factory):
    return patched_llava_copy(DIFF, tmp_path_factory.mktemp("fork_site"))


#: After upstream's train() returns: what the fork path did.  The diff's hooks make the DyMoE classes locals of
#: train() and no patch set is applied, so LLaVA's module globals are still upstream's; the hook module was
#: imported and the DyMoE flags were parsed by the local arguments class (which pickles by its base's path).
FORK_PROBE = UPSTREAM_TRAIN + """
import sys, llava.train.train as T, llava.train.llava_trainer as LT, llava_dymoe.patches._base as B
print("FORK_STATE", T.LLaVATrainer is LT.LLaVATrainer, T.TrainingArguments.__module__,
      T.safe_save_model_for_hf_trainer.__module__, len(B.applied_patch_sets()),
      "llava_dymoe.patches.fork" in sys.modules, flush=True)
"""


def _train(tiny, data, out, env, extra):
    argv = llava_train_argv(tiny.llm, tiny.clip, data.train_json, data.image_folder, str(out), lora=False,
                            max_steps=2, extra=extra)
    proc = run_python(FORK_PROBE, argv, env=env, log_path=str(out) + ".log", timeout=600)
    state = [line for line in proc.stdout.splitlines() if line.startswith("FORK_STATE")]
    assert state == ["FORK_STATE True llava.train.train llava.train.train 0 True"], state
    return proc


def test_two_dymoe_tasks_through_the_patched_fork(forked, tiny, smoke_data, tmp_path):
    t1, t2 = tmp_path / "1_a_llava_dymoe", tmp_path / "2_b_llava_dymoe"
    _train(tiny, smoke_data, t1, forked, dymoe_flags("dymoe", 1, experts_per_task=2))
    _train(tiny, smoke_data, t2, forked, dymoe_flags("dymoe", 2, str(t1), experts_per_task=2))
    # the fork's trainer and saver made DyMoE checkpoints (only our saver writes these files)
    for path, t in ((t1, 1), (t2, 2)):
        assert {"dymoe_experts.safetensors", "dymoe_task.json", "dymoe_args.json"} <= set(os.listdir(path))
        assert json.load(open(path / "dymoe_args.json"))["dymoe_task_id"] == t
    block = json.load(open(t2 / "config.json"))["dymoe"]
    assert block["task_id"] == 2 and block["config"]["num_tasks"] == 2
    code = ("import sys; from llava.model.builder import load_pretrained_model as L; "
            "t, m, p, c = L(sys.argv[1], sys.argv[2], 'x', device='cpu', device_map='cpu'); "
            "q = m.model.layers[0].self_attn.q_proj; print('RESULT', type(q).__name__, q.num_tasks, q.num_experts, flush=True)")
    out = run_python(code, [str(t2), tiny.llm], env=forked)
    assert "RESULT DyMoELinear 2 4" in out.stdout.splitlines()


def test_the_fork_keeps_upstream_lora_training(forked, tiny, smoke_data, tmp_path):
    out = tmp_path / "llava-tiny-lora"
    argv = llava_train_argv(tiny.llm, tiny.clip, smoke_data.train_json, smoke_data.image_folder, str(out),
                            max_steps=2)
    proc = run_python(FORK_PROBE, argv, env=forked, log_path=str(out) + ".log", timeout=600)
    assert "FORK_STATE True llava.train.train llava.train.train 0 True" in proc.stdout.splitlines()
    assert {"adapter_model.safetensors", "non_lora_trainables.bin"} <= set(os.listdir(out))
    assert not os.path.exists(out / "dymoe_task.json")
