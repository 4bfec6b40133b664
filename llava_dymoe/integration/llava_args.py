"""Build LLaVA-1.5 training command lines and run them as subprocesses.

The flags are those of LLaVA's ``scripts/v1_5/finetune_lora.sh`` (llava-integration.md §1.9),
with CPU-friendly values for the tiny model; every default can be overridden through
``overrides`` (``{"learning_rate": 1e-3}`` becomes ``--learning_rate 0.001``).  One task is
one process, as in CoIN and LLaVA.

``single_rank_env()`` gives the environment for an in-process DeepSpeed world of size 1
(stack.md §3: without ``MASTER_ADDR``/``RANK``/... ``--deepspeed`` makes no process group).
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from typing import Dict, Iterable, List, Mapping, Optional, Sequence

#: The upstream entry, as LLaVA's train.py would run it (train_mem.py needs flash-attn).
UPSTREAM_TRAIN = "from llava.train.train import train; train()"


def _fmt(value) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    return str(value)


def llava_train_argv(model_name_or_path: str, vision_tower: str, data_path: str, image_folder: str,
                     output_dir: str, *, lora: bool = True, max_steps: Optional[int] = 4,
                     deepspeed: Optional[str] = None, overrides: Optional[Mapping[str, object]] = None,
                     extra: Sequence[str] = ()) -> List[str]:
    """LLaVA ``train()`` arguments for a v1 (Vicuna) fine-tune on the given data."""
    args: Dict[str, object] = {
        "model_name_or_path": model_name_or_path, "version": "v1", "data_path": data_path,
        "image_folder": image_folder, "vision_tower": vision_tower,
        "mm_projector_type": "mlp2x_gelu", "mm_vision_select_layer": -2,
        "mm_use_im_start_end": False, "mm_use_im_patch_token": False, "image_aspect_ratio": "pad",
        "group_by_modality_length": True, "bf16": False, "fp16": False, "tf32": False,
        "output_dir": output_dir, "num_train_epochs": 1, "per_device_train_batch_size": 2,
        "gradient_accumulation_steps": 1, "evaluation_strategy": "no", "save_strategy": "no",
        "learning_rate": 2e-4, "weight_decay": 0.0, "warmup_ratio": 0.03,
        "lr_scheduler_type": "cosine", "logging_steps": 1, "model_max_length": 256,
        "gradient_checkpointing": True, "dataloader_num_workers": 0, "lazy_preprocess": True,
        "report_to": "none", "seed": 0,
    }
    if lora:
        args.update({"lora_enable": True, "lora_r": 8, "lora_alpha": 16})
    if max_steps is not None:
        args["max_steps"] = max_steps
    if deepspeed:
        args["deepspeed"] = deepspeed
    args.update(overrides or {})
    argv: List[str] = []
    for key, value in args.items():
        if value is None:
            continue
        argv += ["--" + key, _fmt(value)]
    return argv + list(extra)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def single_rank_env(port: Optional[int] = None) -> Dict[str, str]:
    """Environment variables for a one-process DeepSpeed/torch.distributed world (gloo on CPU)."""
    return {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port or free_port()), "RANK": "0",
            "LOCAL_RANK": "0", "WORLD_SIZE": "1"}


def run_python(code_or_module: str, argv: Iterable[str], *, module: bool = False,
               env: Optional[Mapping[str, str]] = None, cwd: Optional[str] = None,
               log_path: Optional[str] = None, timeout: Optional[float] = None, log_mode: str = "w"
               ) -> subprocess.CompletedProcess:
    """Run ``python -c CODE argv`` (or ``python -m MODULE argv``) with the current interpreter.

    Output goes to ``log_path`` when given (``log_mode`` "a" appends to it; the whole log is returned) and is
    returned otherwise.  Raises
    ``RuntimeError`` with the tail of the log when the process fails.
    """
    cmd = [sys.executable, "-m" if module else "-c", code_or_module, *argv]
    full_env = dict(os.environ)
    full_env.setdefault("PYTHONUNBUFFERED", "1")
    full_env.update(env or {})
    if log_path:
        os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
        with open(log_path, log_mode) as log:
            proc = subprocess.run(cmd, env=full_env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                  timeout=timeout, text=True)
        with open(log_path) as log:
            output = log.read()
    else:
        proc = subprocess.run(cmd, env=full_env, cwd=cwd, capture_output=True, text=True,
                              timeout=timeout)
        output = proc.stdout + proc.stderr
    proc.stdout = output
    if proc.returncode != 0:
        tail = "\n".join(output.splitlines()[-40:])
        where = f" (full log: {log_path})" if log_path else ""
        raise RuntimeError(f"command failed with exit code {proc.returncode}{where}:\n"
                           f"{' '.join(cmd[:4])} ...\n{tail}")
    return proc


#: The DyMoE training entry point (LLaVA's train() with the patches applied).
DYMOE_TRAIN_MODULE = "llava_dymoe.train"
#: The HF-native hosts' training entry (docs/hosts.md).
HF_TRAIN_MODULE = "llava_dymoe.train_hf"
#: ``llava_train_argv`` keys that only upstream LLaVA's parser has (the HF host's model folder holds the tower,
#: the projector and the chat template); ``evaluation_strategy`` is ``eval_strategy`` in transformers 5 (whose
#: default, "no", is the same), and ``warmup_ratio`` a float ``warmup_steps`` below 1 (``RENAMED_KEYS``).
UPSTREAM_ONLY_KEYS = ("version", "vision_tower", "mm_projector_type", "mm_vision_select_layer", "mm_use_im_start_end",
                      "mm_use_im_patch_token", "image_aspect_ratio", "group_by_modality_length", "lazy_preprocess",
                      "evaluation_strategy", "mm_projector_lr", "freeze_mm_mlp_adapter", "tune_mm_mlp_adapter",
                      "lora_enable", "lora_r", "lora_alpha", "bits", "tf32")
RENAMED_KEYS = {"warmup_ratio": "warmup_steps"}


def hf_train_argv(host: str, model_name_or_path: str, data_path: str, image_folder: str, output_dir: str, *,
                  deepspeed: Optional[str] = None, overrides: Optional[Mapping[str, object]] = None) -> List[str]:
    """``python -m llava_dymoe.train_hf`` arguments: the same defaults as :func:`llava_train_argv` (and the same
    overrides) without upstream LLaVA's model flags."""
    argv = llava_train_argv(model_name_or_path, "", data_path, image_folder, output_dir, lora=False, max_steps=None,
                            deepspeed=deepspeed, overrides=overrides)
    out = ["--host", host]
    for key, value in zip(argv[::2], argv[1::2]):
        if key[2:] not in UPSTREAM_ONLY_KEYS:
            out += ["--" + RENAMED_KEYS.get(key[2:], key[2:]), value]
    return out


def dymoe_flags(method: str = "dymoe", task_id: int = 1, prev_ckpt: Optional[str] = None,
                **config_values) -> List[str]:
    """``--dymoe_*`` flags: ``dymoe_flags("dymoe", 2, "ckpt/1", experts_per_task=4)``."""
    if (task_id > 1) != bool(prev_ckpt):
        raise ValueError("task 1 takes no prev_ckpt; every later task needs the previous task's directory")
    argv = ["--dymoe_method", method, "--dymoe_task_id", str(task_id)]
    if prev_ckpt:
        argv += ["--dymoe_prev_ckpt", prev_ckpt]
    for key, value in config_values.items():
        if isinstance(value, (list, tuple)):
            value = ",".join(map(str, value))
        argv += [f"--dymoe_{key}", _fmt(value)]
    return argv
