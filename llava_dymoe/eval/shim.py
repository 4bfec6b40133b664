"""The eval shim (E3): run an UNCHANGED upstream LLaVA eval module with the eval patches applied.

    python -m llava_dymoe.eval llava.eval.model_vqa_loader --model-path CKPT --model-base BASE \\
        --question-file Q.jsonl --image-folder IMGS --answers-file A.jsonl --temperature 0 \\
        --conv-mode vicuna_v1

Why runpy and not an import: the upstream modules bind ``load_pretrained_model`` by value at
import time, and ``model_vqa_loader``'s dataset reads a module-global ``args`` that only exists
when the file runs as ``__main__``.  So the shim applies E1/E2 (and the CPU remap when there is
no CUDA) first, then executes the target with ``runpy.run_module(name, run_name="__main__",
alter_sys=True)``, exactly like ``python -m NAME``, and reverts everything afterwards.  The target
is never imported beforehand.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import runpy
import sys
from typing import List, Optional, Sequence

from ..errors import DyMoEError, debug_enabled, print_refusal

#: Upstream generation modules the shim is tested with; any other ``llava.*`` module also runs.
SUPPORTED = ("llava.eval.model_vqa_loader", "llava.eval.model_vqa_science", "llava.eval.model_vqa")
USAGE = f"""usage: python -m llava_dymoe.eval MODULE [upstream arguments ...]

Runs the upstream LLaVA module MODULE unchanged (as `python -m MODULE` would), with the
llava_dymoe eval patches applied: DyMoE checkpoints load through `--model-path CKPT --model-base
BASE`, other checkpoints load exactly as upstream does; without CUDA it runs on CPU.

Supported modules: {', '.join(SUPPORTED)}, and any other llava.eval.* module.
Example:
  python -m llava_dymoe.eval llava.eval.model_vqa_loader --model-path ckpt/task1 \\
      --model-base vicuna-7b-v1.5 --question-file q.jsonl --image-folder images \\
      --answers-file answers/task1.jsonl --temperature 0 --conv-mode vicuna_v1
"""


class ShimUsageError(ValueError):
    """Bad shim command line (wrong or missing target module)."""


def check_target(name: str) -> str:
    """Accept only upstream LLaVA modules (``llava.*``) that exist; never imports the target."""
    if not name or name.startswith("-"):
        raise ShimUsageError(f"missing the upstream module to run.\n\n{USAGE}")
    if not name.startswith("llava."):
        raise ShimUsageError(f"{name!r} is not an upstream LLaVA module; the shim only runs llava.* modules. "
                             f"Supported: {', '.join(SUPPORTED)}, and any other llava.eval.* module.")
    try:  # imports the parent packages (llava, llava.eval), not the target itself
        found = importlib.util.find_spec(name) is not None
    except ImportError:
        found = False
    if not found:
        raise ShimUsageError(f"no module named {name!r} in the installed llava-torch. "
                             f"Supported: {', '.join(SUPPORTED)}, and any other llava.eval.* module.")
    return name


def run_upstream(name: str, argv: Sequence[str], *, remap_cpu: bool = True) -> None:
    """Run module ``name`` as ``__main__`` with ``sys.argv = [name, *argv]`` under the eval patches.

    Exceptions and ``SystemExit`` from the target propagate, after the patches are reverted and
    ``sys.argv`` is restored.
    """
    from llava_dymoe.patches.eval import eval_patches

    check_target(name)  # fail before touching anything
    saved_argv = list(sys.argv)
    with eval_patches(remap_cpu=remap_cpu):
        sys.argv = [name, *argv]
        try:
            runpy.run_module(name, run_name="__main__", alter_sys=True)
        finally:
            sys.argv = saved_argv


def _setup_logging() -> None:
    log = logging.getLogger("llava_dymoe")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("[llava_dymoe] %(levelname)s %(name)s: %(message)s"))
        log.addHandler(handler)
        log.setLevel(os.environ.get("LLAVA_DYMOE_LOG_LEVEL", "INFO").upper())


def main(argv: Optional[List[str]] = None) -> int:
    from ..integration.process_hygiene import die_with_parent_if_asked

    die_with_parent_if_asked()  # started by `cli run`: end with it (its DataLoader workers follow)
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    _setup_logging()
    try:
        run_upstream(argv[0], argv[1:])
    except ShimUsageError as exc:
        print(f"python -m llava_dymoe.eval: error: {exc}", file=sys.stderr)
        return 2
    except DyMoEError as exc:  # a loader refusal (another base model, an unfinished checkpoint, ...) or a fork
        if debug_enabled():  # without a patch point (patches.lines.UpstreamMismatch): one line, exit 2
            raise
        return print_refusal(exc)
    return 0
