"""The training pre-flight: checks that need no model, run from the command line before any loads.

``python -m llava_dymoe.train`` calls :func:`training_preflight` on its arguments before it
imports transformers or LLaVA, so a refusal comes within a second and leaves nothing behind:

1. ``--output_dir``: refused unless new, empty or an unfinished run of ours
   (:mod:`llava_dymoe.integration.output_dir`; ``--overwrite_output_dir True`` to write into a
   foreign non-empty folder anyway), not inside ``--dymoe_prev_ckpt``, and creatable and writable
   (:func:`check_writable`);
2. ``--data_path`` / ``--image_folder``: the data check (:mod:`llava_dymoe.integration.data_check`;
   images decoded when cheap, ``--decode_images`` decides) and, when the base's tokenizer is at
   hand, the length pass (:func:`check_supervision`: samples with no supervised token left are
   refused); ``--skip_data_check`` (our flag, removed before LLaVA parses the rest) turns both off;
3. the ``--dymoe_*`` flags: task id, previous task's checkpoint (finished, one task less),
   method, ``--lora_enable`` (:func:`check_sequence`; ``prepare_model`` repeats it with the loaded
   checkpoint), the method's config with the architecture flags (:func:`check_config_flags`), and
   the base model: ``--model_name_or_path`` must be the one the previous task recorded
   (:mod:`llava_dymoe.integration.base_model`; ``--dymoe_allow_base_mismatch True`` to override);
4. ``--resume_from_checkpoint PATH``: an intermediate DyMoE ``checkpoint-N`` of this task, saved with
   (or without) DeepSpeed as this run is (:func:`check_resumable`); ``--fp16 True`` without a GPU
   (:func:`check_precision_flags`);
5. ``--bits 4``/``8`` without bitsandbytes (:func:`check_quantisation_flags`);
6. the folder is locked for this process (``.dymoe_train.lock``, rank 0; a busy folder is refused) and
   claimed (``dymoe_run.json``) once all pass (:func:`claim_training_output`; the training entry claims
   it after LLaVA's parser accepted the flags, and :func:`release_output_dir` takes a claim back after a
   refusal).

Values are read from the argv as ``HfArgumentParser`` would (``--flag value`` or ``--flag=value``,
the last occurrence wins; a bool flag without a value is true).
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..errors import ConfigError
from ..integration.data_check import DECODE_WHEN_AT_MOST, check_training_data
from ..integration.output_dir import MARKER, check_output_dir, claim_output_dir, is_finished, read_marker

log = logging.getLogger("llava_dymoe.preflight")

SKIP_FLAG = "--skip_data_check"
DECODE_FLAG = "--decode_images"
_TRUE = ("true", "t", "yes", "y", "1")
_FALSE = ("false", "f", "no", "n", "0")


def argv_value(argv: Sequence[str], name: str) -> Optional[str]:
    """The value of ``--name`` in ``argv`` (last occurrence; ``""`` for a bare flag), else None."""
    flag, value = f"--{name}", None
    for i, arg in enumerate(argv):
        if arg == flag:
            nxt = argv[i + 1] if i + 1 < len(argv) else None
            value = "" if nxt is None or nxt.startswith("--") else nxt
        elif arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
    return value


def as_bool(value: Optional[str], flag: str) -> bool:
    if value is None:
        return False
    if value == "" or value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise SystemExit(f"error: {flag} {value!r}: expected True or False")


def pop_bool_flag(argv: Sequence[str], flag: str) -> Tuple[bool, List[str]]:
    """``(value, argv without the flag)`` for a bool flag LLaVA's parser does not know."""
    value, out, i = None, [], 0
    while i < len(argv):
        arg = argv[i]
        if arg == flag:
            nxt = argv[i + 1] if i + 1 < len(argv) else None
            if nxt is not None and nxt.lower() in _TRUE + _FALSE:
                value, i = nxt, i + 2
            else:
                value, i = "", i + 1
            continue
        if arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
        else:
            out.append(arg)
        i += 1
    return as_bool(value, flag), out


