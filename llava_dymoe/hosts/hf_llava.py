"""HF-native LLaVA: ``transformers.LlavaForConditionalGeneration`` (the ``llava-hf/llava-1.5-*-hf`` checkpoints).

Layout (transformers 5.x): ``model.language_model.layers`` holds the decoder layers, ``model.multi_modal_projector``
the projector, ``model.vision_tower`` the CLIP tower.  Unlike upstream LLaVA the processor already expands each
``<image>`` into one ``image_token_id`` per patch, so the batch's ``input_ids``, ``labels`` and ``attention_mask``
have the positions the LLM sees: image tokens are ``input_ids == image_token_id``, supervised tokens
``labels != -100``.  Two hooks on the model instance fill the shared ``DyMoEContext``: a forward pre-hook on the
top-level model (the supervised mask from ``labels``; None without labels, i.e. at inference) and the same LLM-body
pre-hook as upstream (valid tokens, KV-cache length).
"""
from __future__ import annotations

import inspect
from typing import Any, Mapping, Optional, Tuple

import torch
from torch import Tensor, nn

from .base import Host, InjectionError, find_module_path

IGNORE_INDEX = -100
IMAGE, INSTRUCTION, ANSWER = 0, 1, 2  # integration/token_kinds.py's kinds


def _cache_arg(body: nn.Module) -> str:
    params = inspect.signature(type(body).forward).parameters
    return "cache" if "cache" in params else "past_key_values"


class HFMultimodalHost(Host):
    """Shared by the HF-native hosts: the processor expands image tokens, the LLM body is ``language_model``."""

    #: ``model.<attr>`` path of the LLM body, relative to the top-level model
    body_path = "model.language_model"

    def body(self, model: nn.Module) -> nn.Module:
        try:
            return model.get_submodule(self.body_path)
        except AttributeError:
            raise InjectionError(f"{type(model).__name__} has no {self.body_path}; host {self.name!r} expects "
                                 f"{self.model_class}") from None

    #: the transformers class the host loads
    class_name = "?"

    def matches(self, model: nn.Module) -> bool:
        """By config *and* structure: llava-torch 1.1.x's own config is also ``model_type == "llava"``, but its
        model splices images itself (``prepare_inputs_labels_for_multimodal``) and has no ``language_model``."""
        if getattr(getattr(model, "config", None), "model_type", None) != self.model_type:
            return False
        if hasattr(model, "prepare_inputs_labels_for_multimodal"):
            return False
        try:
            model.get_submodule(self.body_path)
        except AttributeError:
            return False
        return True

    def load_model(self, path: str, **kwargs) -> nn.Module:
        import transformers

        return getattr(transformers, self.class_name).from_pretrained(path, **kwargs)

    def load_processor(self, path: str):
        from transformers import AutoProcessor

        return AutoProcessor.from_pretrained(path)

    def decoder_layers(self, model: nn.Module) -> Tuple[str, nn.ModuleList]:
        layers = getattr(self.body(model), "layers", None)
        if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
            raise InjectionError(f"{type(model).__name__}.{self.body_path} has no decoder layers")
        return find_module_path(model, layers), layers

    def dataset(self, data_path: str, processor, image_folder: Optional[str], max_length: Optional[int]):
        from .hf_data import LlavaJsonDataset

        return LlavaJsonDataset(data_path, processor, image_folder, max_length)

    def collator(self, processor):
        from .hf_data import PadCollator

        return PadCollator(processor.tokenizer.pad_token_id)

    def image_token_id(self, model: nn.Module) -> Optional[int]:
        cfg = model.config
        return getattr(cfg, "image_token_id", getattr(cfg, "image_token_index", None))

    def install_context_hooks(self, model: nn.Module, ctx) -> Any:
        from ..core import attach_context
        from ..integration.context_hooks import body_pre_hook

        attach_context(model, ctx)

        def top_hook(module, args, kwargs):
            labels = kwargs.get("labels")
            ctx.supervised = labels != IGNORE_INDEX if isinstance(labels, torch.Tensor) else None

        for attr in ("_dymoe_top_hook", "_dymoe_body_hook"):
            old = getattr(model, attr, None)
            if old is not None:
                old.remove()
        body = self.body(model)
        model._dymoe_top_hook = model.register_forward_pre_hook(top_hook, with_kwargs=True)
        model._dymoe_body_hook = body.register_forward_pre_hook(body_pre_hook(ctx, _cache_arg(body)),
                                                                with_kwargs=True)
        return ctx

    def token_kinds(self, inputs: Mapping[str, Any], model: nn.Module) -> Optional[Tensor]:
        """Int ``[B, S]`` kinds (-1 on padding): image tokens, answer tokens (labels), the rest instruction."""
        ids, labels, mask = inputs.get("input_ids"), inputs.get("labels"), inputs.get("attention_mask")
        if not isinstance(ids, Tensor) or not isinstance(labels, Tensor):
            return None
        kinds = torch.full_like(ids, INSTRUCTION)
        kinds[labels != IGNORE_INDEX] = ANSWER
        image = self.image_token_id(model)
        if image is not None:
            kinds[ids == image] = IMAGE
        if mask is not None:
            kinds[~mask.bool()] = -1
        return kinds


class HFLlava(HFMultimodalHost):
    name = "hf-llava"
    model_class = "transformers.LlavaForConditionalGeneration"
    model_type = "llava"
    class_name = "LlavaForConditionalGeneration"
    projector_key = "multi_modal_projector"

    def projector(self, model: nn.Module) -> Optional[nn.Module]:
        return getattr(model.model, "multi_modal_projector", None)
