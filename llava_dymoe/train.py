"""DyMoE training entry: LLaVA's ``train()`` with the DyMoE patches applied.

    python -m llava_dymoe.train <LLaVA train args> --dymoe_method dymoe --dymoe_task_id 1 ...
    deepspeed llava_dymoe/train.py <same args> --deepspeed scripts/zero3.json
    deepspeed --module llava_dymoe.train <same args> ...

This is the analogue of LLaVA's ``llava/train/train_mem.py``: the only change to a LLaVA command
line is the script path (plus the ``--dymoe_*`` flags, and ``--lora_enable False``, the default).
``--attn_implementation flash_attention_2`` (what ``train_mem.py`` hard-codes) is passed through to
``train()``; without it transformers picks SDPA.  Absolute imports only: the DeepSpeed launcher runs
this file as a script.

Before anything heavy is imported, the pre-flight (``llava_dymoe.trainer.preflight``) checks
``--output_dir`` and the data (``--skip_data_check`` turns the data check off).  A refusal
(``llava_dymoe.errors.DyMoEError``) prints ``error: ...`` and exits with status 2, without a
traceback unless ``LLAVA_DYMOE_DEBUG=1``.
"""
import logging
import os
import sys
from typing import List, Optional, Tuple

from llava_dymoe.errors import ConfigError, DyMoEError


def split_flag(argv: List[str], flag: str, choices: str) -> Tuple[Optional[str], List[str]]:
    """Remove ``FLAG X`` / ``FLAG=X`` from argv (LLaVA's parser lacks it); the value, or None."""
    out, value, i = [], None, 0
    while i < len(argv):
        arg = argv[i]
        if arg == flag:
            if i + 1 >= len(argv):
                raise SystemExit(f"error: {flag} needs a value ({choices})")
            value, i = argv[i + 1], i + 2
            continue
        if arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
        else:
            out.append(arg)
        i += 1
    return value, out


def split_attn_implementation(argv: List[str]) -> Tuple[Optional[str], List[str]]:
    """Remove ``--attn_implementation X`` / ``--attn_implementation=X`` from argv (LLaVA's parser lacks it)."""
    attn, out = split_flag(argv, "--attn_implementation", "eager, sdpa or flash_attention_2")
    if attn is not None and attn not in ("eager", "sdpa", "flash_attention_2"):
        raise SystemExit(f"error: --attn_implementation {attn!r}: choose eager, sdpa or flash_attention_2")
    return attn, out


def seed_from_argv(argv: List[str]) -> int:
    """The ``--seed`` of the command line (HF's default 42): LLaVA's ``train()`` builds the projector
    before ``Trainer`` seeds anything, so without this a run's task-1 projector is not reproducible."""
    seed = 42
    for i, arg in enumerate(argv):
        if arg == "--seed" and i + 1 < len(argv):
            seed = int(argv[i + 1])
        elif arg.startswith("--seed="):
            seed = int(arg.split("=", 1)[1])
    return seed


#: The flags this entry takes off the command line before LLaVA's parser sees them (listed in ``--help``).
OWN_FLAGS = (
    ("--host {llava,hf-llava,qwen2_5_vl}",
     "the host (docs/hosts.md): llava (upstream LLaVA, this entry, the default); hf-llava and qwen2_5_vl train "
     "through HF Trainer in .venv-hf (`llava-dymoe train --host ...` hands them to python -m llava_dymoe.train_hf)"),
    ("--attn_implementation {eager,sdpa,flash_attention_2}",
     "attention kernel passed to LLaVA's train() (train_mem.py hard-codes flash_attention_2); default: upstream's"),
    ("--train_module MODULE",
     "the module whose train() runs: a fork's own entry module (e.g. llava.train.train_MOE; `python -m "
     "llava_dymoe.autopatch check` names the one its launch scripts run); default llava.train.train"),
    ("--skip_data_check [True|False]",
     "do not run the data pre-flight (JSON, images, sequence flags) before the model loads; default False"),
    ("--decode_images [True|False]",
     "decode every image fully in the data pre-flight (finds truncated JPEG data); default: when the data has "
     "at most 2000 distinct images, else only PIL's verify()"),
)


