"""Hooks for LLaVA forks that prefer explicit call sites to run-time patches.

``patches/llava-torch-1.2.2.post1-dymoe.diff`` and ``patches/llava-torch-1.1.1-dymoe.diff`` (unified
diffs against the ``llava/`` sources of llava-torch 1.2.2.post1 and 1.1.1, one per supported line,
docs/upstream-lines.md) call these two functions where the patch sets would rebind
globals; both build their objects with the very same factories as ``patches/train.py`` and
``patches/eval.py``, so a patched fork and an unmodified LLaVA with run-time patches behave the same.

* ``train_hooks(ModelArguments, TrainingArguments, LLaVATrainer, safe_save_model_for_hf_trainer)``
  -> the DyMoE versions (T1, T1b, T2, T3), used inside ``llava.train.train.train()``.  In a fork
  ``--dymoe_method`` defaults to ``none`` (upstream behaviour, LoRA included); pass
  ``--dymoe_method dymoe`` (and the other ``--dymoe_*`` flags) for DyMoE;
* ``dymoe_loader(model_path)`` -> ``load_dymoe_for_eval`` for a DyMoE checkpoint, else ``None``
  (E1), used at the top of ``llava.model.builder.load_pretrained_model``.

Apply the diff of your line with ``cd site-packages && patch -p1 < .../llava-torch-<version>-dymoe.diff``
(``python -m llava_dymoe.autopatch check --llava-dir FORK`` dry-runs it first and names failing hunks).
The 1.1.1 diff also carries LLaVA's later fix of ``get_modality_length_grouped_indices`` for
single-modality data (the run-time patch set's T4).
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple


def train_hooks(model_arguments: type, training_arguments: type, trainer: type,
                saver: Callable) -> Tuple[type, type, type, Callable]:
    from .train import (make_model_arguments_class, make_saver, make_trainer_class,
                        make_training_arguments_class)

    # a fork trains as upstream LLaVA unless --dymoe_method is given
    return (make_model_arguments_class(model_arguments), make_training_arguments_class(training_arguments, "none"),
            make_trainer_class(trainer), make_saver(saver))


def dymoe_loader(model_path: str) -> Optional[Callable]:
    from ..integration.checkpoint import is_dymoe_checkpoint
    from ..integration.eval_loader import load_dymoe_for_eval

    return load_dymoe_for_eval if is_dymoe_checkpoint(model_path) else None
