"""Fill a ``DyMoEContext`` from LLaVA's forward: one place for training, key fitting and inference.

``install_context_hooks(model, ctx)`` (``LlavaLlamaForCausalLM``) adds two hooks on the model *instance* (no class
is patched; they go away with the model):

* around ``model.prepare_inputs_labels_for_multimodal`` (LLaVA's image splice): ``ctx.supervised`` = the spliced
  labels != IGNORE_INDEX (the answer tokens), None when the forward has no labels (inference).  The LLM body never
  sees the labels (LLaVA passes them to the LM head only), so they are taken where the splice returns them.
* a forward pre-hook on the LLM body (``model.get_model()``), which receives the post-splice batch:
  ``ctx.valid_mask`` = the attention mask's columns of this forward's tokens (with a KV cache the mask also covers
  the cached ones), ``ctx.past_len`` = the tokens in the KV cache before this forward (0 without one).  A
  ``supervised`` or ``token_kind`` mask that does not match the body's batch is stale and dropped.

The sequence bank (``core/rules/sequence.py``) pools the valid prompt tokens (``ctx.token_prompt``) and reuses a
prompt's decision only for forwards that continue its KV cache (``past_len``).  Nothing is cleared after the
forward: a reentrant checkpoint's recompute (during backward) must read the masks of its own forward.
"""
from __future__ import annotations

import functools
import logging
from typing import Any, Optional

import torch
from torch import nn

from ..core import DyMoEContext, attach_context, dymoe_layers

log = logging.getLogger("llava_dymoe")


def past_length(past: Any) -> int:
    """Tokens held by a KV cache: HF's ``Cache`` objects or the legacy tuple of (key, value) per layer."""
    if past is None:
        return 0
    if hasattr(past, "get_seq_length"):
        return int(past.get_seq_length())
    try:
        return int(past[0][0].shape[-2]) if len(past) else 0
    except (TypeError, IndexError, AttributeError):
        return 0


def _arg(args, kwargs, name: str, index: int) -> Optional[Any]:
    return kwargs[name] if name in kwargs else args[index] if len(args) > index else None


def body_pre_hook(ctx: DyMoEContext, cache_arg: str = "past_key_values"):
    """Forward pre-hook (``with_kwargs=True``) on the LLM body (``LlamaModel``: input_ids, attention_mask,
    position_ids, past_key_values, inputs_embeds; ``cache_arg``: the KV cache's name, ``cache`` on transformers 5.2x)."""

    def hook(module, args, kwargs):
        mask = _arg(args, kwargs, "attention_mask", 1)
        embeds = _arg(args, kwargs, "inputs_embeds", 4)
        ids = _arg(args, kwargs, "input_ids", 0)
        tokens = embeds if isinstance(embeds, torch.Tensor) else ids if isinstance(ids, torch.Tensor) else None
        shape = tuple(tokens.shape[:2]) if tokens is not None else None
        ctx.past_len = past_length(_arg(args, kwargs, cache_arg, 3))
        if isinstance(mask, torch.Tensor) and mask.dim() == 2:
            ctx.valid_mask = (mask[:, -shape[1]:] if shape is not None else mask).bool()
        else:
            ctx.valid_mask = None
        if ctx.supervised is not None and tuple(ctx.supervised.shape) != shape:
            ctx.supervised = None
        if ctx.token_kind is not None and shape is not None and tuple(ctx.token_kind.shape) != shape:
            log.warning("routing statistics: token kinds %s do not match the spliced batch %s; this batch is "
                        "recorded without kinds", tuple(ctx.token_kind.shape), shape)
            ctx.token_kind = None

    return hook


def _splice_recorder(ctx: DyMoEContext, splice):
    # the IGNORE_INDEX the splice itself uses (a fork without a `llava` package, CoIN, has its own constants)
    IGNORE_INDEX = getattr(getattr(splice, "__func__", splice), "__globals__", {}).get("IGNORE_INDEX")
    if IGNORE_INDEX is None:
        from llava.constants import IGNORE_INDEX

    @functools.wraps(splice)
    def wrapped(*args, **kwargs):
        out = splice(*args, **kwargs)
        labels = out[-1]  # the spliced labels come last on both lines (1.2: 6 values, 1.1: 5)
        ctx.supervised = labels != IGNORE_INDEX if isinstance(labels, torch.Tensor) else None
        return out

    wrapped.__dymoe_ctx__ = ctx
    return wrapped


def install_context_hooks(model: nn.Module, ctx: DyMoEContext) -> DyMoEContext:
    """Attach ``ctx`` to every DyMoE layer of ``model`` and keep it filled from LLaVA's forward (module doc)."""
    attach_context(model, ctx)
    splice = model.prepare_inputs_labels_for_multimodal
    original = getattr(splice, "__wrapped__", splice) if hasattr(splice, "__dymoe_ctx__") else splice
    model.prepare_inputs_labels_for_multimodal = _splice_recorder(ctx, original)
    old = getattr(model, "_dymoe_body_hook", None)
    if old is not None:
        old.remove()
    model._dymoe_body_hook = model.get_model().register_forward_pre_hook(body_pre_hook(ctx), with_kwargs=True)
    return ctx


def context_of(model: nn.Module) -> Optional[DyMoEContext]:
    """The context attached to ``model``'s DyMoE layers (None when none is), e.g. to set ``bank_weights`` before a
    forward of ``assign_rule="given"``."""
    return next((layer._dymoe_ctx for _, layer in dymoe_layers(model)), None)
