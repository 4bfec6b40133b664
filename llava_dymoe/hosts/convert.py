"""Upstream LLaVA weights -> HF-native ``LlavaForConditionalGeneration`` (transformers 5.x layout), our own code.

The key mapping is the one transformers' own LLaVA conversion applies (its ``convert_llava_weights_to_hf``
script, then the 5.x module layout), written out here:

| upstream ``LlavaLlamaForCausalLM`` | ``LlavaForConditionalGeneration`` |
|---|---|
| ``model.vision_tower.vision_tower.vision_model.<clip>`` | ``model.vision_tower.<clip>`` (5.x's CLIP has no ``vision_model``) |
| ``model.mm_projector.0.*`` / ``.2.*`` (``mlp2x_gelu``) | ``model.multi_modal_projector.linear_1.*`` / ``linear_2.*`` |
| ``model.<llama body>`` (embeddings, layers, norm) | ``model.language_model.<llama body>`` |
| ``lm_head.*`` | ``lm_head.*`` |

Like that conversion, the vocabulary grows by ``<image>`` and ``<pad>`` (the processor expands ``<image>`` into
one token per patch instead of upstream's ``IMAGE_TOKEN_INDEX`` splice); their embedding and LM-head rows are the
mean of the existing rows here (transformers samples around that mean), so every original token's logits are
unchanged.  ``mm_vision_select_layer`` becomes ``vision_feature_layer``, ``mm_vision_select_feature="patch"``
the ``default`` strategy (CLS dropped).  DyMoE bank names map with the same table (``convert_bank_state``), so
the banks of an upstream checkpoint run on the HF host.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

import torch
from torch import Tensor

_PREFIXES = (("model.vision_tower.vision_tower.vision_model.", "model.vision_tower."),
             ("model.mm_projector.0.", "model.multi_modal_projector.linear_1."),
             ("model.mm_projector.2.", "model.multi_modal_projector.linear_2."),
             ("model.", "model.language_model."),
             ("lm_head.", "lm_head."))
#: tokens the HF processor needs beyond upstream's vocabulary, in this order (ids V and V + 1)
ADDED_TOKENS = ("<image>", "<pad>")


def hf_key(key: str) -> str:
    """The ``LlavaForConditionalGeneration`` name of an upstream ``LlavaLlamaForCausalLM`` state key."""
    for old, new in _PREFIXES:
        if key.startswith(old):
            return new + key[len(old):]
    raise KeyError(f"upstream LLaVA key {key!r} has no HF counterpart (projector type other than mlp2x_gelu?)")


def convert_state(state: Mapping[str, Tensor], n_added: int = len(ADDED_TOKENS)) -> Dict[str, Tensor]:
    """Upstream state dict -> HF state dict; embeddings and LM head grow by ``n_added`` mean rows."""
    out = {hf_key(k): v for k, v in state.items()}
    for key in ("model.language_model.embed_tokens.weight", "lm_head.weight"):
        w = out[key]
        out[key] = torch.cat([w, w.mean(dim=0, keepdim=True).expand(n_added, -1)], dim=0)
    return out


def convert_bank_state(banks: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    """DyMoE bank names (``<module path>.<bank>.<task>``) of the upstream host -> the HF host's."""
    return {hf_key(k): v for k, v in banks.items()}


def hf_config(upstream: Mapping[str, Any], vision_config, vocab_size: Optional[int] = None):
    """A ``LlavaConfig`` for upstream's ``config.json`` values and its CLIP tower's config."""
    from transformers import LlamaConfig, LlavaConfig

    if upstream.get("mm_projector_type", "mlp2x_gelu") != "mlp2x_gelu":
        raise ValueError(f"mm_projector_type {upstream.get('mm_projector_type')!r}: only mlp2x_gelu maps onto "
                         "LlavaMultiModalProjector")
    vocab = int(vocab_size or upstream["vocab_size"])
    keys = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
            "max_position_embeddings", "rms_norm_eps", "rope_theta", "hidden_act", "bos_token_id", "eos_token_id")
    text = LlamaConfig(vocab_size=vocab + len(ADDED_TOKENS), pad_token_id=vocab + 1, tie_word_embeddings=False,
                       **{k: upstream[k] for k in keys if upstream.get(k) is not None})
    strategy = {"patch": "default", "cls_patch": "full"}[upstream.get("mm_vision_select_feature", "patch")]
    return LlavaConfig(vision_config=vision_config, text_config=text, image_token_id=vocab,
                       projector_hidden_act="gelu", vision_feature_layer=int(upstream.get("mm_vision_select_layer", -2)),
                       vision_feature_select_strategy=strategy, multimodal_projector_bias=True,
                       tie_word_embeddings=False)


def build_hf_llava(state: Mapping[str, Tensor], upstream_config: Mapping[str, Any], vision_config):
    """``LlavaForConditionalGeneration`` holding the upstream weights (strict: every key lands, none missing)."""
    from transformers import LlavaForConditionalGeneration

    vocab = int(state["model.embed_tokens.weight"].shape[0])
    model = LlavaForConditionalGeneration(hf_config(upstream_config, vision_config, vocab))
    model.load_state_dict(convert_state(state), strict=True)
    return model


def expand_image_tokens(input_ids: Tensor, image_token_id: int, n_patches: int,
                        placeholder: int = -200) -> Tensor:
    """Upstream prompt ids (``IMAGE_TOKEN_INDEX`` placeholder) -> HF ids (``n_patches`` image tokens), ``[1, L]``."""
    ids = input_ids.reshape(-1)
    repeats = torch.where(ids == placeholder, torch.full_like(ids, n_patches), torch.ones_like(ids))
    out = torch.repeat_interleave(ids, repeats)
    out[out == placeholder] = image_token_id
    return out.unsqueeze(0)
