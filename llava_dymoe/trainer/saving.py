"""End-of-task save for a ``DyMoETrainer`` (patch T3), ZeRO-safe.

Gathering is collective under ZeRO-3, so every rank runs the state collection (with LLaVA's
``maybe_zero_3`` as ``gather``) and only the world's rank 0 writes (llava-integration.md §6.3
item 1).  Saved: every task bank, the projector (always, trained or not, so each directory is
self-contained) and any other trainable non-expert weight, in upstream key style.
"""
from __future__ import annotations

from typing import Callable, Dict

from torch import Tensor

from ..integration.checkpoint import write_task_checkpoint
from ..integration.inject import bank_state
from .prepare import run_args_record


def non_expert_state(model, gather: Callable) -> Dict[str, Tensor]:
    """Projector + other trainable non-expert parameters, named as ``model.named_parameters()``."""
    return {name: gather(p) for name, p in model.named_parameters()
            if "dymoe_" not in name and (p.requires_grad or "mm_projector" in name)}


def save_dymoe_task(trainer, output_dir: str, gather: Callable) -> None:
    model = trainer.model
    run = trainer.dymoe
    experts = bank_state(model, gather)
    non_lora = non_expert_state(model, gather)
    if trainer.is_world_process_zero():
        write_task_checkpoint(output_dir, model_config=model.config, dymoe_cfg=run.cfg, method=run.method.name,
                              task_id=run.task_id, experts=experts, non_lora=non_lora,
                              run_args=run_args_record(trainer.args, run), prev_ckpt=run.prev_ckpt)
    if trainer.args.world_size > 1:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.barrier()
