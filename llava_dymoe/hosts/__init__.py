"""Host adapters: one per model family DyMoE is injected into (``base.py`` says what an adapter answers).

``HOSTS`` is the registry (``--host NAME``); ``host_of(model)`` recognises a built model (the specific hosts
first, upstream LLaVA last, as the fallback that also covers a plain Llama); ``check_host`` refuses, in one
line, a checkpoint trained on another host (its bank names are another model's module paths).
"""
from __future__ import annotations

from typing import Any, Mapping

from torch import nn

from ..registry import Registry
from .base import Host, HostError, InjectionError
from .hf_llava import HFLlava
from .qwen2_5_vl import Qwen2_5_VL
from .upstream import UpstreamLlava

HOSTS: Registry[Host] = Registry("host")
HOSTS.add("hf-llava", HFLlava())
HOSTS.add("qwen2_5_vl", Qwen2_5_VL(), aliases=("qwen2.5-vl", "qwen"))
HOSTS.add("llava", UpstreamLlava(), aliases=("upstream",))
#: the host of a checkpoint written before hosts were recorded
DEFAULT_HOST = "llava"
_ORDER = ("hf_llava", "qwen2_5_vl", "llava")  # specific hosts first; upstream LLaVA claims every other model


def get_host(name: str) -> Host:
    return HOSTS.get(name)


def host_of(model: nn.Module) -> Host:
    for name in _ORDER:
        if name in HOSTS and HOSTS.get(name).matches(model):
            return HOSTS.get(name)
    raise InjectionError(f"no host adapter recognises {type(model).__name__}")


def is_upstream(name: str) -> bool:
    """Whether ``--host name`` is upstream LLaVA (``python -m llava_dymoe.train``); unknown names raise KeyError."""
    return HOSTS.get(name).name == DEFAULT_HOST


def checkpoint_host(block: Mapping[str, Any]) -> str:
    """The host recorded in a checkpoint's ``config.json["dymoe"]`` block (older checkpoints: upstream LLaVA)."""
    return str(block.get("host") or DEFAULT_HOST)


def check_host(block: Mapping[str, Any], host: str, where: str) -> None:
    saved = checkpoint_host(block)
    if HOSTS.get(saved) is not HOSTS.get(host):
        raise HostError(f"{where} was trained on host {saved!r} ({HOSTS.get(saved).model_class}) but this run's "
                        f"model is host {host!r} ({HOSTS.get(host).model_class}); banks are tied to their host's "
                        f"module names: continue that sequence on host {saved!r}, or start a new one")


__all__ = ["HOSTS", "Host", "HostError", "InjectionError", "get_host", "host_of", "is_upstream", "check_host", "checkpoint_host"]
