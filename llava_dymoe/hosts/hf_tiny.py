"""Tiny HF-native hosts built locally from configs (no hub, no download): LLaVA and Qwen2.5-VL.

``build_tiny_hf_llava(out_dir, seed)`` writes one folder that ``LlavaForConditionalGeneration.from_pretrained`` and
``AutoProcessor.from_pretrained`` read, like ``llava-hf/llava-1.5-7b-hf``:

* a Llama LLM and a CLIP vision tower with the sizes of the upstream tiny LLaVA (``llava_dymoe.tiny.TinySizes``:
  64-d / 2 layers, CLIP 32-d / 2 layers, 32 px images in 8 px patches: 16 image tokens per image);
* LLaVA-1.5's projector (``mlp2x_gelu``: linear, GELU, linear), ``vision_feature_layer=-2`` and the ``default``
  feature strategy (CLS dropped), as transformers' conversion of the LLaVA-1.5 checkpoints sets them;
* a fast ``LlamaTokenizer`` made from a sentencepiece model trained on the same built-in corpus as the upstream
  tiny model (``llava_dymoe.tiny._corpus_lines``), plus ``<image>`` and ``<pad>`` and a Vicuna-v1 chat template
  (``USER: <image>\\n... ASSISTANT: ...</s>``, the template of the llava-1.5-hf checkpoints).

``build_tiny_qwen2_5_vl(out_dir, seed)`` does the same for ``Qwen2_5_VLForConditionalGeneration``: the same
tokenizer plus Qwen's vision tokens, a 64-d / 2-layer Qwen2.5 LLM (M-RoPE sections 2/3/3), a 32-d / 2-block
vision tower with 8 px patches merged 2x2 (a 32 px image: 4 image tokens), the same chat template with
``<|vision_start|><|image_pad|><|vision_end|>`` for an image.

Needs transformers 5.x (the ``.venv-hf`` environment, ``make setup-hf``).
"""
from __future__ import annotations

import io
import json
import os
from dataclasses import asdict
from typing import Optional

from ..tiny import TinySizes, _corpus_lines

SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
          "detailed, and polite answers to the user's questions.")
#: Vicuna v1 as a chat template (content items: {"type": "image"} / {"type": "text", "text": ...}).
CHAT_TEMPLATE = (
    "{{ '" + SYSTEM.replace("'", "\\'") + " ' }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: "
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}<image>\n"
    "{% else %}{{ item['text'] }}{% endif %}{% endfor %} "
    "{% elif message['role'] == 'assistant' %}ASSISTANT: "
    "{% for item in message['content'] %}{{ item['text'] }}{% endfor %}</s>"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}")
IMAGE_TOKEN, PAD_TOKEN = "<image>", "<pad>"


QWEN_VISION_TOKENS = ("<|vision_start|>", "<|image_pad|>", "<|vision_end|>", "<|video_pad|>")
QWEN_IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"


def _tokenizer(folder: str, vocab_size: int, extra=()):
    import sentencepiece as spm
    from transformers import LlamaTokenizer

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_corpus_lines()), model_writer=model, vocab_size=vocab_size, model_type="bpe",
        byte_fallback=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, character_coverage=1.0, add_dummy_prefix=True,
        remove_extra_whitespaces=False, split_digits=True, allow_whitespace_only_pieces=True,
        normalization_rule_name="identity", minloglevel=2, num_threads=1, shuffle_input_sentence=False,
        user_defined_symbols=["USER"])
    os.makedirs(folder, exist_ok=True)
    spm_file = os.path.join(folder, "tokenizer.model")
    with open(spm_file, "wb") as f:
        f.write(model.getvalue())
    tok = LlamaTokenizer.from_pretrained(folder, legacy=False)
    os.remove(spm_file)
    tok.add_tokens([IMAGE_TOKEN, PAD_TOKEN, *extra], special_tokens=True)
    tok.pad_token = PAD_TOKEN
    return tok


def _reuse(out_dir: str, meta) -> bool:
    path = os.path.join(out_dir, "tiny.json")
    if os.path.isfile(path):
        with open(path) as f:
            return json.load(f) == meta
    return False


def _done(out_dir: str, meta) -> str:
    with open(os.path.join(out_dir, "tiny.json"), "w") as f:
        json.dump(meta, f, indent=2)
    return out_dir


