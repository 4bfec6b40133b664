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


def name_bad_images(dataset) -> None:
    """Make ``dataset`` (LLaVA's ``LazySupervisedDataset``) name the image file and the sample when an image
    fails to open or decode mid-run (upstream: ``OSError: image file is truncated``, no file named): its class
    becomes a subclass whose ``__getitem__`` turns the error into a :class:`~llava_dymoe.errors.DataError`.
    The instance keeps its data, ``lengths`` and ``modality_lengths``; other datasets are left alone."""
    import os

    from ..errors import DataError

    cls = type(dataset)
    if getattr(cls, "_dymoe_names_bad_images", False) or not hasattr(dataset, "list_data_dict"):
        return

    def __getitem__(self, i):
        try:
            return cls.__getitem__(self, i)
        except OSError as e:  # PIL's UnidentifiedImageError and truncated data are OSErrors
            sample = self.list_data_dict[i] if isinstance(i, int) else {}
            image = sample.get("image") if isinstance(sample, dict) else None
            if not image:
                raise
            path = os.path.join(getattr(self.data_args, "image_folder", "") or "", image)
            raise DataError(f"training sample {i} (id {sample.get('id')!r}): its image {path} cannot be read "
                            f"({type(e).__name__}: {e}); replace it or drop the sample. `cli check-data "
                            "--decode-images` (or --decode_images True on the training command) finds every such "
                            "image before training") from None

    dataset.__class__ = type(cls.__name__, (cls,), {"__getitem__": __getitem__, "_dymoe_names_bad_images": True,
                                                   "__module__": cls.__module__})


def make_trainer_class(original):
    from ..trainer.trainer import make_dymoe_trainer

    return make_dymoe_trainer(original, pretrain_adapter_given, name_bad_images)


def make_saver(original):
    def safe_save_model_for_hf_trainer(trainer, output_dir: str):
        from ..trainer.saving import save_dymoe_task
        from ..trainer.trainer import DyMoETrainerMixin

        if not isinstance(trainer, DyMoETrainerMixin) or trainer.dymoe is None:
            return original(trainer=trainer, output_dir=output_dir)
        from ..trainer.saving import fork_gather

        return save_dymoe_task(trainer, output_dir, gather=fork_gather(trainer))

    return safe_save_model_for_hf_trainer


def make_modality_sampler(original):
    """T4 (1.1 line): llava-torch 1.1.1's ``get_modality_length_grouped_indices`` fails with
    ``ValueError: not enough values to unpack`` when every sample has an image (or none has), as in
    each CoIN task; later LLaVA (1.2.x, and forks such as MCITlib) fall back to plain length grouping."""
    def get_modality_length_grouped_indices(lengths, batch_size, world_size, generator=None):
        if all(n > 0 for n in lengths) or all(n < 0 for n in lengths):
            get_length_grouped_indices = original.__globals__["get_length_grouped_indices"]  # its own module's
            return get_length_grouped_indices(lengths, batch_size, world_size, generator=generator)
        return original(lengths, batch_size, world_size, generator=generator)

    return get_modality_length_grouped_indices


def train_patch_set(requires: Optional[dict] = None, module: str = "llava.train.train") -> PatchSet:
    """The T1-T3 patch set (not applied; call ``.apply()`` or use it as a context manager).

    ``requires`` defaults to what ``lines.select_line("train")`` finds for the ``llava`` in use (the
    line's transformers, plus its llava-torch unless the ``llava`` in use is a fork's own files); a
    missing or changed patch point raises ``lines.UpstreamMismatch`` here, before anything is patched.
    ``module`` is the module whose ``train()`` runs (a fork's own entry module, e.g. ``llava.train.train_MOE``, or
    one outside a ``llava`` package, e.g. CoIN's ``ETrain.Train.LLaVA.train``: T4 then targets the trainer module
    that one imports, ``lines.layout_of``)."""
    from .lines import select_line

    selection = select_line("train", train_module=module)
    if requires is None:
        requires = selection.requires
    patches = [
        Patch(f"{module}:TrainingArguments", make_training_arguments_class,
              description="T1: --dymoe_* flags"),
        Patch(f"{module}:ModelArguments", make_model_arguments_class,
              description="T1b: remember --pretrain_mm_mlp_adapter"),
        Patch(f"{module}:LLaVATrainer", make_trainer_class, description="T2: DyMoETrainer"),
        Patch(f"{module}:safe_save_model_for_hf_trainer", make_saver,
              description="T3: ZeRO-safe DyMoE task checkpoint"),
    ]
    if selection.report.modality_sampler_single_ok is False:
        patches.append(Patch(f"{selection.report.roles.trainer}:get_modality_length_grouped_indices",
                             make_modality_sampler,
                             description="T4: single-modality data with --group_by_modality_length (1.1.1 bug)"))
    return PatchSet("train", patches, requires=requires)