def check_sequence(t: Any, prev_ckpt: Optional[str], method: str, saved: Optional[Dict[str, Any]]) -> None:
    """Task id, previous checkpoint and method fit together; ``saved`` = the previous checkpoint's
    ``{"task_id", "method"}`` (None: not read)."""
    from ..methods import get_method

    if not isinstance(t, int) or t < 1:
        raise ConfigError(f"--dymoe_task_id must be a positive integer (1-based), got {t!r}")
    if t == 1 and prev_ckpt:
        raise ConfigError("--dymoe_task_id 1 starts a sequence and takes no --dymoe_prev_ckpt; for a later "
                          "task pass its number, e.g. --dymoe_task_id 2")
    if t > 1 and not prev_ckpt:
        raise ConfigError(f"--dymoe_task_id {t} continues a sequence: pass --dymoe_prev_ckpt with task "
                          f"{t - 1}'s output_dir")
    if saved is None:
        return
    saved_tasks, saved_method = int(saved["task_id"]), saved.get("method")
    if saved_tasks != t - 1:
        raise ConfigError(f"--dymoe_prev_ckpt {prev_ckpt} holds {saved_tasks} task(s), so this run "
                          f"is task {saved_tasks + 1}, not --dymoe_task_id {t}")
    recipe = get_method(method).name
    if saved_method != recipe:
        named = f" (= {recipe})" if recipe != method else ""
        raise ConfigError(f"--dymoe_prev_ckpt was trained with --dymoe_method {saved_method}, this run asks for "
                          f"{method}{named}; one sequence uses one method")


def check_sequence_flags(argv: Sequence[str]) -> None:
    """:func:`check_sequence` on the command line, with the previous checkpoint's completion marker."""
    method = argv_value(argv, "dymoe_method") or "dymoe"
    if method.strip().lower() == "none":
        return
    from ..methods import get_method

    try:
        get_method(method)
    except KeyError as e:
        raise ConfigError(f"--dymoe_method: {e.args[0] if e.args else e}") from None
    if as_bool(argv_value(argv, "lora_enable"), "--lora_enable"):
        raise ConfigError("DyMoE replaces LLaVA's LoRA: run with --lora_enable False (the default) and the "
                          "--dymoe_* flags")
    raw = argv_value(argv, "dymoe_task_id")
    try:
        t: Any = 1 if raw is None else int(raw)
    except ValueError:
        t = raw
    prev = argv_value(argv, "dymoe_prev_ckpt") or None
    saved = None
    if prev and isinstance(t, int) and t > 1:
        if not is_finished(prev):
            raise ConfigError(f"--dymoe_prev_ckpt {prev} is not a finished DyMoE task checkpoint (no {MARKER}): "
                              "the previous task did not finish, or the path is wrong. Re-run that task first")
        saved = read_marker(prev, "--dymoe_prev_ckpt")
    check_sequence(t, prev, method, saved)
    check_config_flags(argv, method)
    base = argv_value(argv, "model_name_or_path")
    if prev and base:
        from ..integration.base_model import TRAIN_ALLOW_FLAG, check_same_base

        check_same_base(prev, base, allow=as_bool(argv_value(argv, TRAIN_ALLOW_FLAG[2:]), TRAIN_ALLOW_FLAG),
                        what="--model_name_or_path", override=f"{TRAIN_ALLOW_FLAG} True")


def check_config_flags(argv: Sequence[str], method: str) -> None:
    """The method recipe with the ``--dymoe_<field>`` flags of the command line is a valid ``DyMoEConfig``.

    A value that does not convert (``--dymoe_top_k x``) is left to LLaVA's parser, which names it."""
    import dataclasses
    from types import SimpleNamespace

    from ..config import DyMoEConfig
    from ..methods import get_method
    from .arguments import config_overrides

    flags = SimpleNamespace()
    for f in dataclasses.fields(DyMoEConfig):
        raw = argv_value(argv, f"dymoe_{f.name}")
        if raw is None:
            continue
        kind = type(f.default) if f.default is not dataclasses.MISSING else str
        try:
            value = as_bool(raw, f"--dymoe_{f.name}") if kind is bool else kind(raw)
        except (TypeError, ValueError, SystemExit):
            return
        setattr(flags, f"dymoe_{f.name}", value)
    try:
        get_method(method).build_config(config_overrides(flags))
    except ValueError as e:
        raise ConfigError(f"--dymoe_* flags (method {method}): {e}") from None


