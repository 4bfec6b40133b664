"""Token kinds (image / instruction / answer) of a LLaVA training batch, in post-splice positions.

Used only for ``--dymoe_log_routing True``: ``routing_stats.json`` then splits every routing statistic by
token kind (``core/stats.py`` ``KIND_NAMES``).  LLaVA's ``prepare_inputs_labels_for_multimodal`` drops each
sample's padding (attention mask), replaces the ``<image>`` placeholder by the vision tower's patches,
truncates to ``tokenizer_model_max_length`` and pads again on ``tokenizer_padding_side``; this module
repeats those steps on the kinds (``kind_mask`` per sample, -1 on padding).  Anything
it cannot mirror (several images per sample, a batch without ``labels``) gives ``None``: no kinds, the
statistics are still recorded over all tokens.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

import torch
from torch import Tensor

#: Token kinds (the index of ``core.stats.KIND_NAMES``).
IMAGE, INSTRUCTION, ANSWER = 0, 1, 2


def kind_mask(input_ids: torch.Tensor, n_patches: int, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Post-splice token kinds ``[1, S]`` of one pre-splice sequence ``input_ids`` ``[1, L]``.

    The ``IMAGE_TOKEN_INDEX`` placeholder becomes ``n_patches`` image tokens; tokens whose ``labels`` are
    not ``IGNORE_INDEX`` are answer tokens; every other token is an instruction token.
    """
    from llava.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX

    ids = input_ids.reshape(-1)
    kinds = torch.full_like(ids, INSTRUCTION)
    if labels is not None:
        kinds[labels.reshape(-1) != IGNORE_INDEX] = ANSWER
    is_image = ids == IMAGE_TOKEN_INDEX
    kinds[is_image] = IMAGE
    repeats = torch.where(is_image, torch.full_like(ids, n_patches), torch.ones_like(ids))
    return torch.repeat_interleave(kinds, repeats).unsqueeze(0)


def training_token_kinds(inputs: Mapping[str, Any], model) -> Optional[Tensor]:
    """Int ``[B, S]`` kinds of the spliced batch (-1 = padding), or ``None`` (see module docstring)."""
    from llava.constants import IMAGE_TOKEN_INDEX

    ids, labels, mask = inputs.get("input_ids"), inputs.get("labels"), inputs.get("attention_mask")
    if not isinstance(ids, Tensor) or not isinstance(labels, Tensor) or inputs.get("images") is None:
        return None
    try:
        n_patches = int(model.get_vision_tower().num_patches)
    except (AttributeError, TypeError, ValueError):
        return None
    if mask is None:
        mask = torch.ones_like(ids, dtype=torch.bool)
    cfg = getattr(model, "config", None)
    max_len = getattr(cfg, "tokenizer_model_max_length", None)
    left = getattr(cfg, "tokenizer_padding_side", "right") == "left"
    rows = []
    for i in range(ids.shape[0]):
        keep = mask[i].bool()
        row_ids = ids[i][keep]
        if int((row_ids == IMAGE_TOKEN_INDEX).sum()) > 1:
            return None
        row = kind_mask(row_ids.cpu(), n_patches, labels[i][keep].cpu())[0]
        rows.append(row[:max_len] if max_len is not None else row)
    width = max(r.shape[0] for r in rows)
    out = torch.full((len(rows), width), -1, dtype=torch.long)
    for i, r in enumerate(rows):
        if left:
            out[i, width - r.shape[0]:] = r
        else:
            out[i, :r.shape[0]] = r
    return out.to(ids.device)