def own_flags_help() -> str:
    lines = ["", "flags of llava_dymoe.train itself (taken off before LLaVA's argument parser):"]
    lines += [f"  {flag}\n        {text}" for flag, text in OWN_FLAGS]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from llava_dymoe.integration.process_hygiene import die_with_parent_if_asked

    die_with_parent_if_asked()  # started by `cli run` (or a launcher under it): end with it
    argv = list(sys.argv[1:] if argv is None else argv)
    from llava_dymoe.train_hf import drop_upstream_host, wants_hf_host

    if wants_hf_host(argv):
        raise ConfigError("this command line is for an HF-native host (--host, or an HF model folder): run it as "
                          "`llava-dymoe train ...` or `python -m llava_dymoe.train_hf ...` in .venv-hf (docs/hosts.md)")
    argv = drop_upstream_host(argv)
    attn, rest = split_attn_implementation(argv)
    module, rest = split_flag(rest, "--train_module", "a module such as llava.train.train_MOE")
    module = module or "llava.train.train"
    from llava_dymoe.trainer.preflight import argv_value, claim_training_output, release_output_dir, training_preflight

    rest = training_preflight(rest, claim=False)
    sys.argv = [sys.argv[0]] + rest  # LLaVA's train() parses sys.argv itself
    from llava_dymoe.patches.lines import check_train_flags, select_line, train_call_kwargs
    from llava_dymoe.patches.train import train_patch_set

    selection = select_line("train", train_module=module)  # the upstream line, by the symbols the llava in use has
    selection.check_environment()  # the line the fork's code needs, and why, before anything is patched
    check_train_flags(selection.line, rest)
    output_dir = argv_value(rest, "output_dir") or None
    help_asked = "-h" in argv or "--help" in argv

    from transformers import set_seed

    set_seed(seed_from_argv(rest))
    from llava_dymoe.patches.vision_check import vision_check_cache

    patches = train_patch_set(requires=selection.requires, module=module).apply()
    try:
        if not help_asked:
            check_known_flags(rest, module)  # before the folder is claimed: a bad flag leaves nothing behind
            if output_dir:
                claim_training_output(output_dir, argv)
        import importlib

        train = importlib.import_module(module).train

        with vision_check_cache():  # D1: a speed-up of the dataset's image processing only
            train(**train_call_kwargs(selection.line, attn, selection.report.train_takes_attn))
    except SystemExit as e:
        if help_asked:  # LLaVA's parser printed its help and exits: add ours after it
            print(own_flags_help(), flush=True)
        elif e.code not in (0, None):
            release_output_dir(output_dir)
        raise
    except DyMoEError:  # a refusal after the model loaded: the run leaves nothing behind
        release_output_dir(output_dir)
        _close_progress_bars()  # else the trainer's bar is redrawn after the error line, at exit
        raise
    finally:
        patches.revert()
        log_peak_memory()


def _close_progress_bars() -> None:
    try:
        from tqdm import tqdm
    except ImportError:
        return
    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


def check_known_flags(argv: List[str], module: str = "llava.train.train") -> None:
    """Parse the command line with LLaVA's (patched) argument classes before anything loads: a value argparse
    refuses exits 2 here, and a flag no class knows is refused with the nearest known flag."""
    import difflib

    import importlib

    import transformers

    upstream = importlib.import_module(module)

    parser = transformers.HfArgumentParser((upstream.ModelArguments, upstream.DataArguments,
                                            upstream.TrainingArguments))
    _, unknown = parser.parse_known_args(args=argv)
    flags = [a.split("=", 1)[0] for a in unknown if a.startswith("--")]
    if flags or unknown:
        known = [o for o in parser._option_string_actions if o.startswith("--")]
        bad = flags[0] if flags else unknown[0]
        near = difflib.get_close_matches(bad, known, n=1, cutoff=0.6)
        hint = f"; did you mean {near[0]}?" if near else "; `--help` lists the flags"
        raise ConfigError(f"unknown training flag(s): {' '.join(flags or unknown)}" + hint)


def log_peak_memory() -> None:
    """One line per process at the end of training: this rank's peak resident memory (and peak CUDA memory
    allocated by torch when a GPU was used), so a multi-rank run shows every rank's footprint in its log."""
    import resource

    import torch

    rank = os.environ.get("RANK", "0")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    line = f"peak memory, rank {rank}: {peak:.0f} MiB resident"
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        line += f", {torch.cuda.max_memory_allocated() / 2 ** 20:.0f} MiB CUDA allocated"
    logging.getLogger("llava_dymoe.train").info(line)


if __name__ == "__main__":
    from llava_dymoe.errors import run_refusing

    run_refusing(main)
