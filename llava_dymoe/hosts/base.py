"""What every host adapter says about its model family (docs/hosts.md).

A *host* is the multimodal model class DyMoE is injected into: upstream LLaVA (``llava-torch``, both lines),
HF-native ``LlavaForConditionalGeneration``, ... One adapter per family answers five questions, and
everything else (the core layer, the method registry, the RSR schedule, the bank checkpoint format, the
trainer mixin, the runner) is shared:

* where the language model's projections are: ``decoder_layers(model)`` (the banks' state names are the
  model's module paths, so a checkpoint belongs to one host: ``name`` is recorded in it);
* how a batch marks image and text tokens: ``install_context_hooks`` (valid tokens, supervised tokens,
  KV-cache length for the sequence decision) and ``token_kinds`` (image / instruction / answer);
* how LLaVA-format data becomes model inputs (``dataset``, ``collator``; upstream LLaVA's ``train()`` keeps its own);
* which non-expert weights travel with a task (``projector``, ``non_expert_state``) and how they load back;
* how parameters are gathered for saving (``gather``: ZeRO-3 aware);
* how a model is recognised (``matches``).

Torch only at import; host modules import their framework inside methods.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Mapping, Optional, Tuple

import torch
from torch import Tensor, nn

from ..errors import DyMoEError


class InjectionError(RuntimeError):
    """The model does not have the structure DyMoE expects."""


class HostError(DyMoEError):
    """A checkpoint or a model that belongs to another host than the one asked for."""


def find_module_path(model: nn.Module, target: nn.Module) -> str:
    for name, mod in model.named_modules():
        if mod is target:
            return name
    raise InjectionError("could not locate the decoder layers among the model's modules")


def zero_gather(p: Tensor) -> Tensor:
    """A full CPU copy of ``p``; a ZeRO-3 partitioned parameter is gathered first (a collective: every rank)."""
    if hasattr(p, "ds_id"):
        from deepspeed import zero

        with zero.GatheredParameters([p]):
            return p.data.detach().cpu().clone()
    return p.detach().cpu().clone()


def gathered(params):
    """ZeRO-3: gather partitioned parameters so rank 0 may overwrite them; else a null context."""
    if any(hasattr(p, "ds_id") for p in params):
        import deepspeed

        return deepspeed.zero.GatheredParameters(params, modifier_rank=0)
    return contextlib.nullcontext()


class Host:
    """One host family (module docstring). Subclasses set ``name`` and override what differs."""

    name = "?"
    #: one line for docs and errors: which model class this is
    model_class = "?"
    #: substring of the parameter names of the projector (saved with every task, trained or not)
    projector_key = "mm_projector"

    def matches(self, model: nn.Module) -> bool:
        raise NotImplementedError

    def load_model(self, path: str, **kwargs) -> nn.Module:
        """The host's model from a folder (``from_pretrained``); ``kwargs`` e.g. ``attn_implementation``."""
        raise NotImplementedError(f"host {self.name!r} is loaded by its own entry points (docs/hosts.md)")

    def load_processor(self, path: str):
        raise NotImplementedError(f"host {self.name!r} is loaded by its own entry points (docs/hosts.md)")

    def dataset(self, data_path: str, processor, image_folder: Optional[str], max_length: Optional[int]):
        """LLaVA-format training data as this host's model inputs (``input_ids``, ``labels``, images)."""
        raise NotImplementedError(f"host {self.name!r}: upstream LLaVA's train() builds its own dataset")

    def collator(self, processor) -> Callable:
        raise NotImplementedError(f"host {self.name!r}: upstream LLaVA's train() builds its own collator")

    def decoder_layers(self, model: nn.Module) -> Tuple[str, nn.ModuleList]:
        """``(path, layers)`` of the LLM decoder stack."""
        raise NotImplementedError

    def projector(self, model: nn.Module) -> Optional[nn.Module]:
        return None

    def install_context_hooks(self, model: nn.Module, ctx) -> Any:
        raise NotImplementedError

    def token_kinds(self, inputs: Mapping[str, Any], model: nn.Module) -> Optional[Tensor]:
        return None

    def gather(self) -> Callable[[Tensor], Tensor]:
        return zero_gather

    def non_expert_state(self, model: nn.Module, gather: Callable) -> Mapping[str, Tensor]:
        """Projector + other trainable non-expert parameters, named as ``model.named_parameters()``."""
        return {name: gather(p) for name, p in model.named_parameters()
                if "dymoe_" not in name and (p.requires_grad or self.projector_key in name)}

    def load_non_expert(self, model: nn.Module, state: Mapping[str, Tensor], where: str) -> None:
        """Load what ``non_expert_state`` saved (``model.named_parameters()`` names); every key must land."""
        own = dict(model.named_parameters())
        unknown = sorted(k for k in state if k not in own)
        if unknown:
            raise HostError(f"{where}: non-expert weights the model lacks: {unknown[:5]}; was it trained with "
                            "another projector or base model?")
        with gathered([own[k] for k in state]), torch.no_grad():
            for k, v in state.items():
                own[k].copy_(v.to(dtype=own[k].dtype, device=own[k].device))
