"""The host layer (llava_dymoe/hosts): which adapter takes a model, and refusing a checkpoint of another host.

Runs in every venv (no transformers model class is needed: the models are hand-made modules with the
structure each host expects).  The HF hosts' own tests are in tests/hf (``make test-hf``).
"""
import pytest
import torch
from torch import nn

from llava_dymoe.config import DyMoEConfig
from llava_dymoe.hosts import HostError, check_host, checkpoint_host, get_host, host_of
from llava_dymoe.integration.inject import inject


class _Layer(nn.Module):
    def __init__(self, d=8):
        super().__init__()
        self.self_attn = nn.Module()
        self.self_attn.q_proj = nn.Linear(d, d)
        self.self_attn.v_proj = nn.Linear(d, d)


def _hf_llava_like(n_layers=2):
    """``model.language_model.layers`` + ``model.multi_modal_projector`` and ``config.model_type == "llava"``."""
    top = nn.Module()
    top.config = type("Cfg", (), {"model_type": "llava", "image_token_id": 7})()
    top.model = nn.Module()
    top.model.language_model = nn.Module()
    top.model.language_model.layers = nn.ModuleList(_Layer() for _ in range(n_layers))
    top.model.multi_modal_projector = nn.Linear(4, 8)
    return top


def _plain_llama_like(n_layers=2):
    top = nn.Module()
    top.model = nn.Module()
    top.model.layers = nn.ModuleList(_Layer() for _ in range(n_layers))
    return top


def test_each_model_gets_its_host_and_injection_follows_its_layers():
    hf, plain = _hf_llava_like(3), _plain_llama_like(2)
    assert host_of(hf).name == "hf-llava" and host_of(plain).name == "llava"
    # llava-torch 1.1.x's config is model_type "llava" too: its model splices images itself -> upstream host
    upstream11 = _plain_llama_like(2)
    upstream11.config = hf.config
    upstream11.prepare_inputs_labels_for_multimodal = lambda *a: a
    assert host_of(upstream11).name == "llava"
    cfg = DyMoEConfig(target_modules=["q_proj", "v_proj"], experts_per_task=2, expert_rank=2)
    report = inject(hf, cfg)
    assert report.targeted == [f"model.language_model.layers.{i}.self_attn.{p}" for i in range(3)
                               for p in ("q_proj", "v_proj")]
    assert inject(plain, cfg).targeted == [f"model.layers.{i}.self_attn.{p}" for i in range(2)
                                           for p in ("q_proj", "v_proj")]
    assert get_host("hf-llava").projector(hf) is hf.model.multi_modal_projector


def test_hf_token_kinds_mark_image_answer_instruction_and_padding():
    hf = _hf_llava_like()
    ids = torch.tensor([[5, 7, 7, 9, 3, 4, 0], [7, 2, 2, 2, 0, 0, 0]])
    labels = torch.tensor([[-100, -100, -100, -100, 3, 4, -100], [-100, -100, 2, -100, -100, -100, -100]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 0, 0, 0]])
    kinds = get_host("hf-llava").token_kinds({"input_ids": ids, "labels": labels, "attention_mask": mask}, hf)
    # naive reference, one position at a time (0 image, 1 instruction, 2 answer, -1 padding)
    want = [[-1 if not mask[b, s] else 0 if ids[b, s] == 7 else 2 if labels[b, s] != -100 else 1
             for s in range(ids.shape[1])] for b in range(2)]
    assert kinds.tolist() == want


def test_checkpoint_of_another_host_is_refused_in_one_line():
    check_host({"host": "hf-llava"}, "hf-llava", "/ck")
    check_host({}, "llava", "/old")  # written before hosts were recorded: upstream LLaVA
    check_host({"host": "upstream"}, "llava", "/ck")  # an alias names the same host
    assert checkpoint_host({}) == "llava"
    with pytest.raises(HostError) as e:
        check_host({"host": "hf-llava"}, "llava", "/runs/t1")
    msg = str(e.value)
    assert "\n" not in msg and "/runs/t1 was trained on host 'hf-llava'" in msg and "host 'llava'" in msg
    with pytest.raises(HostError, match="trained on host 'llava'"):
        check_host({}, "hf-llava", "/old")


def test_train_command_line_picks_the_host(tmp_path):
    import json

    from llava_dymoe.train_hf import drop_upstream_host, wants_hf_host

    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"model_type": "llava", "text_config": {}, "vision_config": {}}))
    up = tmp_path / "up"  # llava-torch 1.1's LLaVA config is model_type "llava" too, but flat with mm_vision_tower
    up.mkdir()
    (up / "config.json").write_text(json.dumps({"model_type": "llava", "mm_vision_tower": "clip"}))
    assert wants_hf_host(["--model_name_or_path", str(hf)]) and not wants_hf_host(["--model_name_or_path", str(up)])
    assert not wants_hf_host(["--model_name_or_path", "lmsys/vicuna-7b-v1.5"])
    assert wants_hf_host(["--host", "qwen2_5_vl"]) and wants_hf_host(["--host=hf-llava"])
    assert not wants_hf_host(["--host", "llava", "--model_name_or_path", str(hf)])  # --host wins
    assert drop_upstream_host(["--a", "1", "--host", "llava", "--b", "--host=upstream"]) == ["--a", "1", "--b"]


def test_upstream_entry_refuses_an_hf_host_in_one_line(tmp_path):
    import os
    import subprocess
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-m", "llava_dymoe.train", "--host", "hf-llava", "--output_dir",
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": repo})
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and "python -m llava_dymoe.train_hf" in lines[-1]
    assert not (tmp_path / "out").exists()
