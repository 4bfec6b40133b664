"""The features a task selector compares (``core/task_selector.py``), read from a LLaVA model.

* image: the vision tower's output for the sample's image (LLaVA's selected CLIP layer, the patch features the
  projector receives), averaged over patches: ``[B, D_vision]``.  A sample given several images (a list, or a 5-D
  tensor) averages over all their patches.
* text: the LLM's input embeddings (``embed_tokens``) of the prompt's text tokens, averaged: ``[B, d_model]``.  The
  prompt's text = the valid tokens after the first ``<image>`` placeholder that are not answer tokens (``labels``
  ignored) and not the placeholder itself.  In LLaVA's templates that is the question (with the turn's separators,
  e.g. ``"\\n...question... ASSISTANT:"``): the system prompt before the image is the same for every task and is
  left out, as HiDe-LLaVA leaves it out.  A sequence without an image placeholder uses all its non-answer tokens.

Both are computed without the LLM body (no DyMoE layer runs), in fp32, so they do not depend on the task banks.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch
from torch import Tensor

#: LLaVA's constants (``llava.constants``), repeated so that this module imports no llava code.
IMAGE_TOKEN_INDEX = -200
IGNORE_INDEX = -100


def prompt_text_mask(input_ids: Tensor, labels: Optional[Tensor] = None,
                     attention_mask: Optional[Tensor] = None) -> Tensor:
    """Bool ``[B, L]``: the prompt's text tokens of each sequence (module docstring)."""
    valid = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    is_image = input_ids == IMAGE_TOKEN_INDEX
    mask = valid & ~is_image
    if labels is not None:
        mask &= labels == IGNORE_INDEX
    seen_image = torch.cumsum((is_image & valid).long(), dim=1) > 0
    has_image = seen_image[:, -1:]
    return mask & (seen_image | ~has_image)


@torch.no_grad()
def text_features(model, input_ids: Tensor, labels: Optional[Tensor] = None,
                  attention_mask: Optional[Tensor] = None) -> Tensor:
    """``[B, d_model]`` fp32: the mean input embedding of each sequence's prompt text (zeros if it has none)."""
    mask = prompt_text_mask(input_ids, labels, attention_mask)
    embed = model.get_model().embed_tokens
    ids = input_ids.clamp_min(0).to(embed.weight.device)
    e = embed(ids).float()
    m = mask.to(e.device, torch.float32).unsqueeze(-1)
    return (e * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)


@torch.no_grad()
def image_features(model, images: Any) -> Optional[Tensor]:
    """``[B, D_vision]`` fp32: each sample's vision-tower patch features, averaged (None without images)."""
    if images is None:
        return None
    tower = model.get_vision_tower()
    dtype = getattr(tower, "dtype", None) or next(tower.parameters()).dtype
    device = getattr(tower, "device", None) or next(tower.parameters()).device
    if isinstance(images, (list, tuple)) or images.dim() == 5:
        per_sample: List[Tensor] = []
        for img in images:
            img = img if img.dim() == 4 else img.unsqueeze(0)
            feats = tower(img.to(device=device, dtype=dtype)).float()
            per_sample.append(feats.reshape(-1, feats.shape[-1]).mean(dim=0))
        return torch.stack(per_sample)
    feats = tower(images.to(device=device, dtype=dtype)).float()
    return feats.mean(dim=1)


def batch_features(model, batch: Dict[str, Any]) -> Dict[str, Optional[Tensor]]:
    """``{"image": [B, Dv] or None, "text": [B, d]}`` of a collated LLaVA batch (``input_ids``, ``labels``,
    ``attention_mask``, ``images``)."""
    text = text_features(model, batch["input_ids"], batch.get("labels"), batch.get("attention_mask"))
    image = image_features(model, batch.get("images"))
    if image is not None and image.shape[0] != text.shape[0]:
        raise ValueError(f"task features: {image.shape[0]} image(s) for {text.shape[0]} sequence(s); the selector "
                         "needs one image (or one list of images) per sequence")
    return {"image": image, "text": text}