#: What a ``checkpoint-N`` of ``--save_strategy steps`` holds besides HF's files (``checkpoint.CONFIG``,
#: ``EXPERTS``, ``NON_LORA``: a test keeps them equal; repeated so that the pre-flight imports no torch).
RESUME_FILES = ("config.json", "dymoe_experts.safetensors", "non_lora_trainables.bin")


def check_resumable(path: str, deepspeed: bool, task_id: Optional[int] = None,
                    flag: str = "--resume_from_checkpoint") -> None:
    """``path`` is a DyMoE ``checkpoint-N`` (of task ``task_id`` when given) that a run with or without
    DeepSpeed can resume from; raises :class:`ConfigError` (naming ``flag``, or the checkpoint alone when the
    run found it by itself: ``flag=""``)."""
    import glob

    flag = flag or "checkpoint"

    if not os.path.isdir(path):
        raise ConfigError(f"{flag} {path}: no such folder")
    if not all(os.path.isfile(os.path.join(path, name)) for name in RESUME_FILES):
        raise ConfigError(f"{flag} {path} is not an intermediate DyMoE checkpoint (a checkpoint-N "
                          f"folder with {', '.join(RESUME_FILES)}, written with --save_strategy steps)")
    if task_id is not None:
        try:
            with open(os.path.join(path, RESUME_FILES[0])) as f:
                saved = (json.load(f).get("dymoe") or {}).get("task_id")
        except (OSError, ValueError, AttributeError):
            saved = None
        if saved != task_id:
            raise ConfigError(f"{flag} {path} was saved by task {saved}, this run is task "
                              f"{task_id} (--dymoe_task_id); resume a task only from its own checkpoint-N")
    saved_with_deepspeed = bool(glob.glob(os.path.join(path, "global_step*")))
    if deepspeed and not saved_with_deepspeed:
        raise ConfigError(f"{flag} {path} was saved without DeepSpeed (no global_step*): resume "
                          "it without --deepspeed")
    if not deepspeed and not os.path.isfile(os.path.join(path, "optimizer.pt")):
        raise ConfigError(f"{flag} {path} has no optimizer.pt"
                          + (" (it was saved under DeepSpeed): resume it with the same --deepspeed config"
                             if saved_with_deepspeed else ": its save did not finish; resume from an earlier "
                                                          "checkpoint-N"))


def check_resume_flag(argv: Sequence[str]) -> None:
    """:func:`check_resumable` on ``--resume_from_checkpoint PATH`` (True/False are left to the trainer)."""
    path = argv_value(argv, "resume_from_checkpoint")
    if not path or path.lower() in _TRUE + _FALSE:
        return
    method = (argv_value(argv, "dymoe_method") or "dymoe").strip().lower()
    raw = argv_value(argv, "dymoe_task_id")
    task = int(raw) if raw and raw.isdigit() else (1 if raw is None else None)
    check_resumable(path, deepspeed=bool(argv_value(argv, "deepspeed")),
                    task_id=None if method == "none" else task)


def half_precision_device() -> Optional[str]:
    """A device that fp16 mixed precision can train on (``cuda``, ``npu``, ``xpu``), else None.  Imports torch:
    called only for a command line that asks for fp16."""
    import torch

    if torch.cuda.is_available():
        return "cuda"
    for name in ("npu", "xpu"):
        backend = getattr(torch, name, None)
        if backend is not None and getattr(backend, "is_available", lambda: False)():
            return name
    return None


def check_precision_flags(argv: Sequence[str]) -> None:
    """``--fp16 True`` (or ``--fp16_full_eval``) on a machine without a GPU: refused with the fix.

    transformers' ``TrainingArguments`` refuses fp16 mixed precision unless the device is CUDA, NPU or XPU
    (with or without ``--deepspeed``), and DeepSpeed's CPU accelerator refuses fp16 on CPUs whose oneDNN has no
    fp16 kernels ("Type fp16 is not supported on your device."), so no fp16 run, hence no fp16 loss scaling,
    can start on a CPU; bf16 can (docs/mixed-precision.md)."""
    for flag in ("fp16", "fp16_full_eval"):
        if as_bool(argv_value(argv, flag), f"--{flag}") and half_precision_device() is None:
            raise ConfigError(f"--{flag} True needs a GPU (fp16 mixed precision and DeepSpeed's fp16 loss scaling "
                              "run on CUDA, NPU or XPU devices only) and none is visible: on CPU train with "
                              f"--bf16 True (the routing stays fp32) or in fp32 (--{flag} False)")


