"""Upstream LLaVA (``llava-torch``, the 1.2 and 1.1 lines): ``LlavaLlamaForCausalLM``, and any Llama-style model
whose decoder layers sit at ``get_model().layers`` or ``model.layers`` (a plain Llama in tests).

The adapter only points at what the upstream integration already does: the image splice hook
(``integration/context_hooks.py``), the post-splice token kinds (``integration/token_kinds.py``), LLaVA's
``maybe_zero_3`` for saving and the upstream key style of ``non_lora_trainables.bin``.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Tuple

from torch import Tensor, nn

from .base import Host, InjectionError, find_module_path


class UpstreamLlava(Host):
    name = "llava"
    model_class = "LlavaLlamaForCausalLM (llava-torch 1.2.2.post1 / 1.1.1)"
    projector_key = "mm_projector"

    def matches(self, model: nn.Module) -> bool:  # the fallback host: every model not claimed by another
        return True

    def decoder_layers(self, model: nn.Module) -> Tuple[str, nn.ModuleList]:
        inner = model.get_model() if hasattr(model, "get_model") else getattr(model, "model", None)
        layers = getattr(inner, "layers", None)
        if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
            raise InjectionError(f"{type(model).__name__} has no LLM decoder layers at get_model().layers / "
                                 "model.layers; DyMoE supports LLaVA-Llama models (LlavaLlamaForCausalLM) and the "
                                 "hosts of docs/hosts.md")
        return find_module_path(model, layers), layers

    def projector(self, model: nn.Module) -> Optional[nn.Module]:
        return getattr(model.get_model(), "mm_projector", None)

    def install_context_hooks(self, model: nn.Module, ctx) -> Any:
        from ..integration.context_hooks import install_context_hooks

        return install_context_hooks(model, ctx)

    def token_kinds(self, inputs: Mapping[str, Any], model: nn.Module) -> Optional[Tensor]:
        from ..integration.token_kinds import training_token_kinds

        return training_token_kinds(inputs, model)

    def gather(self) -> Callable[[Tensor], Tensor]:
        from llava.train.train import maybe_zero_3

        return lambda p: maybe_zero_3(p, ignore_status=True)

    def load_non_expert(self, model: nn.Module, state: Mapping[str, Tensor], where: str) -> None:
        from ..integration.checkpoint import load_non_lora

        load_non_lora(model, state, where)
