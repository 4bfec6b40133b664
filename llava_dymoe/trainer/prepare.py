"""Prepare a freshly built LLaVA model for one DyMoE task, before DeepSpeed wraps it.

Order (style.md §6.7, llava-integration.md §6.1 T2): resolve the config (method recipe + flags),
check the previous task's checkpoint, inject ``DyMoELinear`` layers, load the previous banks (and
projector) as frozen tensors, add this task's trainable bank, freeze everything else, attach the
shared ``DyMoEContext`` and the token-validity hook.  Everything happens on plain tensors, so it is
the same with and without ZeRO-3 (a ZeRO-3 model's base weights are already partitioned; DyMoE never
reads their values or shapes).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import torch
from torch import nn

from ..config import DyMoEConfig
from ..core import AuxCollector, DyMoEContext, DyMoELinear, dymoe_layers
from ..errors import ConfigError
from ..integration import checkpoint as ckpt
from ..hosts import check_host, host_of
from ..integration.inject import add_task, inject, load_bank_state, num_tasks
from ..methods import Method, get_method
from .arguments import config_overrides
from .preflight import check_sequence

log = logging.getLogger("llava_dymoe.trainer")


@dataclass
class DyMoERun:
    """What the trainer needs to know about the prepared model."""

    cfg: DyMoEConfig
    method: Method
    task_id: int
    task_key: str
    num_modules: int
    ctx: DyMoEContext
    prev_ckpt: Optional[str] = None
    trainable: Dict[str, int] = field(default_factory=dict)
    base_model: Optional[Dict[str, Any]] = None
    host: str = "llava"


def resolve_config(args: Any, prev: Optional[Dict[str, Any]]) -> DyMoEConfig:
    """Method recipe <- explicit flags; architecture checked against the previous checkpoint."""
    method = get_method(args.dymoe_method)
    cfg = method.build_config(config_overrides(args))
    if prev is not None:
        ckpt.check_compatible(prev["config"], cfg, args.dymoe_prev_ckpt)
    return cfg


def _check_sequence(args: Any, prev: Optional[Dict[str, Any]]) -> None:
    saved = None
    if prev is not None:  # tasks learned = the saved task_id (a non-expanding method keeps one bank for every task)
        saved = {"task_id": prev["dymoe"].get("task_id", prev["config"].num_tasks),
                 "method": prev["dymoe"].get("method")}
    check_sequence(args.dymoe_task_id, args.dymoe_prev_ckpt, args.dymoe_method, saved)


def prepare_model(model: nn.Module, args: Any, pretrain_adapter_given: bool = False) -> DyMoERun:
    """Turn ``model`` (LlavaLlamaForCausalLM, projector built) into this task's trainable DyMoE model."""
    if getattr(args, "lora_enable", False):
        raise ConfigError("DyMoE replaces LLaVA's LoRA: run with --lora_enable False (the default) and the "
                         "--dymoe_* flags")
    if getattr(args, "bits", 16) != 16:
        raise ConfigError(f"--bits {args.bits} (k-bit training) is not supported with DyMoE; use --bits 16")
    host = host_of(model)
    prev = ckpt.load_task_state(args.dymoe_prev_ckpt) if args.dymoe_prev_ckpt else None
    if prev is not None:
        check_host(prev["dymoe"], host.name, args.dymoe_prev_ckpt)
    _check_sequence(args, prev)
    base = _base_model(model, args)
    ckpt.assert_writable(args.output_dir, args.dymoe_prev_ckpt)
    cfg = resolve_config(args, prev)
    report = inject(model, cfg)
    if prev is not None:
        load_bank_state(model, prev["experts"])
        load_prev = args.dymoe_load_prev_projector
        if load_prev is None:
            load_prev = not pretrain_adapter_given
        if load_prev:
            host.load_non_expert(model, prev["non_lora"], args.dymoe_prev_ckpt)
            log.info("loaded the previous task's projector from %s", args.dymoe_prev_ckpt)
    if cfg.expand or prev is None:
        # the new bank's init depends only on (seed, task): plain, ZeRO-2 and ZeRO-3 runs start equal
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(getattr(args, "seed", 0)) * 1009 + args.dymoe_task_id)
            key = add_task(model)
    else:  # expand=False (LoRA, MoELoRA): the one bank of the previous task is trained again
        key = "t0"
    cfg.num_tasks = num_tasks(model)

    model.requires_grad_(False)
    for _, layer in dymoe_layers(model):
        layer.set_trainable_tasks([key])
    if args.dymoe_train_projector and not getattr(args, "freeze_mm_mlp_adapter", False):
        projector = host.projector(model)
        if projector is not None:
            projector.requires_grad_(True)

    ctx = DyMoEContext(grad_accum=max(1, int(args.gradient_accumulation_steps)), num_modules=len(report),
                       collector=AuxCollector())
    host.install_context_hooks(model, ctx)  # valid tokens, supervised tokens, KV-cache length
    args.gradient_checkpointing_kwargs = {"use_reentrant": bool(args.dymoe_use_reentrant)}
    _zero3_leaf_modules(model)

    trainable: Dict[str, int] = {"experts": 0, "other": 0}
    for name, p in model.named_parameters():
        if p.requires_grad:
            trainable["experts" if "dymoe_" in name else "other"] += p.numel()
    run = DyMoERun(cfg, get_method(args.dymoe_method), args.dymoe_task_id, key, len(report), ctx,
                   args.dymoe_prev_ckpt, trainable, base, host.name)
    log.info("DyMoE task %d (%s, host %s): %d projections x %d experts/task, bank %s; trainable: %d expert + %d other "
             "parameters", run.task_id, run.method.name, host.name, run.num_modules, cfg.experts_per_task, key,
             trainable["experts"], trainable["other"])
    return run


