"""The command lines of one stage (train, eval batch) and how they run: subprocess, log file, commands.log.

Training is one process per task, as in LLaVA and CoIN, through the integration entry
``llava_dymoe.train`` (:data:`~llava_dymoe.integration.llava_args.DYMOE_TRAIN_MODULE`):

* ``--launcher python``: ``python -m llava_dymoe.train ARGS`` (with ``--deepspeed CFG``: a one-process
  DeepSpeed world, :func:`~llava_dymoe.integration.llava_args.single_rank_env`);
* ``--launcher deepspeed``: ``deepspeed --num_gpus N --master_port P --module llava_dymoe.train ARGS
  --deepspeed CFG``.

Evaluation of the tasks seen so far runs in one process (:mod:`llava_dymoe.protocol.eval_batch`);
``commands.log`` also records, per task, the equivalent stand-alone ``python -m llava_dymoe.eval ...``
command, which reproduces that task's answers on its own.

Threads: on a machine without CUDA and without ``OMP_NUM_THREADS`` in the environment, every
subprocess gets ``OMP_NUM_THREADS=1`` (``--threads`` overrides).  Measured with the tiny LLaVA on
2 cores: 1 thread is as fast as 2 for one process and two concurrent trainings took 4.3 s with 1
thread each against 64 s with 2 (OpenMP spin-waiting on oversubscribed cores).
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from llava_dymoe.eval.suite import TaskSpec
from llava_dymoe.integration import process_hygiene as hygiene
from llava_dymoe.integration.eval_loader import MAX_TASKS_ENV
from llava_dymoe.integration.selector import TASK_ID_ENV
from llava_dymoe.patches.lines import generator_takes_max_new_tokens
from llava_dymoe.hosts import is_upstream
from llava_dymoe.integration.llava_args import (DYMOE_TRAIN_MODULE, HF_TRAIN_MODULE, dymoe_flags, free_port,
                                                hf_train_argv, llava_train_argv, single_rank_env)
from llava_dymoe.protocol.options import RunOptions

EVAL_SHIM_MODULE = "llava_dymoe.eval"
#: the HF-native hosts' generator (docs/hosts.md), run once per evaluated task
EVAL_HF_MODULE = "llava_dymoe.eval_hf"
EVAL_BATCH_MODULE = "llava_dymoe.protocol.eval_batch"
#: flags LLaVA's own eval scripts pass to a generator (scripts/v1_5/eval/sqa.sh)
EXTRA_EVAL_FLAGS: Dict[str, Tuple[str, ...]] = {"llava.eval.model_vqa_science": ("--single-pred-prompt",)}


class StageFailed(RuntimeError):
    """A train or eval subprocess exited with an error; the message names its log file."""


def thread_env(threads: Optional[int], cuda: bool) -> Dict[str, str]:
    """``OMP_NUM_THREADS`` for the subprocesses (see the module docstring); empty = inherit."""
    if threads:
        return {"OMP_NUM_THREADS": str(threads)}
    if cuda or "OMP_NUM_THREADS" in os.environ:
        return {}
    return {"OMP_NUM_THREADS": "1"}


def _deepspeed_executable() -> str:
    found = shutil.which("deepspeed", path=os.path.dirname(sys.executable)) or shutil.which("deepspeed")
    if not found:
        raise FileNotFoundError("--launcher deepspeed: no `deepspeed` executable next to this Python or on PATH; "
                                "install deepspeed (pip install deepspeed) or use --launcher python")
    return found


def train_command(opts: RunOptions, task: TaskSpec, t: int, output_dir: str, prev_ckpt: Optional[str],
                  train_args: Mapping[str, Optional[str]]) -> Tuple[List[str], Dict[str, str]]:
    """``(command, extra environment)`` training stage ``t`` (1-based) on ``task`` into ``output_dir``.

    Stage 1 gets ``--pretrain_mm_mlp_adapter`` when given; later stages load the previous
    stage's projector from ``prev_ckpt`` (the DyMoE entry's default).
    """
    module = DYMOE_TRAIN_MODULE
    if is_upstream(opts.host):
        argv = llava_train_argv(opts.base, opts.vision_tower, task.train_json, task.image_root, output_dir,
                                lora=False, max_steps=None, deepspeed=opts.deepspeed, overrides=train_args)
        if t == 1 and opts.pretrain_mm_mlp_adapter:
            argv += ["--pretrain_mm_mlp_adapter", opts.pretrain_mm_mlp_adapter]
    else:  # an HF-native host (docs/hosts.md)
        module = HF_TRAIN_MODULE
        argv = hf_train_argv(opts.host, opts.base, task.train_json, task.image_root, output_dir,
                             deepspeed=opts.deepspeed, overrides=train_args)
    argv += dymoe_flags(opts.method, t, prev_ckpt, **opts.dymoe_args)
    if module == DYMOE_TRAIN_MODULE:
        argv += ["--skip_data_check", "True"]  # run_sequence checked the data of every stage before the first
    if opts.launcher == "deepspeed":
        return [_deepspeed_executable(), "--num_gpus", str(opts.num_gpus), "--master_port", str(free_port()),
                "--module", module, *argv], {}
    env = single_rank_env() if opts.deepspeed else {}
    return [sys.executable, "-m", module, *argv], env


def told_the_task(opts: RunOptions) -> bool:
    """Whether the run's method is told the true task at evaluation (``task_selector="oracle"``: ``oracle_bank``,
    an upper bound)."""
    from llava_dymoe.methods import get_method

    return str(opts.dymoe_args.get("task_selector") or get_method(opts.method).config.get("task_selector")) \
        == "oracle"


def eval_job(opts: RunOptions, task: TaskSpec, checkpoint: str, answers_file: str,
             max_tasks: Optional[int] = None, task_number: Optional[int] = None) -> Dict[str, object]:
    """One upstream eval of ``task`` with ``checkpoint``: ``{"task", "module", "argv", "env"}`` for eval_batch.

    ``max_tasks=k`` (``--oracle-routing``) sets ``DYMOE_EVAL_MAX_TASKS=k`` for that job: the checkpoint is
    loaded with its first ``k`` task banks only (``llava_dymoe.integration.eval_loader``).  ``task_number``: the
    task's 1-based place in the suite, passed as ``DYMOE_EVAL_TASK_ID`` to a method told the true task
    (``told_the_task``: ``oracle_bank``).
    """
    argv = ["--model-path", checkpoint, "--model-base", opts.base, "--question-file", task.question_file,
            "--image-folder", task.image_root, "--answers-file", answers_file,
            "--temperature", repr(task.temperature), "--conv-mode", task.conv_mode]
    if generator_takes_max_new_tokens(task.generator):  # 1.2's model_vqa_loader; 1.1.1's hard-codes 128
        argv += ["--max_new_tokens", str(opts.eval_max_new_tokens or task.max_new_tokens)]
    argv += list(EXTRA_EVAL_FLAGS.get(task.generator, ()))
    env = {} if max_tasks is None else {MAX_TASKS_ENV: str(int(max_tasks))}
    if task_number is not None and told_the_task(opts):
        env[TASK_ID_ENV] = str(int(task_number))
    return {"task": task.name, "module": task.generator, "argv": argv, "env": env}


def hf_eval_command(opts: RunOptions, task: TaskSpec, checkpoint: str, answers_file: str) -> List[str]:
    """``python -m llava_dymoe.eval_hf ...`` answering ``task``'s questions with ``checkpoint`` (HF hosts)."""
    return [sys.executable, "-m", EVAL_HF_MODULE, "--model-path", checkpoint, "--model-base", opts.base,
            "--question-file", task.question_file, "--image-folder", task.image_root, "--answers-file", answers_file,
            "--max-new-tokens", str(opts.eval_max_new_tokens or task.max_new_tokens)]


