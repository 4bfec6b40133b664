"""The options of a continual run, their checks, and the run identity stored in ``OUT/run.json``.

Training hyper-parameters reach LLaVA's ``train()`` in three layers, later wins:
the CPU-friendly defaults of :func:`llava_dymoe.integration.llava_args.llava_train_argv`, the
suite's ``training:`` block, then ``--train-arg KEY=VALUE``.  ``KEY=`` (empty value) removes a
default flag.  ``--dymoe-arg KEY=VALUE`` becomes ``--dymoe_KEY VALUE``.

A resumed run must match the identity of the run that created the folder: same method, suite
(name and task order), base LLM, vision tower, projector, training and DyMoE arguments and eval
token budget.  The launcher, DeepSpeed config, GPU count, thread count, ``--stages`` and
``--oracle-routing`` may change between invocations (they do not change what a stage means;
``--oracle-routing`` only adds evaluations next to the stages').
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

from llava_dymoe.eval.suite import RESERVED_TRAINING, Suite

LAUNCHERS = ("python", "deepspeed")
#: identity fields compared on resume (run.json also records the others, for information)
IDENTITY_KEYS = ("method", "suite", "tasks", "base", "vision_tower", "pretrain_mm_mlp_adapter", "train_args",
                 "dymoe_args", "eval_max_new_tokens", "host")
#: the value of an identity field a run.json written before the field existed stands for
IDENTITY_DEFAULTS = {"host": "llava"}
#: --dymoe_* flags the runner sets per stage
RESERVED_DYMOE = ("method", "task_id", "prev_ckpt")


@dataclass
class RunOptions:
    """Everything ``cli run`` was given (paths as typed; :func:`check_options` normalises them)."""

    suite: str
    data_root: str
    method: str
    output_dir: str
    base: Optional[str]
    vision_tower: Optional[str]
    pretrain_mm_mlp_adapter: Optional[str] = None
    launcher: str = "python"
    deepspeed: Optional[str] = None
    num_gpus: int = 1
    train_args: Dict[str, Optional[str]] = field(default_factory=dict)
    dymoe_args: Dict[str, str] = field(default_factory=dict)
    stages: Optional[int] = None
    eval_max_new_tokens: Optional[int] = None
    threads: Optional[int] = None
    plot: bool = True
    oracle_routing: bool = False  # also evaluate task i < t with stage t's checkpoint restricted to i banks
    skip_data_check: bool = False  # no data pre-flight (protocol/preflight.py) before the first stage
    task_order: Optional[str] = None  # --task-order (protocol/task_order.py): "a,b,c" or "random:SEED"
    host: str = "llava"  # docs/hosts.md: hf-llava / qwen2_5_vl train with llava_dymoe.train_hf, answer with eval_hf


def parse_key_values(items: Optional[Sequence[str]], flag: str, strip_prefix: str = "") -> Dict[str, Optional[str]]:
    """``["lr=1e-3", "max_steps="]`` -> ``{"lr": "1e-3", "max_steps": None}`` (an empty value unsets)."""
    out: Dict[str, Optional[str]] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        key = key.strip().lstrip("-")
        if strip_prefix and key.startswith(strip_prefix):
            key = key[len(strip_prefix):]
        if not sep or not key.isidentifier():
            raise ValueError(f"{flag} {item!r}: expected KEY=VALUE with a flag name as KEY, e.g. "
                             f"{flag} {'max_steps=3' if flag == '--train-arg' else 'experts_per_task=2'}")
        out[key] = value.strip() or None
    return out


def _flag_value(value: Any) -> Optional[str]:
    if value is None or isinstance(value, str):
        return value
    return ("True" if value else "False") if isinstance(value, bool) else str(value)


def training_overrides(suite: Suite, opts: RunOptions) -> Dict[str, Optional[str]]:
    """Suite ``training:`` block, then ``--train-arg``; values as they appear on the command line."""
    merged = {k: _flag_value(v) for k, v in suite.training.items()}
    merged.update(opts.train_args)
    return merged


def _model_path(value: Optional[str], flag: str, what: str) -> str:
    """An existing local path (made absolute) or a Hugging Face hub id like ``org/name``."""
    if not value:
        raise ValueError(f"{flag} is required: {what}")
    path = os.path.expanduser(value)
    if os.path.exists(path):
        return os.path.abspath(path)
    looks_local = os.path.isabs(path) or value.startswith((".", "~")) or value.count("/") != 1
    if looks_local:
        raise ValueError(f"{flag} {value}: no such directory ({what})")
    return value  # a hub id; resolved (and cached) by transformers in the training process


def check_options(opts: RunOptions, suite: Suite) -> RunOptions:
    """Validate ``opts`` against ``suite`` and return a copy with absolute paths and checked values."""
    from llava_dymoe.methods import get_method
    from llava_dymoe.trainer.arguments import DyMoEArguments

    get_method(opts.method)  # KeyError listing the known methods
    base = _model_path(opts.base, "--base", "the base LLM the tasks are trained on (e.g. lmsys/vicuna-7b-v1.5, "
                                            "or the llm/ folder written by `python -m llava_dymoe.tiny DIR`)")
    upstream = _check_host(opts)
    tower = _model_path(opts.vision_tower, "--vision-tower", "the CLIP vision tower (e.g. "
                        "openai/clip-vit-large-patch14-336, or the clip/ folder of the tiny LLaVA)") \
        if upstream or opts.vision_tower else None
    adapter = opts.pretrain_mm_mlp_adapter
    if adapter:
        if not os.path.isfile(adapter):
            raise ValueError(f"--pretrain-mm-mlp-adapter {adapter}: no such file (LLaVA's stage-1 mm_projector.bin)")
        adapter = os.path.abspath(adapter)
    if opts.launcher not in LAUNCHERS:
        raise ValueError(f"--launcher {opts.launcher!r}: choose one of {', '.join(LAUNCHERS)}")
    if opts.num_gpus < 1:
        raise ValueError(f"--num-gpus must be >= 1, got {opts.num_gpus}")
    if opts.launcher == "python" and opts.num_gpus > 1:
        raise ValueError("--num-gpus > 1 needs --launcher deepspeed (the python launcher runs one process)")
    ds = opts.deepspeed
    if opts.launcher == "deepspeed" and not ds:
        raise ValueError("--launcher deepspeed needs --deepspeed CONFIG (e.g. scripts/zero2.json)")
    if ds:
        if not os.path.isfile(ds):
            raise ValueError(f"--deepspeed {ds}: no such file (the ZeRO configs are in scripts/zero*.json)")
        ds = os.path.abspath(ds)
    for key in opts.train_args:
        if key in RESERVED_TRAINING or key.startswith("dymoe_"):
            raise ValueError(f"--train-arg {key}=...: the runner sets --{key} itself (use --base, --vision-tower, "
                             "--pretrain-mm-mlp-adapter, --deepspeed, or --dymoe-arg for --dymoe_* flags)")
    flags = {f.name[len("dymoe_"):] for f in dataclasses.fields(DyMoEArguments)}
    for key in opts.dymoe_args:
        if key in RESERVED_DYMOE:
            raise ValueError(f"--dymoe-arg {key}=...: the runner sets --dymoe_{key} for each stage "
                             "(the method comes from --method)")
        if opts.dymoe_args[key] is None:
            raise ValueError(f"--dymoe-arg {key}=: give a value (leave the flag out to keep the method's default)")
        if key not in flags:
            raise ValueError(f"--dymoe-arg {key}=...: unknown DyMoE flag; known: "
                             f"{', '.join(sorted(flags - set(RESERVED_DYMOE)))}")
    n_tasks = len(suite.tasks)
    if opts.stages is not None and not 1 <= opts.stages <= n_tasks:
        where = " in --task-order" if opts.task_order is not None else ""
        raise ValueError(f"--stages {opts.stages}: the suite {suite.name!r} has {n_tasks} task"
                         f"{'' if n_tasks == 1 else 's'}{where}; choose 1..{n_tasks}")
    if opts.eval_max_new_tokens is not None and opts.eval_max_new_tokens < 1:
        raise ValueError(f"--eval-max-new-tokens must be >= 1, got {opts.eval_max_new_tokens}")
    if opts.threads is not None and opts.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {opts.threads}")
    _check_oracle(opts)
    return dataclasses.replace(opts, base=base, vision_tower=tower, pretrain_mm_mlp_adapter=adapter, deepspeed=ds,
                               output_dir=os.path.abspath(os.path.expanduser(opts.output_dir)))


def _check_host(opts: RunOptions) -> bool:
    """Whether the run is on upstream LLaVA; an HF host (docs/hosts.md) refuses the upstream-only options."""
    from llava_dymoe.hosts import HOSTS, is_upstream

    if opts.host not in HOSTS:
        raise ValueError(f"--host {opts.host!r}: choose one of {', '.join(HOSTS.names())}")
    if is_upstream(opts.host):
        return True
    for flag, given in (("--vision-tower", opts.vision_tower), ("--pretrain-mm-mlp-adapter",
                        opts.pretrain_mm_mlp_adapter), ("--oracle-routing", opts.oracle_routing)):
        if given:
            raise ValueError(f"{flag} is upstream LLaVA's; --host {opts.host} takes the tower and projector from "
                             "the --base model folder and has no restricted evaluation")
    return False


def _check_oracle(opts: RunOptions) -> None:
    """No inherited ``DYMOE_EVAL_MAX_TASKS`` (it would restrict the normal evaluations too), and
    ``--oracle-routing`` only for methods with one bank per task."""
    from llava_dymoe.config import DyMoEConfig
    from llava_dymoe.integration.eval_loader import MAX_TASKS_ENV
    from llava_dymoe.methods import get_method

    if os.environ.get(MAX_TASKS_ENV, "").strip():
        raise ValueError(f"{MAX_TASKS_ENV}={os.environ[MAX_TASKS_ENV]} is set in this environment: every evaluation "
                         f"of the run would load only that many task banks. Unset it (`unset {MAX_TASKS_ENV}`); "
                         "for restricted evaluations next to the normal ones pass --oracle-routing.")
    if not opts.oracle_routing:
        return
    expand = opts.dymoe_args.get("expand")
    if expand is None:
        expand = get_method(opts.method).config.get("expand", DyMoEConfig().expand)
    elif isinstance(expand, str):
        expand = expand.strip().lower() not in ("false", "0", "no", "n", "f")
    if not expand:
        raise ValueError(f"--oracle-routing: method {opts.method!r} keeps one bank for the whole sequence "
                         "(expand=False), so there are no banks of earlier tasks to restrict routing to; "
                         "drop --oracle-routing or use a method that adds a bank per task (dymoe, incmoelora, ...)")


def missing_data(suite: Suite, n_stages: int) -> List[str]:
    """``"task X: field -> path"`` for every data file or folder the first ``n_stages`` stages need."""
    out = []
    for task in suite.tasks[:n_stages]:
        for fname, path, is_dir in (("train_json", task.train_json, False), ("question_file", task.question_file, False),
                                    ("reference", task.scoring_file, False), ("image_root", task.image_root, True)):
            if not (os.path.isdir(path) if is_dir else os.path.isfile(path)):
                out.append(f"task {task.name!r}: {fname} -> {path}")
    return out


def run_identity(opts: RunOptions, suite: Suite, train_args: Dict[str, Optional[str]]) -> Dict[str, Any]:
    """What ``OUT/run.json`` records (``report`` names the run after ``method``)."""
    from llava_dymoe import __version__

    from llava_dymoe.methods import get_method

    return {"method": opts.method, "recipe": get_method(opts.method).name, "suite": suite.name,
            "tasks": suite.task_names, "base": opts.base,
            "vision_tower": opts.vision_tower, "pretrain_mm_mlp_adapter": opts.pretrain_mm_mlp_adapter,
            "train_args": dict(train_args), "dymoe_args": dict(opts.dymoe_args),
            "eval_max_new_tokens": opts.eval_max_new_tokens, "suite_file": os.path.abspath(suite.source or ""),
            "data_root": suite.data_root, "launcher": opts.launcher, "deepspeed": opts.deepspeed,
            "num_gpus": opts.num_gpus, "oracle_routing": opts.oracle_routing, "llava_dymoe_version": __version__,
            "host": opts.host}


def saved_recipe(saved: Dict[str, Any]) -> Optional[str]:
    """The recipe a run folder was started with: its ``recipe`` field, or for a run.json written before that field
    existed the recipe its ``method`` named then (``methods.FORMER_ALIASES``: ``dymoe_plus`` meant ``dymoe_seqbank``
    until 2026-12-07), else today's meaning of ``method``."""
    from llava_dymoe.methods import FORMER_ALIASES, get_method

    if saved.get("recipe"):
        return saved["recipe"]
    method = saved.get("method")
    if method in FORMER_ALIASES:
        return FORMER_ALIASES[method][0]
    try:
        return get_method(method).name
    except KeyError:
        return None


def compare_identity(saved: Dict[str, Any], new: Dict[str, Any], where: str) -> None:
    """Raise ``ValueError`` naming every identity field that differs between ``saved`` and ``new`` (the recipe too:
    a method name whose meaning moved, ``dymoe_plus``, never resumes a folder of its former recipe)."""
    diffs = [f"{k}: {saved.get(k, IDENTITY_DEFAULTS.get(k))!r} in the folder, {new.get(k)!r} now"
             for k in IDENTITY_KEYS if saved.get(k, IDENTITY_DEFAULTS.get(k)) != new.get(k)]
    old = saved_recipe(saved)
    if new.get("recipe") and old != new["recipe"]:
        diffs.append(f"recipe: {old!r} in the folder, {new['recipe']!r} now (--method {new.get('method')} names "
                     f"{new['recipe']} today; a folder started as {saved.get('method')} holds {old}'s runs: keep it "
                     "as a record and start a new --output-dir)")
    if diffs:
        raise ValueError(f"{where} belongs to another run; differences:\n  " + "\n  ".join(diffs) +
                         "\nRerun with the original options to resume it, or choose a new --output-dir.")