def _base_model(model: nn.Module, args: Any) -> Optional[Dict[str, Any]]:
    """The base LLM's fingerprint (recorded in the checkpoint); with a previous task, the same base is required
    (the pre-flight checked it already on the command line; a patched fork has no pre-flight)."""
    from ..integration.base_model import TRAIN_ALLOW_FLAG, base_fingerprint, check_same_base

    path = getattr(getattr(model, "config", None), "_name_or_path", None)
    if not path:
        return None
    if args.dymoe_prev_ckpt:
        allow = bool(getattr(args, "dymoe_allow_base_mismatch", False))
        return check_same_base(args.dymoe_prev_ckpt, path, allow=allow, what="--model_name_or_path",
                               override=f"{TRAIN_ALLOW_FLAG} True")
    return base_fingerprint(path)


def zero3_enabled() -> bool:
    """Whether the run trains under DeepSpeed ZeRO-3 (as transformers' HfDeepSpeedConfig says)."""
    try:
        from transformers.integrations import is_deepspeed_zero3_enabled
    except ImportError:  # pragma: no cover
        return False
    return bool(is_deepspeed_zero3_enabled())


def _zero3_leaf_modules(model: nn.Module) -> None:
    """Under ZeRO-3, gather a DyMoE layer's bank parameters (held in ParameterDicts that are never
    called) together with the layer itself: mark DyMoELinear as a ZeRO-3 leaf module."""
    if zero3_enabled():
        from deepspeed.utils import set_z3_leaf_modules

        set_z3_leaf_modules(model, [DyMoELinear])
        log.info("ZeRO-3: DyMoELinear registered as a leaf module")


def run_args_record(args: Any, run: DyMoERun) -> Dict[str, Any]:
    """What ``dymoe_args.json`` records: the --dymoe_* flags plus the run's key training values."""
    from .arguments import dymoe_args_dict

    record = dymoe_args_dict(args)
    for key in ("output_dir", "learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size",
                "gradient_accumulation_steps", "seed", "bf16", "fp16", "deepspeed", "mm_projector_lr"):
        record[key] = getattr(args, key, None)
    record["resolved_config"] = run.cfg.to_dict()
    record["trainable_parameters"] = dict(run.trainable)
    record["output_dir"] = os.path.abspath(args.output_dir)
    return record
