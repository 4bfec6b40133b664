"""Every registered method (DyMoE, IncMoELoRA, the ablation ladder, the baselines) runs 2 short stages
on the tiny LLaVA and leaves the banks its recipe promises.  The baselines and IncMoELoRA go through
the runner (``cli run``: train + upstream eval + matrix; dymoe's runner run is test_runner.py's);
the ablation ladder, which differs from them only in loss coefficients, trains its 2 stages with the
same training entry (no eval, to keep the suite's time):

* expanding methods: 2 banks after stage 2, stage 1's bank bit-identical (frozen);
* ``expand=False`` (lora, moelora): 1 bank after stage 2, retrained (it changed), and the sequence
  position recorded as task 2;
* the matrix is lower-triangular 2 x 2 with scores in [0, 100].
"""
import json
import os

import pytest
import torch
from safetensors.torch import load_file

from smoke_suite import write_smoke_suite
from llava_dymoe.cli import main as cli
from llava_dymoe.integration import checkpoint as ckpt
from llava_dymoe.methods import METHODS, TASK_BASELINES, VARIANTS, get_method



@pytest.fixture(scope="module")
def suite_file(tmp_path_factory):
    return write_smoke_suite(tmp_path_factory.mktemp("methods_suite") / "two.yaml", "two", max_new_tokens=3)


def _checkpoint(out, stage):
    found = [d for d in os.listdir(os.path.join(out, "checkpoints")) if d.startswith(f"{stage}_")]
    assert len(found) == 1, found
    return os.path.join(out, "checkpoints", found[0])


RUNNER_METHODS = ("lora", "moelora", "olora", "incmoelora")
LADDER = ("incmoelora_aux", "incmoelora_aux_tag", "incmoelora_aux_tag_exc", "dymoe_aux")


def test_every_registered_method_is_covered():
    """dymoe: test_runner.py; the beyond-the-paper variants: two tasks through train() for two of them
    (tests/integration/test_variants_train.py), every recipe's layer in process (tests/core/test_variants.py);
    dymoe_seqbank (the third round's recipe, dymoe_plus until 2026-12-07): two tasks through train() there and its
    eval-time batching in tests/integration/test_sequence_batching.py; dymoe_plus (= anchored_keys since then) runs
    all five stages through the runner in the demo test; the task-identity baselines oracle_bank, hide_selector and
    prism_selector, key_selector (dymoe_plus in between) and anchored_keys: two tasks through train() and back
    through the eval loader (tests/integration/test_task_selectors.py), the
    runner's task id for oracle_bank in test_oracle_jobs_are_told_their_task."""
    runner = {get_method(m).name for m in RUNNER_METHODS}
    assert runner | set(LADDER) | set(VARIANTS) | set(TASK_BASELINES) | {"dymoe", get_method("dymoe_plus").name,
                                                                         "dymoe_seqbank", "key_selector"} \
        == set(METHODS.names())


def test_oracle_jobs_are_told_their_task(tmp_path):
    """``cli run`` sets ``DYMOE_EVAL_TASK_ID`` (the task's place in the suite) on every eval job of a method told the
    true task (oracle_bank), and on no other method's."""
    from llava_dymoe.eval.suite import TaskSpec
    from llava_dymoe.integration.selector import TASK_ID_ENV
    from llava_dymoe.protocol import launch
    from llava_dymoe.protocol.options import RunOptions

    spec = TaskSpec(name="b", train_json="t.json", question_file="q.jsonl", annotation_file="a.json",
                    image_root="img", generator="llava.eval.model_vqa_loader", scorer="exact")
    for method, want in (("oracle_bank", {TASK_ID_ENV: "2"}), ("hide_selector", {}), ("dymoe", {})):
        opts = RunOptions(suite="s.yaml", data_root=str(tmp_path), method=method, output_dir=str(tmp_path / method),
                          base="base", vision_tower="clip")
        assert launch.eval_job(opts, spec, "ckpt", "a.jsonl", task_number=2)["env"] == want
        job = launch.eval_job(opts, spec, "ckpt", "a.jsonl", max_tasks=2, task_number=2)
        assert job["env"] == {"DYMOE_EVAL_MAX_TASKS": "2", **want}


