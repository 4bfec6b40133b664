"""End-of-task save for a ``DyMoETrainer`` (patch T3), ZeRO-safe.

Gathering is collective under ZeRO-3, so every rank runs the state collection (with LLaVA's
``maybe_zero_3`` as ``gather``) and only the world's rank 0 writes (llava-integration.md §6.3
item 1).  Saved: every task bank, the projector (always, trained or not, so each directory is
self-contained) and any other trainable non-expert weight, in upstream key style; with
``--dymoe_log_routing True`` also ``routing_stats.json`` (hashed in the completion marker).

Intermediate ``checkpoint-N`` folders (``--save_strategy steps``, ``DyMoETrainer.save_model``) hold
the same files without the completion marker, next to HF's optimizer, scheduler, RNG and trainer
state (under DeepSpeed: its ``global_stepN`` without the frozen weights).  A run without DeepSpeed
resumes from them with :func:`load_intermediate_state`; under DeepSpeed its own state is loaded.
"""
from __future__ import annotations

import json
import os
from typing import Callable, Dict, Optional

import torch
from torch import Tensor

from ..errors import DataError
from ..integration.checkpoint import EXPERTS, NON_LORA, CheckpointError, read_config_json, write_task_checkpoint
from ..hosts import get_host, host_of
from ..integration.inject import bank_state
from .prepare import run_args_record

#: Per-layer routing summary written into the checkpoint with ``--dymoe_log_routing True``.
ROUTING_STATS = "routing_stats.json"
#: Thirds of a task's steps over which ``routing_stats.json`` also sums the routing statistics.
PHASES = ("start", "middle", "end")


def non_expert_state(model, gather: Callable) -> Dict[str, Tensor]:
    """Projector + other trainable non-expert parameters, named as ``model.named_parameters()`` (the host
    adapter names the projector)."""
    return dict(host_of(model).non_expert_state(model, gather))


def routing_stats_file(trainer) -> Dict[str, str]:
    """``{"routing_stats.json": ...}`` with the task's per-layer routing summary (``--dymoe_log_routing``),
    else ``{}``."""
    stats = getattr(trainer, "_dymoe_task_stats", None)
    if stats is None:
        return {}
    record = {"task_id": trainer.dymoe.task_id, "tau": trainer.dymoe.cfg.tau,
              "note": "sums over the valid tokens of rank 0's training batches; old group = banks t0..t(k-1), "
                      "new group = this task's bank; c_old/c_new/D_rel on the raw router logits, bank "
                      "masses on the TAG-masked gate (method.md §2-§3)",
              "layer_mean": stats.layer_mean(), "by_kind": stats.layer_mean_by_kind(), "layers": stats.summary()}
    phases = getattr(trainer, "_dymoe_phase_stats", None) or []
    if phases:  # the same statistics over the first, second and last third of the task's steps
        record["phases"] = {name: {"layer_mean": ph.layer_mean(), "by_kind": ph.layer_mean_by_kind()}
                            for name, ph in zip(PHASES, phases)}
    if getattr(trainer, "dymoe_router_init", None) is not None:
        record["router_init"] = trainer.dymoe_router_init
    if getattr(trainer, "dymoe_router_refresh", None) is not None:
        record["router_refresh"] = trainer.dymoe_router_refresh
    return {ROUTING_STATS: json.dumps(record, indent=1, sort_keys=True)}


def anchors_file(trainer) -> Dict[str, bytes]:
    """``{"dymoe_anchors.safetensors": ...}`` with every task's selector anchors (``task_selector`` "hide", "prism"
    or "shortlist"), else ``{}``."""
    anchors = getattr(trainer, "dymoe_anchors", None)
    if anchors is None:
        return {}
    from ..integration.selector import ANCHORS, anchors_bytes

    return {ANCHORS: anchors_bytes(anchors)}


def llava_gather() -> Callable:
    """LLaVA's ZeRO-3-aware parameter gather (a collective under ZeRO-3: call on every rank)."""
    return get_host("llava").gather()


def fork_gather(trainer) -> Callable:
    """The ``maybe_zero_3`` of the module that defines the trainer's base class (a fork's own LLaVA copy, e.g.
    CoIN's ``ETrain``, which has no ``llava`` package), else LLaVA's."""
    import sys

    for cls in type(trainer).__mro__:
        fn = getattr(sys.modules.get(cls.__module__), "maybe_zero_3", None)
        if callable(fn):
            return lambda p: fn(p, ignore_status=True)
    return llava_gather()


def check_supervised(trainer) -> None:
    """A task none of whose training steps had a supervised token learned nothing: it is not marked finished
    (no ``dymoe_task.json``), and the run is refused.  Counted over every rank; steps before a resume are
    not counted, so a run that resumed at its last step is not judged."""
    steps, tokens = int(getattr(trainer, "dymoe_steps", 0)), int(getattr(trainer, "dymoe_supervised", 0))
    if trainer.args.world_size > 1:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            both = torch.tensor([steps, tokens], dtype=torch.long, device=trainer.args.device)
            dist.all_reduce(both)
            steps, tokens = (int(v) for v in both.tolist())
    if steps and not tokens:
        raise DataError(f"none of the {steps} training step(s) had a supervised token (every answer was cut off "
                        f"at --model_max_length {getattr(trainer.args, 'model_max_length', '?')}, loss 0): the task "
                        "learned nothing and is not marked finished. Raise --model_max_length or shorten the "
                        "samples (`cli check-data --tokenizer` lists them), then train it again")