def build_tiny_hf_llava(out_dir: str, seed: int = 0, sizes: Optional[TinySizes] = None) -> str:
    """Build (or reuse, when ``tiny.json`` matches) the tiny HF LLaVA in ``out_dir``; returns the folder."""
    import torch
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor)

    sizes = sizes or TinySizes()
    out_dir = os.path.abspath(out_dir)
    meta = {"seed": seed, "sizes": asdict(sizes), "host": "hf-llava", "format": 1}
    if _reuse(out_dir, meta):
        return out_dir
    tok = _tokenizer(out_dir, sizes.vocab_size)
    text = LlamaConfig(vocab_size=len(tok), hidden_size=sizes.hidden_size, intermediate_size=sizes.intermediate_size,
                       num_hidden_layers=sizes.num_hidden_layers, num_attention_heads=sizes.num_attention_heads,
                       num_key_value_heads=sizes.num_attention_heads,
                       max_position_embeddings=sizes.max_position_embeddings, bos_token_id=1, eos_token_id=2,
                       pad_token_id=tok.pad_token_id, tie_word_embeddings=False)
    vision = CLIPVisionConfig(hidden_size=sizes.clip_hidden_size, intermediate_size=sizes.clip_intermediate_size,
                              num_hidden_layers=sizes.clip_num_hidden_layers,
                              num_attention_heads=sizes.clip_num_attention_heads, image_size=sizes.image_size,
                              patch_size=sizes.patch_size, projection_dim=sizes.clip_hidden_size)
    cfg = LlavaConfig(vision_config=vision, text_config=text, image_token_id=tok.convert_tokens_to_ids(IMAGE_TOKEN),
                      projector_hidden_act="gelu", vision_feature_layer=-2,
                      vision_feature_select_strategy="default", multimodal_projector_bias=True,
                      tie_word_embeddings=False)
    torch.manual_seed(seed)
    LlavaForConditionalGeneration(cfg).save_pretrained(out_dir)
    image_processor = CLIPImageProcessor(size={"shortest_edge": sizes.image_size},
                                         crop_size={"height": sizes.image_size, "width": sizes.image_size})
    LlavaProcessor(image_processor=image_processor, tokenizer=tok, patch_size=sizes.patch_size,
                   vision_feature_select_strategy="default", num_additional_image_tokens=1,
                   chat_template=CHAT_TEMPLATE, image_token=IMAGE_TOKEN).save_pretrained(out_dir)
    return _done(out_dir, meta)


def build_tiny_qwen2_5_vl(out_dir: str, seed: int = 0, sizes: Optional[TinySizes] = None) -> str:
    """Build (or reuse, when ``tiny.json`` matches) the tiny Qwen2.5-VL in ``out_dir``; returns the folder."""
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2VLImageProcessorPil

    from .qwen2_5_vl import ImageTextProcessor

    sizes = sizes or TinySizes()
    out_dir = os.path.abspath(out_dir)
    meta = {"seed": seed, "sizes": asdict(sizes), "host": "qwen2_5_vl", "format": 1}
    if _reuse(out_dir, meta):
        return out_dir
    tok = _tokenizer(out_dir, sizes.vocab_size, QWEN_VISION_TOKENS)
    ids = dict(zip(("vision_start_token_id", "image_token_id", "vision_end_token_id", "video_token_id"),
                   tok.convert_tokens_to_ids(list(QWEN_VISION_TOKENS))))
    head_dim = sizes.hidden_size // sizes.num_attention_heads
    half = head_dim // 2
    text = dict(vocab_size=len(tok), hidden_size=sizes.hidden_size, intermediate_size=sizes.intermediate_size,
                num_hidden_layers=sizes.num_hidden_layers, num_attention_heads=sizes.num_attention_heads,
                num_key_value_heads=sizes.num_attention_heads, max_position_embeddings=sizes.max_position_embeddings,
                bos_token_id=1, eos_token_id=2, pad_token_id=tok.pad_token_id, tie_word_embeddings=False,
                rope_scaling={"type": "mrope", "mrope_section": [half - 2 * (half // 3), half // 3, half // 3]})
    vision = dict(depth=sizes.clip_num_hidden_layers, hidden_size=sizes.clip_hidden_size,
                  intermediate_size=sizes.clip_intermediate_size, num_heads=sizes.clip_num_attention_heads,
                  out_hidden_size=sizes.hidden_size, patch_size=sizes.patch_size, spatial_merge_size=2,
                  temporal_patch_size=2, window_size=4 * sizes.patch_size,
                  fullatt_block_indexes=[sizes.clip_num_hidden_layers - 1])
    cfg = Qwen2_5_VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=False, **ids)
    torch.manual_seed(seed)
    Qwen2_5_VLForConditionalGeneration(cfg).save_pretrained(out_dir)
    side = sizes.image_size
    image_processor = Qwen2VLImageProcessorPil(patch_size=sizes.patch_size, merge_size=2, temporal_patch_size=2,
                                               min_pixels=side * side, max_pixels=4 * side * side)
    tok.chat_template = CHAT_TEMPLATE.replace("<image>\n", QWEN_IMAGE + "\n")
    ImageTextProcessor(tok, image_processor).save_pretrained(out_dir)
    return _done(out_dir, meta)


BUILDERS = {"hf-llava": build_tiny_hf_llava, "qwen2_5_vl": build_tiny_qwen2_5_vl}


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m llava_dymoe.hosts.hf_tiny",
                                description="Build a tiny HF-native host model from configs (no download).")
    p.add_argument("out_dir")
    p.add_argument("--host", choices=sorted(BUILDERS), default="hf-llava")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    print(BUILDERS[args.host](args.out_dir, seed=args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
