"""Qwen2.5-VL: ``transformers.Qwen2_5_VLForConditionalGeneration`` (transformers 5.x).

Same shape as the HF LLaVA host (``hf_llava.HFMultimodalHost``): the LLM body is ``model.language_model`` (its
decoder layers hold the ``q/k/v/o/gate/up/down_proj`` DyMoE wraps), the processor expands each image into
``<|image_pad|>`` tokens (``config.image_token_id``), so the batch's ids and labels have the LLM's positions.  The
projector is the vision tower's patch merger (``model.visual.merger``); M-RoPE position ids are computed by the
model from ``input_ids`` and ``image_grid_thw``, which the data path passes through (``hf_data.py``).
"""
from __future__ import annotations

from typing import Optional

from torch import nn

from .hf_llava import HFMultimodalHost


class Qwen2_5_VL(HFMultimodalHost):
    name = "qwen2_5_vl"
    model_class = "transformers.Qwen2_5_VLForConditionalGeneration"
    model_type = "qwen2_5_vl"
    class_name = "Qwen2_5_VLForConditionalGeneration"
    projector_key = "visual.merger"

    def projector(self, model: nn.Module) -> Optional[nn.Module]:
        return getattr(getattr(model.model, "visual", None), "merger", None)

    def load_processor(self, path: str):
        return ImageTextProcessor.from_pretrained(path)


class ImageTextProcessor:
    """Qwen2.5-VL's processor for images and text, without the video half.

    transformers 5.25's ``Qwen2_5_VLProcessor`` cannot be built without a video processor, and its video
    processors need torchvision, which this CPU environment does not have (the registry's torchvision for torch
    2.13 is the CUDA build, whose ops do not load with the CPU torch).  The image path is small: the image
    processor gives ``pixel_values`` (flattened patches) and ``image_grid_thw``, and each ``<|image_pad|>`` of the
    text becomes ``t*h*w / merge_size**2`` of them (one per merged patch), as Qwen's own processor does.
    ``apply_chat_template`` renders with the tokenizer's chat template.
    """

    image_token = "<|image_pad|>"

    def __init__(self, tokenizer, image_processor):
        self.tokenizer, self.image_processor = tokenizer, image_processor

    @classmethod
    def from_pretrained(cls, path: str) -> "ImageTextProcessor":
        import json
        import os

        from transformers import AutoTokenizer, Qwen2VLImageProcessorPil

        tokenizer = AutoTokenizer.from_pretrained(path)
        processor_template = os.path.join(path, "chat_template.json")  # the released Qwen folders' processor file
        if getattr(tokenizer, "chat_template", None) is None and os.path.isfile(processor_template):
            with open(processor_template) as f:
                tokenizer.chat_template = json.load(f)["chat_template"]
        return cls(tokenizer, Qwen2VLImageProcessorPil.from_pretrained(path))

    def save_pretrained(self, path: str) -> None:
        self.tokenizer.save_pretrained(path)
        self.image_processor.save_pretrained(path)

    def apply_chat_template(self, messages, tokenize: bool = False, add_generation_prompt: bool = False):
        return self.tokenizer.apply_chat_template(messages, tokenize=tokenize,
                                                  add_generation_prompt=add_generation_prompt)

    def __call__(self, text: str, images=None, return_tensors: str = "pt"):
        out = {}
        if images:
            out = dict(self.image_processor(images=images, return_tensors=return_tensors))
            per_image = [int(g.prod()) // self.image_processor.merge_size ** 2 for g in out["image_grid_thw"]]
            parts = text.split(self.image_token)
            if len(parts) - 1 != len(per_image):
                raise ValueError(f"{len(parts) - 1} {self.image_token} in the text for {len(per_image)} image(s)")
            text = parts[0] + "".join(self.image_token * n + rest for n, rest in zip(per_image, parts[1:]))
        out.update(self.tokenizer(text, return_tensors=return_tensors))
        return out
