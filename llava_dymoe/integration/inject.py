"""Put ``DyMoELinear`` layers into a LLaVA (or any Llama-style) model, in place.

Only the LLM's decoder layers are adapted: the projections named in ``cfg.target_modules`` under the
decoder stack the model's host adapter names (``llava_dymoe/hosts``: ``model.get_model().layers`` for
``LlavaLlamaForCausalLM``, ``model.model.layers`` for a plain Llama, ``model.model.language_model.layers``
for ``LlavaForConditionalGeneration``).
The vision tower, the ``mm_projector``, the embeddings and ``lm_head`` are never touched
(method.md §1.2).  Injection mutates the model in place, because LLaVA's ``train()`` keeps its own
reference to the model object for saving (llava-integration.md §6.1 T2).

State names are the model's module paths plus the bank name, e.g.
``model.layers.0.self_attn.q_proj.dymoe_A.t0``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Mapping, Optional, Tuple

import torch
from torch import Tensor, nn

from ..config import DyMoEConfig
from ..core import DyMoELinear, dymoe_layers
from ..hosts import host_of
from ..hosts.base import InjectionError  # noqa: F401  (raised here; its home is the host layer)


@dataclass
class InjectionReport:
    targeted: List[str] = field(default_factory=list)  # module paths now holding a DyMoELinear
    created: int = 0  # how many were wrapped by this call (0 when the model was already injected)
    num_layers: int = 0

    def __len__(self) -> int:
        return len(self.targeted)


def decoder_layers(model: nn.Module) -> Tuple[str, nn.ModuleList]:
    """``(path, layers)`` of the LLM decoder stack, as the model's host adapter says (``llava_dymoe/hosts``)."""
    return host_of(model).decoder_layers(model)


def _targets(model: nn.Module, cfg: DyMoEConfig) -> Iterator[Tuple[str, nn.Module, str, nn.Module]]:
    """``(full_name, parent, attr, module)`` for each target projection of each decoder layer."""
    prefix, layers = decoder_layers(model)
    wanted = set(cfg.target_modules)
    for i, layer in enumerate(layers):
        found = set()
        for name, mod in layer.named_modules():
            leaf = name.rsplit(".", 1)[-1]
            if leaf in wanted:
                parent = layer.get_submodule(name.rsplit(".", 1)[0]) if "." in name else layer
                found.add(leaf)
                yield f"{prefix}.{i}.{name}", parent, leaf, mod
        missing = wanted - found
        if missing:
            raise InjectionError(f"decoder layer {i} has no module(s) {sorted(missing)}; "
                                 f"check --dymoe_target_modules (known Llama projections: q,k,v,o,gate,up,down)")


def inject(model: nn.Module, cfg: DyMoEConfig) -> InjectionReport:
    """Wrap every target projection in a ``DyMoELinear`` (no bank yet); idempotent.

    A second call on an injected model wraps nothing and returns the same names.  Raises
    ``InjectionError`` when a target is neither ``nn.Linear`` nor ``DyMoELinear`` or when the count is
    not ``num_layers * len(target_modules)``.
    """
    report = InjectionReport(num_layers=len(decoder_layers(model)[1]))
    for full, parent, attr, mod in list(_targets(model, cfg)):
        if not isinstance(mod, DyMoELinear):
            if not isinstance(mod, nn.Linear):
                raise InjectionError(f"{full} is a {type(mod).__name__}, not nn.Linear; is the model "
                                     "wrapped by peft? run DyMoE with --lora_enable False")
            setattr(parent, attr, DyMoELinear(mod, cfg))
            report.created += 1
        else:
            mod.dymoe_config = cfg
        report.targeted.append(full)
    expected = report.num_layers * len(cfg.target_modules)
    if len(report.targeted) != expected:
        raise InjectionError(f"targeted {len(report.targeted)} projections, expected {expected} "
                             f"({report.num_layers} layers x {len(cfg.target_modules)} targets)")
    return report


def set_config(model: nn.Module, cfg: DyMoEConfig) -> None:
    """Point every DyMoE layer at ``cfg`` (routing values are read from it at every forward)."""
    for _, layer in dymoe_layers(model):
        layer.dymoe_config = cfg


def add_task(model: nn.Module, dtype: Optional[torch.dtype] = None) -> str:
    """Freeze every existing bank and add a trainable one to every DyMoE layer; returns its key."""
    keys = {layer.add_task(dtype=dtype) for _, layer in dymoe_layers(model)}
    if len(keys) != 1:
        raise InjectionError(f"DyMoE layers disagree on the number of tasks: new keys {sorted(keys)}")
    return keys.pop()


def num_tasks(model: nn.Module) -> int:
    counts = {layer.num_tasks for _, layer in dymoe_layers(model)}
    if len(counts) > 1:
        raise InjectionError(f"DyMoE layers disagree on the number of task banks: {sorted(counts)}")
    return counts.pop() if counts else 0


def bank_state(model: nn.Module, gather=None) -> Dict[str, Tensor]:
    """All banks as CPU tensors, keyed ``<module path>.<bank>.<task>``.

    ``gather(param) -> Tensor`` returns a full CPU copy of a parameter; pass LLaVA's ZeRO-3-aware
    ``maybe_zero_3`` under DeepSpeed (a collective: call on every rank).  Default: detach + cpu.
    """
    gather = gather or (lambda p: p.detach().cpu().clone())
    out: Dict[str, Tensor] = {}
    for name, layer in dymoe_layers(model):
        for bank in layer.bank_names:
            for key, p in getattr(layer, bank).items():
                out[f"{name}.{bank}.{key}"] = gather(p)
    return out


def load_bank_state(model: nn.Module, state: Mapping[str, Tensor], dtype=torch.float32) -> int:
    """Load frozen banks saved by ``bank_state`` into a freshly injected model; returns the task count.

    Strict: every DyMoE layer must find its banks, and every key must belong to a layer (a missing
    key is an error, never a silently smaller model).
    """
    per_layer: Dict[str, Dict[str, Tensor]] = {}
    for key, t in state.items():
        head, bank, task = key.rsplit(".", 2)
        per_layer.setdefault(head, {})[f"{bank}.{task}"] = t
    layers = dict(dymoe_layers(model))
    missing = sorted(set(layers) - set(per_layer))
    unexpected = sorted(set(per_layer) - set(layers))
    if missing or unexpected:
        raise InjectionError(f"expert state does not match the model: {len(missing)} DyMoE layer(s) without "
                             f"banks (e.g. {missing[:3]}), {len(unexpected)} unknown layer name(s) (e.g. "
                             f"{unexpected[:3]}); was the checkpoint made for another base model or targets?")
    counts = {layers[name].load_banks(sub, dtype=dtype) for name, sub in per_layer.items()}
    if len(counts) != 1:
        raise InjectionError(f"checkpoint layers hold different numbers of task banks: {sorted(counts)}")
    return counts.pop()