def check_quantisation_flags(argv: Sequence[str]) -> None:
    """``--bits 4`` / ``--bits 8`` load the base model through bitsandbytes: refused before the model loads when
    it is not installed (upstream fails with ``PackageNotFoundError`` after loading)."""
    import importlib.util

    bits = argv_value(argv, "bits")
    if bits in ("4", "8") and importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError(f"--bits {bits} loads the base model quantised with bitsandbytes, which is not installed: "
                          "pip install bitsandbytes (it needs a CUDA GPU), or drop --bits (16, the default)")


def check_writable(output_dir: str, flag: str = "--output_dir") -> None:
    """``output_dir`` (given as ``flag``) can be created (no file on its path) and written: refused naming the
    culprit."""
    from ..errors import OutputDirError

    path = os.path.abspath(output_dir)
    probe = path
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        raise OutputDirError(f"{flag} {output_dir} cannot be created: {probe} is a file, not a folder; "
                             f"choose another {flag}")
    if not os.access(probe, os.W_OK | os.X_OK):
        what = "is not writable" if probe == path else f"cannot be created: {probe} is not writable"
        raise OutputDirError(f"{flag} {output_dir} {what} (permission denied); choose a folder you can "
                             "write, or fix its permissions")


def check_not_inside_previous(output_dir: str, prev_ckpt: Optional[str]) -> None:
    """Task N+1 never writes inside task N's folder (a finished checkpoint is read-only)."""
    from ..errors import OutputDirError

    if not prev_ckpt or not os.path.isdir(prev_ckpt):
        return
    prev, out = os.path.realpath(prev_ckpt), os.path.realpath(output_dir)
    if out != prev and out.startswith(prev.rstrip(os.sep) + os.sep):
        raise OutputDirError(f"--output_dir {output_dir} is inside --dymoe_prev_ckpt {prev_ckpt}: the previous "
                             "task's folder is read-only (its files are hashed); give this task a folder of its "
                             "own, e.g. next to it")


def check_supervision(data_path: str, argv: Sequence[str], skip_hint: str = SKIP_FLAG) -> None:
    """The length pass of the data check, when the tokenizer of ``--model_name_or_path`` is at hand (a local
    folder, or a hub id in the cache): refused when a sample keeps no supervised token at
    ``--model_max_length`` (upstream trains on it with loss 0); partly truncated samples are a warning."""
    from ..integration.data_check import read_records
    from ..integration.data_lengths import (check_lengths, image_tokens_of, refuse_unsupervised, tokenizer_at_hand,
                                            tokens_of)

    tokenizer = tokenizer_at_hand(argv_value(argv, "model_name_or_path"))
    if tokenizer is None:
        log.info("length pass skipped: the tokenizer of --model_name_or_path is not on this machine yet "
                 "(`cli check-data --tokenizer` runs it)")
        return
    raw = argv_value(argv, "model_max_length")
    max_len = int(raw) if raw and raw.isdigit() else LLAVA_MODEL_MAX_LENGTH
    records, _ = read_records(data_path)
    if records is None:
        return
    problems = check_lengths(records, data_path, tokenizer, max_len,
                             image_tokens_of(argv_value(argv, "vision_tower")), local_only=True)
    cut = refuse_unsupervised(problems, len(records), max_len, data_path, skip_hint)
    if cut:
        log.warning("%d of %d samples are longer than --model_max_length %d (the longest: about %d tokens); "
                    "upstream truncates them and their answers lose their end", len(cut), len(records), max_len,
                    max(map(tokens_of, cut)))


#: ``llava.train.train.TrainingArguments.model_max_length``'s default.
LLAVA_MODEL_MAX_LENGTH = 512

#: ``--output_dir`` -> (this process created it, the files of ours it held before): taken back on a refusal.
_CLAIMED: Dict[str, Tuple[bool, Tuple[str, ...]]] = {}


