"""Cross-host parity: the same tiny LLaVA weights and DyMoE banks in upstream ``LlavaLlamaForCausalLM``
(transformers 4.37.2, the upstream venv) and in ``LlavaForConditionalGeneration`` (transformers 5.x, this venv),
converted by ``llava_dymoe.hosts.convert``: the same prompts give the same logits to float tolerance.

The upstream half runs in a subprocess with the upstream venv's python (``tests/hf/upstream_side.py``):
``$LLAVA_DYMOE_UPSTREAM_PYTHON``, else the repository's ``.venv/bin/python`` (made by ``make setup``, which
``.ci/run`` runs first); without either the test skips with the reason.
"""
import json
import os
import subprocess

import pytest

transformers = pytest.importorskip("transformers", minversion="5.0")

import torch  # noqa: E402
from hf_helpers import REPO  # noqa: E402


def _upstream_python():
    path = os.environ.get("LLAVA_DYMOE_UPSTREAM_PYTHON") or os.path.join(REPO, ".venv", "bin", "python")
    if not os.path.isfile(path):
        pytest.skip(f"no upstream venv python at {path} (make setup, or set LLAVA_DYMOE_UPSTREAM_PYTHON)")
    return path


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    out = tmp_path_factory.mktemp("parity")
    env = {**os.environ, "PYTHONPATH": REPO, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([_upstream_python(), os.path.join(REPO, "tests", "hf", "upstream_side.py"), str(out)],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_key_mapping_matches_the_conversion_table():
    from llava_dymoe.hosts.convert import hf_key

    assert hf_key("model.vision_tower.vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight") == \
        "model.vision_tower.encoder.layers.0.mlp.fc1.weight"
    assert hf_key("model.mm_projector.2.bias") == "model.multi_modal_projector.linear_2.bias"
    assert hf_key("model.layers.1.self_attn.q_proj.dymoe_A.t0") == \
        "model.language_model.layers.1.self_attn.q_proj.dymoe_A.t0"
    assert hf_key("lm_head.weight") == "lm_head.weight"
    with pytest.raises(KeyError, match="no HF counterpart"):
        hf_key("model_extra.x")


def test_same_weights_same_banks_same_logits(upstream):
    from safetensors.torch import load_file

    from llava_dymoe.config import DyMoEConfig
    from llava_dymoe.core import DyMoEContext
    from llava_dymoe.hosts import get_host
    from llava_dymoe.hosts.convert import build_hf_llava, convert_bank_state, expand_image_tokens
    from llava_dymoe.integration.inject import inject, load_bank_state

    with open(upstream / "upstream_config.json") as f:
        up_cfg = json.load(f)
    vision = transformers.CLIPVisionConfig.from_pretrained(str(upstream / "clip"))
    model = build_hf_llava(load_file(str(upstream / "upstream.safetensors")), up_cfg, vision).float().eval()
    with open(upstream / "dymoe_config.json") as f:
        cfg = DyMoEConfig.from_dict(json.load(f))
    inject(model, cfg)
    assert load_bank_state(model, convert_bank_state(load_file(str(upstream / "banks.safetensors")))) == 2
    model.requires_grad_(False)
    model.eval()  # the injected layers too (lora dropout off)
    get_host("hf-llava").install_context_hooks(model, DyMoEContext())
    vocab = up_cfg["vocab_size"]
    n_patches = (vision.image_size // vision.patch_size) ** 2
    for prompt in torch.load(upstream / "prompts.pt", weights_only=True):
        ids = expand_image_tokens(prompt["input_ids"], model.config.image_token_id, n_patches)
        with torch.no_grad():
            logits = model(input_ids=ids, pixel_values=prompt["pixel_values"],
                           attention_mask=torch.ones_like(ids)).logits
        want = prompt["logits"]
        assert logits.shape[:2] == want.shape[:2] and logits.shape[2] == vocab + 2
        got = logits[..., :vocab]
        first_image = int((prompt["input_ids"][0] == -200).nonzero()[0])
        # the text before the image: the same LLM, banks and routing give bit-identical logits
        assert torch.equal(got[:, :first_image], want[:, :first_image])
        # from the image on: the two transformers' CLIP towers differ by float rounding (about 2e-7 on the
        # base model), which the random banks amplify; DyMoE's own effect is orders of magnitude larger
        diff = float((got - want).abs().max())
        effect = float((want - prompt["base_logits"]).abs().max())
        assert diff < 1e-3 and effect > 100 * diff, (diff, effect)
        assert torch.equal(got.argmax(-1), want.argmax(-1))
