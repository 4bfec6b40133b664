"""The ``llava-dymoe`` console command: one program for every entry point.

    llava-dymoe --version                  # versions of the stack, GPU and flash-attention
    llava-dymoe train <LLaVA train args>   # = python -m llava_dymoe.train ...
    llava-dymoe eval MODULE <its args>     # = python -m llava_dymoe.eval llava.eval.MODULE ...
    llava-dymoe COMMAND <options>          # = python -m llava_dymoe.cli COMMAND ... (run, score, ...)

A thin entry point (``setup.py`` declares it as ``llava-dymoe = llava_dymoe.console:main``; also
``python -m llava_dymoe.console``).  It defines no command of its own: ``train`` hands its argv to
:func:`llava_dymoe.train.main`, ``eval`` to :func:`llava_dymoe.eval.shim.main`, and every other
command to :func:`llava_dymoe.cli.main` (whose :data:`~llava_dymoe.cli.SUBCOMMANDS` are the list).
Exit statuses are theirs; a refusal (``DyMoEError``) is one ``error:`` line and status 2.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import sys
from typing import Callable, List, Optional, Sequence, Tuple

PROG = "llava-dymoe"

#: Commands this module adds in front of the cli's (name -> one-line help).
ENTRY_COMMANDS = {
    "train": "train one task: LLaVA's train() with the DyMoE patches (= python -m llava_dymoe.train); "
             "--host hf-llava|qwen2_5_vl (or an HF model folder): HF Trainer (= python -m llava_dymoe.train_hf)",
    "eval": "run an upstream llava.eval MODULE on a DyMoE checkpoint (= python -m llava_dymoe.eval)",
}

#: ``(distribution, import name)`` of the stack ``--version`` reports, in this order.
STACK = (("llava-torch", "llava"), ("transformers", "transformers"), ("torch", "torch"),
         ("deepspeed", "deepspeed"))


def commands() -> List[Tuple[str, str]]:
    """Every command with its one-line help: ``train``, ``eval``, then the cli's."""
    from llava_dymoe.cli import SUBCOMMANDS

    return list(ENTRY_COMMANDS.items()) + [(name, help_text) for name, (_, help_text) in SUBCOMMANDS.items()]


def usage() -> str:
    width = max(len(name) for name, _ in commands())
    lines = [f"usage: {PROG} [--version] [-h] COMMAND [options]", "",
             "LLaVA-DyMoE: DyMoE continual instruction tuning on upstream LLaVA.", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_text}" for name, help_text in commands()]
    lines += ["", "options:", "  -h, --help  show this message and exit",
              "  --version   versions of llava-dymoe, LLaVA, transformers, torch, DeepSpeed; GPU and flash-attn",
              "", f"`{PROG} COMMAND --help` shows a command's options; `{PROG} eval MODULE --help` the module's.",
              "Each command is also `python -m llava_dymoe.cli COMMAND` (train: `python -m llava_dymoe.train`, "
              "eval: `python -m llava_dymoe.eval`)."]
    return "\n".join(lines)


def _dist_version(name: str) -> Optional[str]:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _guarded(probe: Callable[[], str]) -> str:
    try:
        return probe()
    except Exception as e:  # a broken install must not break --version
        return f"unavailable ({type(e).__name__}: {e})"


def _gpu() -> str:
    if _dist_version("torch") is None:
        return "unknown (torch not installed)"
    import torch

    build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU-only build"
    if not torch.cuda.is_available():
        return f"none visible (torch.cuda.is_available() is False; {build})"
    n = torch.cuda.device_count()
    return f"{n} visible: {torch.cuda.get_device_name(0)}" + (" (device 0)" if n > 1 else "") + f" ({build})"


def _flash_attn() -> str:
    version = _dist_version("flash-attn") or _dist_version("flash_attn")
    if importlib.util.find_spec("flash_attn") is None:
        return "not installed"
    try:
        module = importlib.import_module("flash_attn")
    except Exception as e:  # installed for another torch/CUDA: say so rather than crash
        return f"{version or 'installed'}, but importing it fails ({type(e).__name__}: {e})"
    return f"{getattr(module, '__version__', None) or version or 'unknown version'} (importable)"


