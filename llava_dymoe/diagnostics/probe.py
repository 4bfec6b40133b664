"""Run a DyMoE checkpoint on LLaVA inputs with routing statistics on (CPU, fp32).

Shared by the ``drift`` and ``tokens`` commands.  A ``Probe`` loads a finished task checkpoint with
``load_dymoe_for_eval`` (every bank, the projector), attaches a ``DyMoEContext`` that carries the
token-kind mask of the current single-sample batch (0 image, 1 instruction, 2 answer; ``core/stats.py``)
and a ``RoutingStats``, and runs one forward per sample.  Kinds are built on the pre-splice ``input_ids``
(the ``<image>`` placeholder expanded to the vision tower's patch count) and checked against the
post-splice length in a forward pre-hook on the LLM body; a mismatch (truncation, another patch
layout) is an error, never a silently shifted mask.
"""
from __future__ import annotations

import copy
import json
import os
from types import SimpleNamespace
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch

from ..core import DyMoEContext, RoutingStats, attach_stats
from ..integration.context_hooks import install_context_hooks
from ..integration.inject import num_tasks
from ..integration.token_kinds import ANSWER, IMAGE, INSTRUCTION, kind_mask  # noqa: F401 (re-exported)



def read_questions(path: str, limit: Optional[int] = None) -> List[Dict[str, Any]]:
    """Rows of a ``question_id/image/text`` JSONL (what ``llava.eval.model_vqa_loader`` reads); ``limit``: the
    first rows only (at least 1)."""
    if limit is not None and limit < 1:
        raise ValueError(f"--max-questions must be at least 1, got {limit}; leave it out to use every question")
    rows = []
    with open(path) as f:
        for i, line in enumerate(f):
            if not line.strip():
                continue
            row = json.loads(line)
            missing = {"question_id", "image", "text"} - set(row)
            if missing:
                raise ValueError(f"{path} line {i + 1}: missing {sorted(missing)} (question files have "
                                 "question_id, image and text)")
            rows.append(row)
            if limit is not None and len(rows) >= limit:
                break
    if not rows:
        raise ValueError(f"{path}: no questions")
    return rows


