"""End-of-task save for a ``DyMoETrainer`` (patch T3), ZeRO-safe.

Gathering is collective under ZeRO-3, so every rank runs the state collection (with LLaVA's
``maybe_zero_3`` as ``gather``) and only the world's rank 0 writes (llava-integration.md §6.3
item 1).  Saved: every task bank, the projector (always, trained or not, so each directory is
self-contained) and any other trainable non-expert weight, in upstream key style; with
``--dymoe_log_routing True`` also ``routing_stats.json`` (hashed in the completion marker).
"""
from __future__ import annotations

import json
from typing import Callable, Dict

from torch import Tensor

from ..integration.checkpoint import write_task_checkpoint
from ..integration.inject import bank_state
from .prepare import run_args_record

#: Per-layer routing summary written into the checkpoint with ``--dymoe_log_routing True``.
ROUTING_STATS = "routing_stats.json"


def non_expert_state(model, gather: Callable) -> Dict[str, Tensor]:
    """Projector + other trainable non-expert parameters, named as ``model.named_parameters()``."""
    return {name: gather(p) for name, p in model.named_parameters()
            if "dymoe_" not in name and (p.requires_grad or "mm_projector" in name)}


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
        from .trainer import PHASES

        record["phases"] = {name: {"layer_mean": ph.layer_mean(), "by_kind": ph.layer_mean_by_kind()}
                            for name, ph in zip(PHASES, phases)}
    if getattr(trainer, "dymoe_router_init", None) is not None:
        record["router_init"] = trainer.dymoe_router_init
    return {ROUTING_STATS: json.dumps(record, indent=1, sort_keys=True)}


def save_dymoe_task(trainer, output_dir: str, gather: Callable) -> None:
    model = trainer.model
    run = trainer.dymoe
    experts = bank_state(model, gather)
    non_lora = non_expert_state(model, gather)
    if trainer.is_world_process_zero():
        write_task_checkpoint(output_dir, model_config=model.config, dymoe_cfg=run.cfg, method=run.method.name,
                              task_id=run.task_id, experts=experts, non_lora=non_lora,
                              run_args=run_args_record(trainer.args, run), prev_ckpt=run.prev_ckpt,
                              extra_files=routing_stats_file(trainer))
    if trainer.args.world_size > 1:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.barrier()