def save_dymoe_task(trainer, output_dir: str, gather: Callable, finished: bool = True) -> None:
    """Write the task checkpoint (``finished=False``: the same files without the completion marker,
    for an intermediate ``checkpoint-N``).  Every rank calls it; the world's rank 0 writes."""
    if finished:
        check_supervised(trainer)
    model = trainer.model
    run = trainer.dymoe
    experts = bank_state(model, gather)
    non_lora = non_expert_state(model, gather)
    if trainer.is_world_process_zero():
        write_task_checkpoint(output_dir, model_config=model.config, dymoe_cfg=run.cfg, method=run.method.name,
                              task_id=run.task_id, experts=experts, non_lora=non_lora,
                              run_args=run_args_record(trainer.args, run), prev_ckpt=run.prev_ckpt,
                              extra_files={**routing_stats_file(trainer), **anchors_file(trainer)} if finished
                              else None, finished=finished,
                              base_model=run.base_model, host=run.host)
    if trainer.args.world_size > 1:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.barrier()


def load_intermediate_state(trainer, checkpoint: str) -> int:
    """Resume without DeepSpeed: copy the trainable weights of ``checkpoint`` (``checkpoint-N``) into the
    model, bit for bit.  Refuses a checkpoint of another task or method, or one that lacks a trainable
    weight.  Returns the number of tensors loaded."""
    from safetensors.torch import load_file

    run = trainer.dymoe
    block = read_config_json(checkpoint).get("dymoe") or {}
    if block.get("task_id") != run.task_id or block.get("method") != run.method.name:
        raise CheckpointError(f"--resume_from_checkpoint {checkpoint} was saved by task {block.get('task_id')} "
                              f"({block.get('method')}), this run is task {run.task_id} ({run.method.name}); "
                              "resume a task only from its own checkpoint-N folders")
    saved = dict(load_file(os.path.join(checkpoint, EXPERTS)))
    saved.update(torch.load(os.path.join(checkpoint, NON_LORA), map_location="cpu", weights_only=True))
    trainable = [(n, p) for n, p in trainer.model.named_parameters() if p.requires_grad]
    missing = [n for n, p in trainable if n not in saved or tuple(saved[n].shape) != tuple(p.shape)]
    if missing:
        raise CheckpointError(f"--resume_from_checkpoint {checkpoint} lacks {len(missing)} trainable weight(s) of "
                              f"this run (e.g. {missing[:3]}); it was saved by another configuration")
    with torch.no_grad():
        for name, p in trainable:
            p.copy_(saved[name].to(device=p.device, dtype=p.dtype))
    return len(trainable)



#: What resuming a ``checkpoint-N`` reads besides the DyMoE files (HF's names): the trainer state always,
#: the optimizer and scheduler when saved without DeepSpeed (DeepSpeed keeps them in ``global_stepN/``).
RESUME_STATE = "trainer_state.json"
RESUME_OPTIMIZER = ("optimizer.pt", "scheduler.pt")


def check_loadable(path: str, deepspeed: bool, task_id: Optional[int] = None, flag: str = "") -> None:
    """``path`` is a ``checkpoint-N`` this run can resume from, and every file resuming reads loads: the trainer
    state, the banks and routers, the projector and (without DeepSpeed) the optimizer and scheduler.  A cut or
    missing file raises :class:`~llava_dymoe.errors.ConfigError` naming it (``flag``: as in
    :func:`~llava_dymoe.trainer.preflight.check_resumable`)."""
    from safetensors import safe_open

    from ..errors import ConfigError
    from .preflight import check_resumable

    check_resumable(path, deepspeed=deepspeed, task_id=task_id, flag=flag)
    name = RESUME_STATE
    try:
        with open(os.path.join(path, name)) as f:
            if not isinstance(json.load(f), dict):
                raise ValueError("not a JSON object")
        name = EXPERTS
        with safe_open(os.path.join(path, name), framework="pt") as f:
            for key in f.keys():
                f.get_tensor(key)
        for name in (NON_LORA,) + (() if deepspeed else RESUME_OPTIMIZER):
            torch.load(os.path.join(path, name), map_location="cpu", weights_only=False)
    except Exception as e:  # a cut file raises many types (JSON, safetensors, zip, pickle, EOF)
        reason = f"its {name} does not load ({type(e).__name__}: {str(e)[:120]})"
        raise ConfigError(f"{flag} {path} cannot be resumed from: {reason}" if flag else reason) from None


def newest_loadable(output_dir: str, deepspeed: bool, task_id: Optional[int] = None,
                    report: Callable[[str], None] = print, remove: bool = False) -> Optional[str]:
    """The newest ``checkpoint-N`` of ``output_dir`` that :func:`check_loadable` accepts, or None.  Each newer
    one that fails is named through ``report`` (and deleted with ``remove``, for folders the caller owns)."""
    import re
    import shutil

    from ..errors import ConfigError

    steps = sorted((int(m.group(1)), m.group(0)) for m in
                   (re.fullmatch(r"checkpoint-(\d+)", n) for n in os.listdir(output_dir)) if m
                   and os.path.isdir(os.path.join(output_dir, m.group(0))))
    for _, name in reversed(steps):
        path = os.path.join(output_dir, name)
        try:
            check_loadable(path, deepspeed, task_id)
            return path
        except ConfigError as e:
            report(f"{name} cannot be resumed from ({e}): " + ("removing it" if remove else "skipping it"))
            if remove:
                shutil.rmtree(path)
    return None
