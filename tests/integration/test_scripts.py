"""Shell scripts: all parse (bash -n), and the one-task script really trains on the tiny model."""
import glob
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPTS = sorted(glob.glob(os.path.join(REPO, "scripts", "**", "*.sh"), recursive=True))


def test_coin_scripts_exist_in_order():
    names = sorted(os.path.basename(p) for p in glob.glob(os.path.join(REPO, "scripts/coin/train/*.sh")))
    assert names == ["1_ScienceQA.sh", "2_TextVQA.sh", "3_ImageNet.sh", "4_GQA.sh", "5_VizWiz.sh",
                     "6_Grounding.sh", "7_VQAv2.sh", "8_OCRVQA.sh", "coin_task.sh", "train_all.sh"]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: os.path.relpath(p, REPO))
def test_bash_syntax(script):
    out = subprocess.run(["bash", "-n", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def _env(tiny, data, out, **kw):
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"],
               MODEL_BASE=tiny.llm, VISION_TOWER=tiny.clip, PRETRAIN_ADAPTER="", DATA_PATH=data.train_json,
               IMAGE_FOLDER=data.image_folder, OUTPUT_DIR=str(out), LAUNCHER="python", ATTN="sdpa",
               PRECISION_ARGS="--bf16 False --tf32 False", NUM_WORKERS="0", PER_DEVICE_BATCH="2",
               EXTRA_ARGS="--max_steps 2 --dymoe_experts_per_task 2 --model_max_length 256")
    env.update(kw)
    return env


def test_finetune_script_trains_two_tasks_on_cpu(tiny, smoke_data, tmp_path):
    script = os.path.join(REPO, "scripts", "finetune_dymoe.sh")
    t1, t2 = tmp_path / "1_a_llava_dymoe", tmp_path / "2_b_llava_dymoe"
    r = subprocess.run(["bash", script], env=_env(tiny, smoke_data, t1), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    missing_prev = subprocess.run(["bash", script], env=_env(tiny, smoke_data, t2, TASK_ID="2"),
                                  capture_output=True, text=True)
    assert missing_prev.returncode == 2 and "needs PREV_CKPT" in missing_prev.stderr
    r = subprocess.run(["bash", script], env=_env(tiny, smoke_data, t2, TASK_ID="2", PREV_CKPT=str(t1)),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    block = json.load(open(t2 / "config.json"))["dymoe"]
    assert block["task_id"] == 2 and block["config"]["experts_per_task"] == 2
    args = json.load(open(t2 / "dymoe_args.json"))
    assert args["mm_projector_lr"] == 2e-5 and args["dymoe_prev_ckpt"] == str(t1)


def test_coin_task_wrapper_resolves_paths_and_previous_task(tmp_path):
    """coin_task.sh with a stub finetune script: the exported variables are CoIN's layout."""
    import shutil
    fake = tmp_path / "repo"
    shutil.copytree(os.path.join(REPO, "scripts"), fake / "scripts")
    (fake / "scripts" / "finetune_dymoe.sh").write_text(
        'echo "$TASK_ID|$DATA_PATH|$IMAGE_FOLDER|$OUTPUT_DIR|${PREV_CKPT:-}|$METHOD"\n')
    run = lambda *a: subprocess.run(["bash", str(fake / "scripts/coin/train" / a[0])], capture_output=True,
                                    text=True, env=dict(os.environ, DATA_ROOT="/d", METHOD="incmoelora"))
    out = run("3_ImageNet.sh")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ("3|/d/Instructions_Original/ImageNet/train.json|/d/cl_dataset|"
                                  "./checkpoints/incmoelora/coin/3_ImageNet_llava_incmoelora|"
                                  "./checkpoints/incmoelora/coin/2_TextVQA_llava_incmoelora|incmoelora")
    assert run("1_ScienceQA.sh").stdout.strip().split("|")[4] == ""
    bad = subprocess.run(["bash", str(fake / "scripts/coin/train/coin_task.sh"), "2", "GQA"], capture_output=True,
                         text=True)
    assert bad.returncode == 2 and "CoIN task 2 is TextVQA, not GQA" in bad.stderr