def test_reports_name_the_oracle_an_upper_bound(tmp_path):
    from llava_dymoe.eval.report import comparison_markdown, load_run

    runs = []
    for method in ("oracle_bank", "hide_selector"):
        d = tmp_path / method
        d.mkdir()
        (d / "run.json").write_text(json.dumps({"method": method}))
        (d / "matrix.csv").write_text("stage,A\n1_A,50.0\n")
        runs.append(load_run(str(d)))
    assert [r["name"] for r in runs] == ["oracle_bank (UPPER BOUND: told the task)", "hide_selector"]
    assert "| oracle_bank (UPPER BOUND: told the task) |" in comparison_markdown(runs)


def check_banks(method, s1, s2):
    cfg = get_method(method).build_config()
    e1, e2 = load_file(os.path.join(s1, ckpt.EXPERTS)), load_file(os.path.join(s2, ckpt.EXPERTS))
    banks2 = {k.rsplit(".", 1)[1] for k in e2}
    block = ckpt.load_task_state(s2)["dymoe"]
    assert block["method"] == get_method(method).name and block["task_id"] == 2
    if cfg.expand:
        assert banks2 == {"t0", "t1"} and block["config"]["num_tasks"] == 2
        for k, v in e1.items():
            assert torch.equal(e2[k], v), f"{k} of stage 1 changed in stage 2"
    else:
        assert banks2 == {"t0"} and block["config"]["num_tasks"] == 1
        changed = [k for k, v in e1.items() if "dymoe_B" in k and not torch.equal(e2[k], v)]
        assert changed, "the one bank was not trained on task 2"


@pytest.mark.parametrize("method", RUNNER_METHODS)
def test_method_runs_two_stages(method, suite_file, smoke_data, tiny, tmp_path):
    out = tmp_path / "run"
    argv = ["run", "--suite", suite_file, "--data-root", smoke_data.root, "--method", method,
            "--output-dir", str(out), "--base", tiny.llm, "--vision-tower", tiny.clip, "--threads", "1",
            "--train-arg", "max_steps=2", "--train-arg", "learning_rate=0.01", "--train-arg", "per_device_train_batch_size=4"]
    assert cli(argv) == 0
    check_banks(method, _checkpoint(str(out), 1), _checkpoint(str(out), 2))
    rows = json.load(open(os.path.join(out, "matrix.json")))
    matrix = rows["values"]
    assert len(matrix) == 2 and matrix[0][1] is None
    assert all(0.0 <= v <= 100.0 for v in (matrix[0][0], matrix[1][0], matrix[1][1]))


@pytest.mark.parametrize("method", LADDER)
def test_ladder_method_trains_two_stages(method, smoke_data, tiny, tmp_path):
    from llava_dymoe.integration.llava_args import DYMOE_TRAIN_MODULE, dymoe_flags, llava_train_argv, run_python

    dirs = [tmp_path / "1_A", tmp_path / "2_B"]
    for t, out in enumerate(dirs, start=1):
        argv = llava_train_argv(tiny.llm, tiny.clip, smoke_data.train_json, smoke_data.image_folder, str(out),
                                lora=False, max_steps=2, overrides={"gradient_checkpointing": False},
                                extra=dymoe_flags(method, t, str(dirs[0]) if t == 2 else None, top_k=8))
        run_python(DYMOE_TRAIN_MODULE, argv, module=True, log_path=str(out) + ".log", timeout=600,
                   env={"OMP_NUM_THREADS": "1"})
    check_banks(method, str(dirs[0]), str(dirs[1]))
