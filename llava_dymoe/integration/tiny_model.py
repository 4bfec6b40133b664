"""Build an in-memory ``LlavaLlamaForCausalLM`` from a tiny LLaVA (``llava_dymoe.tiny``), as ``train()`` would.

For tests, benchmarks and diagnostics that need the real model object without a training run:
the LLM from ``tiny.llm``, the vision tower from ``tiny.clip`` and a fresh ``mlp2x_gelu``
projector, with the LLaVA-1.5 config values that ``train()`` writes (pad aspect ratio, no image
patch/start-end tokens).
"""
from __future__ import annotations

from types import SimpleNamespace


def build_llava_model(llm_dir: str, clip_dir: str, seed: int = 0, max_length: int = 256):
    import torch
    from llava.model.language_model.llava_llama import LlavaLlamaForCausalLM

    torch.manual_seed(seed)
    model = LlavaLlamaForCausalLM.from_pretrained(llm_dir)
    model.get_model().initialize_vision_modules(model_args=SimpleNamespace(
        vision_tower=clip_dir, mm_vision_select_layer=-2, mm_vision_select_feature="patch",
        pretrain_mm_mlp_adapter=None, mm_patch_merge_type="flat", mm_projector_type="mlp2x_gelu"))
    cfg = model.config
    cfg.image_aspect_ratio = "pad"
    cfg.tokenizer_padding_side = "right"
    cfg.tokenizer_model_max_length = max_length
    cfg.mm_use_im_patch_token = False
    cfg.mm_use_im_start_end = False
    return model


def vicuna_prompt_ids(tokenizer, question: str):
    """``input_ids`` [1, L] of a one-image vicuna_v1 prompt (``<image>`` as IMAGE_TOKEN_INDEX)."""
    from llava.constants import DEFAULT_IMAGE_TOKEN
    from llava.conversation import conv_templates
    from llava.mm_utils import tokenizer_image_token

    conv = conv_templates["vicuna_v1"].copy()
    conv.append_message(conv.roles[0], DEFAULT_IMAGE_TOKEN + "\n" + question)
    conv.append_message(conv.roles[1], None)
    return tokenizer_image_token(conv.get_prompt(), tokenizer, return_tensors="pt").unsqueeze(0)