def shim_command(job: Mapping[str, object]) -> List[str]:
    """The stand-alone command equivalent to one eval_batch job."""
    return [sys.executable, "-m", EVAL_SHIM_MODULE, str(job["module"]), *job["argv"]]


def batch_command(jobs_file: str) -> List[str]:
    return [sys.executable, "-m", EVAL_BATCH_MODULE, jobs_file]


def format_command(cmd: Sequence[str], env: Mapping[str, str]) -> str:
    """A shell line: ``VAR=value ... cmd args`` (only the variables the runner sets)."""
    return " ".join([f"{k}={shlex.quote(v)}" for k, v in sorted(env.items())] + [shlex.join(cmd)])


def log_command(commands_log: str, label: str, cmd: Sequence[str], env: Mapping[str, str]) -> None:
    with open(commands_log, "a", encoding="utf-8") as f:
        f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} [{label}] {format_command(cmd, env)}\n")


def run_logged(cmd: Sequence[str], *, env: Mapping[str, str], log_path: str, commands_log: str,
               label: str) -> float:
    """Run ``cmd`` with ``env`` added, output appended to ``log_path``; returns its wall time in seconds.

    The command goes to ``commands_log`` first.  A non-zero exit raises :class:`StageFailed`
    with the tail of the log.  The child leads its own process group and dies with the runner, even a
    SIGKILLed one (:mod:`~llava_dymoe.integration.process_hygiene`); whatever it leaves in its group
    (launcher ranks, DataLoader workers) is killed when it ends or when the runner is interrupted.
    """
    log_command(commands_log, label, cmd, env)
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false",
                hygiene.DIE_WITH_PARENT_ENV: "1", **env}
    start = time.perf_counter()
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"===== {time.strftime('%Y-%m-%d %H:%M:%S')} {label}\n$ {format_command(cmd, env)}\n")
        log.flush()
        proc = subprocess.Popen(list(cmd), env=full_env, stdout=log, stderr=subprocess.STDOUT,
                                preexec_fn=hygiene.child_setup if os.name == "posix" else None)
        try:
            rc = proc.wait()
        except BaseException:
            hygiene.kill_group(proc.pid)
            proc.kill()
            proc.wait()
            raise
        finally:
            hygiene.kill_group(proc.pid)
    seconds = time.perf_counter() - start
    if rc != 0:
        with open(log_path, encoding="utf-8", errors="replace") as f:
            tail = "\n".join(f.read().splitlines()[-30:])
        raise StageFailed(f"{label} failed (exit code {rc}) after {seconds:.1f} s; full log: {log_path}\n"
                          f"--- last lines ---\n{tail}")
    return seconds