def training_preflight(argv: Sequence[str], claim: bool = True) -> List[str]:
    """Run the checks on a training command line; returns the argv for LLaVA (our flag removed).
    ``claim=False``: the folder is left alone; :func:`claim_training_output` claims it later.

    Raises :class:`~llava_dymoe.errors.OutputDirError` or :class:`~llava_dymoe.errors.DataError`."""
    skip_data, rest = pop_bool_flag(argv, SKIP_FLAG)
    decode_given = any(a == DECODE_FLAG or a.startswith(DECODE_FLAG + "=") for a in rest)
    decode, rest = pop_bool_flag(rest, DECODE_FLAG)
    output_dir = argv_value(rest, "output_dir") or None
    if output_dir:
        prev = argv_value(rest, "dymoe_prev_ckpt") or None
        state = check_output_dir(output_dir, overwrite=as_bool(argv_value(rest, "overwrite_output_dir"),
                                                               "--overwrite_output_dir"), prev_ckpt=prev)
        check_not_inside_previous(output_dir, prev)
        check_writable(output_dir)
        if state == "overwrite":
            log.warning("--overwrite_output_dir True: writing into the non-empty folder %s (files of the same "
                        "name are replaced)", output_dir)
    check_sequence_flags(rest)
    check_resume_flag(rest)
    check_precision_flags(rest)
    check_quantisation_flags(rest)
    from ..integration.process_hygiene import is_rank_zero

    data_path = argv_value(rest, "data_path") or None
    # rank 0 checks for the whole world (its refusal ends the launcher's ranks); N ranks re-reading every
    # image of a CoIN-sized set would only repeat the same work and print the same report N times
    if data_path and not skip_data and is_rank_zero():
        report = check_training_data(data_path, argv_value(rest, "image_folder") or None,
                                     decode_images=decode if decode_given else None)
        report.raise_if_failed(SKIP_FLAG)
        if not decode_given and report.images > DECODE_WHEN_AT_MOST:
            log.info("%d images: verified, not decoded (truncated JPEG data passes); %s True decodes them all",
                     report.images, DECODE_FLAG)
        log.info("%s", report.summary())
        if report.warnings:
            log.warning("%s", report.format())
        check_supervision(data_path, rest)
    elif data_path and skip_data:
        log.info("data check skipped (%s)", SKIP_FLAG)
    if output_dir and claim:
        claim_training_output(output_dir, argv)
    return rest


def claim_training_output(output_dir: str, argv: Sequence[str]) -> None:
    """Lock ``output_dir`` for this process and claim it (creating it if needed)."""
    from ..errors import OutputDirError
    from ..integration.output_dir import CLAIM
    from ..integration.process_hygiene import TRAIN_LOCK, hold_output_lock

    before = (not os.path.exists(output_dir),
              tuple(n for n in (CLAIM, TRAIN_LOCK) if os.path.exists(os.path.join(output_dir, n))))
    try:
        hold_output_lock(output_dir)  # held until this process ends: no second training in the folder
        claim_output_dir(output_dir, list(argv))
    except OSError as e:
        raise OutputDirError(f"--output_dir {output_dir} cannot be written ({e.strerror or e}); choose a folder "
                             "you can write") from None
    _CLAIMED.setdefault(output_dir, before)


def release_output_dir(output_dir: Optional[str]) -> None:
    """After a refusal: when nothing but the claim and lock files is in ``output_dir``, take back those that
    :func:`claim_training_output` added, and the folder itself when this process created it (a refused run
    leaves nothing behind); a folder training wrote into keeps its claim."""
    from ..integration.output_dir import CLAIM
    from ..integration.process_hygiene import TRAIN_LOCK

    if not output_dir or output_dir not in _CLAIMED or not os.path.isdir(output_dir):
        return
    created, had = _CLAIMED.pop(output_dir)
    if any(e not in (CLAIM, TRAIN_LOCK) for e in os.listdir(output_dir)):
        return  # training wrote there: the claim stays, so that a rerun may use the folder
    for name in (CLAIM, TRAIN_LOCK):
        if name not in had and os.path.exists(os.path.join(output_dir, name)):
            os.remove(os.path.join(output_dir, name))
    if created and not os.listdir(output_dir):
        os.rmdir(output_dir)
