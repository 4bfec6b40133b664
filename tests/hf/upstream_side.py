"""The upstream half of the cross-host parity test, run with the UPSTREAM venv's python (llava-torch 1.2 line):

    python tests/hf/upstream_side.py OUT_DIR

Builds the tiny upstream LLaVA (``llava_dymoe.tiny``, seed 0), injects DyMoE (the ``dymoe`` recipe, two task
banks with seeded random values, B included, so every expert contributes), and writes into OUT_DIR:
``upstream.safetensors`` (the base model's weights, before injection), ``upstream_config.json``, ``clip/`` (the
tower's config), ``banks.safetensors`` + ``dymoe_config.json``, and ``prompts.pt``: per prompt the upstream ids
(``IMAGE_TOKEN_INDEX`` placeholder), the image tensor, upstream's logits (fp32, eval, DyMoE context hooks on)
and the base model's logits before injection.
"""
import json
import os
import shutil
import sys

import torch


def main(out: str) -> None:
    from PIL import Image
    from safetensors.torch import save_file

    from llava.mm_utils import process_images
    from llava_dymoe.core import DyMoEContext, dymoe_layers
    from llava_dymoe.hosts import get_host
    from llava_dymoe.integration.inject import add_task, bank_state, inject
    from llava_dymoe.integration.tiny_model import build_llava_model, vicuna_prompt_ids
    from llava_dymoe.methods import get_method
    from llava_dymoe.tiny import build_tiny_llava
    from transformers import AutoTokenizer

    os.makedirs(out, exist_ok=True)
    tiny = build_tiny_llava(os.path.join(out, "tiny"), seed=0)
    model = build_llava_model(tiny.llm, tiny.clip, seed=0).float().eval()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(out, "upstream.safetensors"))
    tok = AutoTokenizer.from_pretrained(tiny.llm, use_fast=False)
    processor = model.get_vision_tower().image_processor
    prompts = []
    for question, colour in (("What color is the square in the image?", (200, 30, 30)),
                             ("How many objects are shown? Answer with a single word.", (20, 90, 220))):
        ids = vicuna_prompt_ids(tok, question)
        image = process_images([Image.new("RGB", (32, 32), colour)], processor, model.config)
        with torch.no_grad():  # the base model's logits: what DyMoE changes
            base = model(input_ids=ids, images=image, image_sizes=[(32, 32)]).logits
        prompts.append({"input_ids": ids, "pixel_values": image, "base_logits": base})
    with open(os.path.join(out, "upstream_config.json"), "w") as f:
        json.dump(model.config.to_dict(), f, default=str)
    shutil.copytree(tiny.clip, os.path.join(out, "clip"), dirs_exist_ok=True)

    cfg = get_method("dymoe").build_config({"experts_per_task": 2, "expert_rank": 4})
    inject(model, cfg)
    torch.manual_seed(123)
    for _ in range(2):
        add_task(model)
    cfg.num_tasks = 2
    with torch.no_grad():
        for _, layer in dymoe_layers(model):
            for bank in layer.bank_names:
                for p in getattr(layer, bank).values():
                    p.normal_(0.0, 0.2)
    model.requires_grad_(False)
    model.eval()  # the injected layers too (lora dropout off)
    save_file(bank_state(model), os.path.join(out, "banks.safetensors"))
    with open(os.path.join(out, "dymoe_config.json"), "w") as f:
        json.dump(cfg.to_dict(), f)
    get_host("llava").install_context_hooks(model, DyMoEContext())

    for prompt in prompts:
        with torch.no_grad():
            prompt["logits"] = model(input_ids=prompt["input_ids"], images=prompt["pixel_values"],
                                     image_sizes=[(32, 32)]).logits
    torch.save(prompts, os.path.join(out, "prompts.pt"))


if __name__ == "__main__":
    main(sys.argv[1])
