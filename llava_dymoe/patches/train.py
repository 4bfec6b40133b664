"""Training patches T1-T3 (llava-integration.md §6.1): LLaVA's ``train()`` runs DyMoE unchanged on disk.

All targets are globals of ``llava.train.train`` that ``train()`` looks up at call time:

* T1 ``TrainingArguments`` -> ``DyMoETrainingArguments`` (adds the ``--dymoe_*`` flags);
  T1b ``ModelArguments`` -> a subclass that records the parsed instance, so the trainer knows
  whether ``--pretrain_mm_mlp_adapter`` was passed (then the previous projector is not loaded);
* T2 ``LLaVATrainer`` -> ``DyMoETrainer(DyMoETrainerMixin, LLaVATrainer)``;
* T3 ``safe_save_model_for_hf_trainer`` -> the ZeRO-safe DyMoE saver (for a ``DyMoETrainer``; any
  other trainer goes to the original).  It never calls ``torch.cuda.synchronize`` (stack.md fix B)
  and never gathers the whole model under ZeRO-3.

Stack.md fix A (empty optimizer groups) lives in ``DyMoETrainer.create_optimizer``.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Optional

from ._base import Patch, PatchSet

log = logging.getLogger("llava_dymoe.patches")

_LAST_MODEL_ARGS: list = []


def make_training_arguments_class(original, default_method: str = "dymoe"):
    from ..trainer.arguments import make_training_arguments

    return make_training_arguments(original, default_method)


def make_model_arguments_class(original):
    def __post_init__(self):
        _LAST_MODEL_ARGS[:] = [self]
        parent = getattr(original, "__post_init__", None)
        if parent is not None:
            parent(self)

    cls = type("ModelArguments", (original,), {"__module__": __name__, "__post_init__": __post_init__,
                                               "__doc__": original.__doc__})
    return dataclasses.dataclass(cls)


def pretrain_adapter_given() -> bool:
    """Whether the last parsed ``ModelArguments`` had ``--pretrain_mm_mlp_adapter``."""
    return bool(_LAST_MODEL_ARGS and getattr(_LAST_MODEL_ARGS[0], "pretrain_mm_mlp_adapter", None))


def make_trainer_class(original):
    from ..trainer.trainer import make_dymoe_trainer

    return make_dymoe_trainer(original, pretrain_adapter_given)


def make_saver(original):
    def safe_save_model_for_hf_trainer(trainer, output_dir: str):
        from ..trainer.saving import save_dymoe_task
        from ..trainer.trainer import DyMoETrainerMixin

        if not isinstance(trainer, DyMoETrainerMixin) or trainer.dymoe is None:
            return original(trainer=trainer, output_dir=output_dir)
        from llava.train.train import maybe_zero_3

        return save_dymoe_task(trainer, output_dir, gather=lambda p: maybe_zero_3(p, ignore_status=True))

    return safe_save_model_for_hf_trainer


def train_patch_set(requires: Optional[dict] = None) -> PatchSet:
    """The T1-T3 patch set (not applied; call ``.apply()`` or use it as a context manager)."""
    patches = [
        Patch("llava.train.train:TrainingArguments", make_training_arguments_class,
              description="T1: --dymoe_* flags"),
        Patch("llava.train.train:ModelArguments", make_model_arguments_class,
              description="T1b: remember --pretrain_mm_mlp_adapter"),
        Patch("llava.train.train:LLaVATrainer", make_trainer_class, description="T2: DyMoETrainer"),
        Patch("llava.train.train:safe_save_model_for_hf_trainer", make_saver,
              description="T3: ZeRO-safe DyMoE task checkpoint"),
    ]
    kw = {} if requires is None else {"requires": requires}
    return PatchSet("train", patches, **kw)
