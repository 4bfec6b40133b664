"""Load a DyMoE task checkpoint onto an HF-native host: the base model, the checkpoint's projector, every bank.

``load_hf_checkpoint(model_path, model_base)`` is the HF-host counterpart of the upstream eval loader
(``integration/eval_loader.py``): the base model from ``model_base`` (the training's ``--model_name_or_path``),
the non-expert weights of ``non_lora_trainables.bin``, ``DyMoELinear`` injected with the saved config and every
task bank loaded (strict), frozen, in eval mode, the routing context hooks installed.  A checkpoint of another
host is refused in one line (``hosts.check_host``).
"""
from __future__ import annotations

from typing import Any, Tuple

from ..core import DyMoEContext
from ..integration.checkpoint import CheckpointError, load_task_state
from ..integration.inject import inject, load_bank_state, num_tasks
from . import check_host, host_of


def restore_task_banks(model, state, model_path: str) -> int:
    """Inject ``DyMoELinear`` with the checkpoint's config, load every bank (strict, in the model's dtype) and
    freeze the model; returns the bank count (the upstream eval loader and the HF loader share it)."""
    inject(model, state["config"])
    dtype = next(model.parameters()).dtype
    n = load_bank_state(model, state["experts"], dtype=dtype)
    if n != state["config"].num_tasks or num_tasks(model) != n:
        raise CheckpointError(f"{model_path}: config says {state['config'].num_tasks} task banks, found {n}")
    model.requires_grad_(False)
    return n


def load_hf_checkpoint(model_path: str, model_base: str, **model_kwargs) -> Tuple[Any, Any]:
    """``(model, processor)``; ``model_kwargs`` go to ``from_pretrained`` (e.g. ``attn_implementation``)."""
    from . import checkpoint_host, get_host

    state = load_task_state(model_path)
    host = get_host(checkpoint_host(state["dymoe"]))
    if not hasattr(host, "class_name"):
        check_host(state["dymoe"], "hf-llava", model_path)  # an upstream checkpoint: refused in one line
    model = host.load_model(model_base, **model_kwargs)
    check_host(state["dymoe"], host_of(model).name, model_path)
    host.load_non_expert(model, state["non_lora"], model_path)
    restore_task_banks(model, state, model_path)
    model.eval()
    host.install_context_hooks(model, DyMoEContext())
    return model, host.load_processor(model_base)