def version_lines() -> List[str]:
    """What ``--version`` prints: one ``name: value`` line each; absent packages read "not installed"."""
    from llava_dymoe import SUPPORTED_LLAVA_TORCH, SUPPORTED_TRANSFORMERS, __version__

    ours = _dist_version("llava-dymoe")
    lines = [f"llava-dymoe: {__version__}" + ("" if ours in (None, __version__) else f" (installed metadata: {ours})")]
    supported = {"llava-torch": SUPPORTED_LLAVA_TORCH, "transformers": SUPPORTED_TRANSFORMERS}
    for dist, _ in STACK:
        version = _dist_version(dist)
        text = version or "not installed"
        if dist in supported and version != supported[dist]:
            text += f" (supported: {supported[dist]})"
        lines.append(f"{dist}: {text}")
    lines.append(f"GPU: {_guarded(_gpu)}")
    lines.append(f"flash-attn: {_guarded(_flash_attn)}")
    return lines


def _unknown(command: str) -> int:
    names = ", ".join(name for name, _ in commands())
    print(f"{PROG}: error: unknown command {command!r}; choose one of: {names} (see {PROG} --help)",
          file=sys.stderr)
    return 2


def _train(argv: Sequence[str]) -> int:
    from llava_dymoe import train, train_hf
    from llava_dymoe.errors import DyMoEError, debug_enabled, print_refusal

    argv = list(argv)
    hf = train_hf.wants_hf_host(argv)  # docs/hosts.md: --host, or the host read from the model's config
    saved = sys.argv[0]
    sys.argv[0] = f"{PROG} train"  # the usage line of LLaVA's argument parser
    try:
        if hf:
            train_hf.main(argv)
        else:
            train.main(train_hf.drop_upstream_host(argv))
    except DyMoEError as e:  # as `python -m llava_dymoe.train` (errors.run_refusing)
        if debug_enabled():
            raise
        return print_refusal(e)
    finally:
        sys.argv[0] = saved
    return 0


EVAL_USAGE = f"""usage: {PROG} eval MODULE [the module's arguments ...]

Runs the upstream LLaVA eval module MODULE unchanged with the DyMoE eval patches
(= python -m llava_dymoe.eval llava.eval.MODULE ...). MODULE is a llava.eval module name,
with or without the `llava.eval.` prefix: model_vqa_loader, model_vqa, model_vqa_science, ...,
or the full name of a fork's own eval script (CoIN: ETrain.Eval.LLaVA.CoIN.model_gqa).
`{PROG} eval MODULE --help` lists the module's own arguments."""


def eval_target(module: str) -> str:
    """``model_vqa_loader`` -> ``llava.eval.model_vqa_loader``; a dotted name (``llava.eval.X``, a fork's
    ``ETrain.Eval.LLaVA.CoIN.model_gqa``) is kept."""
    return module if "." in module else f"llava.eval.{module}"


def _eval(argv: Sequence[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(EVAL_USAGE, file=sys.stdout if argv else sys.stderr)
        if not argv:
            print(f"{PROG} eval: error: name the eval MODULE to run", file=sys.stderr)
        return 0 if argv else 2
    from llava_dymoe.eval.shim import main as shim_main

    return shim_main([eval_target(argv[0]), *argv[1:]])


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print(usage(), file=sys.stderr)
        return 2
    command, rest = argv[0], argv[1:]
    if command in ("-h", "--help"):
        print(usage())
        return 0
    if command in ("-V", "--version"):
        print("\n".join(version_lines()))
        return 0
    if command == "train":
        return _train(rest)
    if command == "eval":
        return _eval(rest)
    from llava_dymoe.cli import SUBCOMMANDS
    from llava_dymoe.cli import main as cli_main

    if command not in SUBCOMMANDS:
        return _unknown(command)
    return cli_main(argv, prog=PROG)


if __name__ == "__main__":
    sys.exit(main())
