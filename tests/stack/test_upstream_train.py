"""Upstream ``llava.train.train.train()`` with LoRA on the tiny model: plain, ZeRO-2 and ZeRO-3.

Each run is its own process, as in LLaVA/CoIN (one process per task). The DeepSpeed runs use a
one-rank world in-process (MASTER_ADDR/RANK/... set, gloo on CPU); the two-rank launcher run is
marked slow. Checks the saved files' contents, not only that the process exited 0.
"""
import json
import os
import shutil

import pytest
import torch

from llava_dymoe.integration.llava_args import UPSTREAM_TRAIN, llava_train_argv, run_python, single_rank_env

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _train(tiny, data, out, deepspeed=None, env=None, steps=3):
    argv = llava_train_argv(tiny.llm, tiny.clip, data.train_json, data.image_folder, str(out),
                            max_steps=steps, deepspeed=deepspeed)
    return run_python(UPSTREAM_TRAIN, argv, env=env, log_path=str(out) + ".log", timeout=600)


def _check_lora_output(out, steps=3):
    files = set(os.listdir(out))
    assert {"adapter_config.json", "adapter_model.safetensors", "non_lora_trainables.bin",
            "config.json", "trainer_state.json"} <= files
    from safetensors.torch import load_file
    adapter = load_file(os.path.join(out, "adapter_model.safetensors"))
    # LoRA on the 7 projections of both layers: A and B each
    assert len(adapter) == 2 * 7 * 2
    assert all("lora_" in k for k in adapter)
    # B starts at zero; after a few steps of lr 2e-4 it has moved
    assert any(v.abs().sum() > 0 for k, v in adapter.items() if "lora_B" in k)
    non_lora = torch.load(os.path.join(out, "non_lora_trainables.bin"), map_location="cpu")
    assert non_lora and all("mm_projector" in k for k in non_lora)
    state = json.load(open(os.path.join(out, "trainer_state.json")))
    assert state["global_step"] == steps
    losses = [h["loss"] for h in state["log_history"] if "loss" in h]
    assert len(losses) == steps and all(l == l and l > 0 for l in losses)
    cfg = json.load(open(os.path.join(out, "config.json")))
    assert cfg["mm_projector_type"] == "mlp2x_gelu" and cfg["image_aspect_ratio"] == "pad"


def test_upstream_train_lora_plain(tiny, smoke_data, tmp_path):
    out = tmp_path / "llava-tiny-lora"
    _train(tiny, smoke_data, out)
    _check_lora_output(out)


@pytest.mark.parametrize("stage", ["zero2", "zero3"])
def test_upstream_train_lora_deepspeed_one_rank(tiny, smoke_data, tmp_path, stage):
    out = tmp_path / f"llava-tiny-lora-{stage}"
    proc = _train(tiny, smoke_data, out, deepspeed=os.path.join(REPO, "scripts", f"{stage}.json"),
                  env=single_rank_env())
    assert "DeepSpeed" in proc.stdout or "deepspeed" in proc.stdout
    _check_lora_output(out)


@pytest.mark.slow
def test_upstream_train_lora_zero2_two_ranks(tiny, smoke_data, tmp_path):
    out = tmp_path / "llava-tiny-lora-2rank"
    argv = llava_train_argv(tiny.llm, tiny.clip, smoke_data.train_json, smoke_data.image_folder, str(out),
                            max_steps=3, deepspeed=os.path.join(REPO, "scripts", "zero2.json"))
    script = tmp_path / "train_entry.py"
    script.write_text(UPSTREAM_TRAIN.replace("; ", "\n") + "\n")
    launcher = shutil.which("deepspeed", path=os.path.dirname(os.sys.executable))
    import subprocess
    proc = subprocess.run([launcher, "--num_gpus", "2", str(script), *argv], capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    _check_lora_output(out)
