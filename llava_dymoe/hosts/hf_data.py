"""LLaVA's JSON data format read through an HF model's processor and chat template (the HF-native hosts).

A sample is LLaVA's ``{"id", "image"?, "conversations": [{"from": "human"|"gpt", "value"}, ...]}``; ``<image>``
in a human turn becomes a ``{"type": "image"}`` content item.  The processor's chat template renders the
conversation and the processor tokenizes it with the images (expanding each image token to one per patch).
Labels: every token is ``-100`` (not supervised) except the assistant turns; the boundaries come from rendering
the conversation up to each turn (``add_generation_prompt=True`` before an assistant turn), and each such prefix
must tokenize to a prefix of the whole sample (else the sample is refused: the template's boundaries would be
guessed).  ``--model_max_length`` truncates on the right, as LLaVA does.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence

import torch

from ..errors import DataError

IGNORE_INDEX = -100
ROLES = {"human": "user", "gpt": "assistant", "user": "user", "assistant": "assistant"}


def read_llava_json(path: str) -> List[Dict[str, Any]]:
    with open(path) as f:
        data = json.load(f)
    if not isinstance(data, list):
        raise DataError(f"{path}: LLaVA data is a JSON list of samples, got {type(data).__name__}")
    return data


def to_messages(sample: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """LLaVA conversations -> chat messages with typed content (the image item where ``<image>`` was)."""
    messages = []
    for turn in sample.get("conversations", []):
        role = ROLES.get(turn.get("from"))
        if role is None:
            raise DataError(f"sample {sample.get('id')!r}: unknown speaker {turn.get('from')!r} (human or gpt)")
        value = str(turn.get("value", ""))
        content: List[Dict[str, Any]] = []
        if role == "user" and "<image>" in value:
            content.append({"type": "image"})
            value = value.replace("<image>", "").strip("\n")
        content.append({"type": "text", "text": value})
        messages.append({"role": role, "content": content})
    return messages


def _ids(processor, text: str, images) -> torch.Tensor:
    return processor(text=text, images=images or None, return_tensors="pt")["input_ids"][0]


def encode_sample(processor, sample: Mapping[str, Any], image_folder: Optional[str] = None,
                  max_length: Optional[int] = None) -> Dict[str, torch.Tensor]:
    """``input_ids``, ``attention_mask``, ``labels`` (assistant tokens only) and ``pixel_values`` (with an image)."""
    from PIL import Image

    messages = to_messages(sample)
    images = []
    if sample.get("image"):
        path = os.path.join(image_folder or "", sample["image"])
        try:
            images = [Image.open(path).convert("RGB")]
        except OSError as e:
            raise DataError(f"sample {sample.get('id')!r}: image {path} cannot be read ({e})") from None
    full = processor(text=processor.apply_chat_template(messages, tokenize=False), images=images or None,
                     return_tensors="pt")
    ids = full["input_ids"][0]
    labels = torch.full_like(ids, IGNORE_INDEX)
    for k, msg in enumerate(messages):
        if msg["role"] != "assistant":
            continue
        start = _ids(processor, processor.apply_chat_template(messages[:k], tokenize=False,
                                                              add_generation_prompt=True), images)
        end = _ids(processor, processor.apply_chat_template(messages[:k + 1], tokenize=False), images)
        for prefix in (start, end):
            if prefix.shape[0] > ids.shape[0] or not torch.equal(ids[:prefix.shape[0]], prefix):
                raise DataError(f"sample {sample.get('id')!r}: the chat template's turn {k} does not tokenize to "
                                "a prefix of the whole conversation; its answer tokens cannot be located")
        labels[start.shape[0]:end.shape[0]] = ids[start.shape[0]:end.shape[0]]
    out = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    if max_length is not None and ids.shape[0] > max_length:
        n_image = int(sum(1 for m in messages for c in m["content"] if c["type"] == "image"))
        if n_image:  # cutting inside the image tokens would break the model's image/patch count
            raise DataError(f"sample {sample.get('id')!r}: {ids.shape[0]} tokens exceed --model_max_length "
                            f"{max_length} and it has an image; raise --model_max_length")
        out = {k: v[:max_length] for k, v in out.items()}
    if "pixel_values" in full:
        out["pixel_values"] = full["pixel_values"]
    for key in ("image_grid_thw",):  # Qwen2.5-VL's per-image patch grid
        if key in full:
            out[key] = full[key]
    return out


class LlavaJsonDataset(torch.utils.data.Dataset):
    """LLaVA JSON samples, encoded lazily through ``processor`` (``encode_sample``)."""

    def __init__(self, data_path: str, processor, image_folder: Optional[str] = None,
                 max_length: Optional[int] = None):
        self.samples = read_llava_json(data_path)
        self.processor, self.image_folder, self.max_length = processor, image_folder, max_length

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> Dict[str, torch.Tensor]:
        return encode_sample(self.processor, self.samples[i], self.image_folder, self.max_length)


class PadCollator:
    """Right-pads ``input_ids`` (pad id), ``attention_mask`` (0) and ``labels`` (-100); concatenates the images."""

    def __init__(self, pad_token_id: int):
        self.pad = int(pad_token_id)

    def __call__(self, batch: Sequence[Mapping[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
        width = max(int(b["input_ids"].shape[0]) for b in batch)
        out: Dict[str, torch.Tensor] = {}
        for key, fill in (("input_ids", self.pad), ("attention_mask", 0), ("labels", IGNORE_INDEX)):
            rows = [torch.nn.functional.pad(b[key], (0, width - b[key].shape[0]), value=fill) for b in batch]
            out[key] = torch.stack(rows)
        for key in ("pixel_values", "image_grid_thw"):
            parts = [b[key] for b in batch if key in b]
            if parts:
                out[key] = torch.cat(parts)
        return out