class Probe:
    """A checkpoint loaded for routing diagnostics (see module docstring)."""

    def __init__(self, ckpt: str, model_base: str):
        from ..integration.eval_loader import load_dymoe_for_eval

        if not os.path.isdir(ckpt):
            raise FileNotFoundError(f"checkpoint directory {ckpt} does not exist")
        self.ckpt = ckpt
        self.tokenizer, model, self.processor, _ = load_dymoe_for_eval(ckpt, model_base, "dymoe", device="cpu",
                                                                       device_map="cpu")
        self.model = model.float().eval()
        self.num_tasks = num_tasks(self.model)
        # the loader's context hooks (valid tokens, KV-cache length) fill this context; the kinds are checked first
        self.ctx = install_context_hooks(self.model, DyMoEContext())
        self.model.get_model().register_forward_pre_hook(self._check_kinds, with_kwargs=True, prepend=True)

    def _check_kinds(self, module, args, kwargs) -> None:
        kind, embeds = self.ctx.token_kind, kwargs.get("inputs_embeds")
        if kind is not None and embeds is not None and kind.shape != embeds.shape[:2]:
            raise ValueError(f"token-kind mask has shape {tuple(kind.shape)} but the spliced sequence is "
                             f"{tuple(embeds.shape[:2])} (truncated by tokenizer_model_max_length, or a patch "
                             "layout other than 'flat'?)")

    @property
    def n_patches(self) -> int:
        return int(self.model.get_vision_tower().num_patches)

    def image(self, image_folder: str, name: str) -> Tuple[torch.Tensor, Tuple[int, int]]:
        from PIL import Image
        from llava.mm_utils import process_images

        image = Image.open(os.path.join(image_folder, name)).convert("RGB")
        return process_images([image], self.processor, self.model.config).float(), image.size

    def question_ids(self, text: str) -> torch.Tensor:
        """``[1, L]`` vicuna_v1 prompt of one image question (as the eval scripts build it)."""
        from ..integration.tiny_model import vicuna_prompt_ids

        return vicuna_prompt_ids(self.tokenizer, text)

    def conversation_ids(self, conversations: List[Dict[str, str]]) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(input_ids, labels)`` ``[1, L]`` of a LLaVA training sample, tokenised as ``train()`` does."""
        from llava.train.train import preprocess_multimodal, preprocess_v1

        if self.tokenizer.pad_token is None:  # as train() sets it for the v1 conversation template
            self.tokenizer.pad_token = self.tokenizer.unk_token
        sources = preprocess_multimodal([copy.deepcopy(conversations)],
                                        SimpleNamespace(is_multimodal=True, mm_use_im_start_end=False))
        out = preprocess_v1(sources, self.tokenizer, has_image=True)
        return out["input_ids"][:1], out["labels"][:1]

    @torch.inference_mode()
    def route(self, stats: RoutingStats, ids: torch.Tensor, pixels: torch.Tensor,
              labels: Optional[torch.Tensor] = None) -> None:
        """One forward of a single sample with ``stats`` attached and its kinds in the context."""
        attach_stats(self.model, stats)
        self.ctx.token_kind = kind_mask(ids, self.n_patches, labels)
        try:
            self.model(input_ids=ids, images=pixels)
        finally:
            self.ctx.token_kind = None
            attach_stats(self.model, None)

    @torch.inference_mode()
    def teacher_forced(self, ids: torch.Tensor, labels: torch.Tensor, pixels: torch.Tensor) -> Dict[str, torch.Tensor]:
        """One teacher-forced forward of a training-format sample (``conversation_ids``):
        ``{"logits": [T, V], "target": [T]}``, the fp32 next-token logits at the T answer tokens (labels !=
        IGNORE_INDEX, in post-splice positions: the logits of the preceding position) and the answer token
        ids (no statistics)."""
        from llava.constants import IGNORE_INDEX

        kinds = kind_mask(ids, self.n_patches, labels)
        post_labels = kind_mask(ids, self.n_patches).clone().fill_(IGNORE_INDEX)
        post_labels[kinds == ANSWER] = labels[labels != IGNORE_INDEX]
        self.ctx.token_kind = kinds  # checked against the spliced length by the pre-hook
        try:
            logits = self.model(input_ids=ids, images=pixels).logits
        finally:
            self.ctx.token_kind = None
        pos = (post_labels[0] != IGNORE_INDEX).nonzero().squeeze(1)
        if pos.numel() and int(pos[0]) == 0:
            raise ValueError("teacher_forced: an answer token at position 0 has no preceding logits")
        return {"logits": logits[0, pos - 1].float(), "target": post_labels[0, pos]}

    @torch.inference_mode()
    def answer(self, ids: torch.Tensor, pixels: torch.Tensor, image_size, max_new_tokens: int = 16) -> str:
        """Greedy answer (no statistics)."""
        out = self.model.generate(ids, images=pixels, image_sizes=[image_size], do_sample=False,
                                  max_new_tokens=max_new_tokens, pad_token_id=self.tokenizer.unk_token_id)
        return self.tokenizer.decode(out[0], skip_special_tokens=True).strip()

    def questions(self, rows: List[Dict[str, Any]], image_folder: str) -> Iterator[Tuple[dict, torch.Tensor,
                                                                                         torch.Tensor, Any]]:
        for row in rows:
            pixels, size = self.image(image_folder, row["image"])
            yield row, self.question_ids(row["text"]), pixels, size


def module_position(name: str) -> Tuple[int, str]:
    """``(decoder layer index, projection)`` of a DyMoE module name such as ``model.layers.3.mlp.up_proj``."""
    parts = name.split(".")
    for i, p in enumerate(parts[:-1]):
        if p == "layers" and parts[i + 1].isdigit():
            return int(parts[i + 1]), parts[-1]
    raise ValueError(f"cannot find the decoder layer index in module name {name!r}")
