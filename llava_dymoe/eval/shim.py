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

Supported modules: {', '.join(SUPPORTED)}, and any other llava.eval.* module; also a fork's own
eval script outside `llava` that imports load_pretrained_model (CoIN: ETrain.Eval.LLaVA.CoIN.model_gqa,
with the fork's checkout on PYTHONPATH; E1 then patches the builder that script imports).
Before any model loads, the shim refuses an existing non-empty --answers-file (pass
--overwrite-answers to replace it) and checks the --question-file of the supported modules
(--skip-data-check turns that off); both flags are its own and are not passed on.
Example:
  python -m llava_dymoe.eval llava.eval.model_vqa_loader --model-path ckpt/task1 \\
      --model-base vicuna-7b-v1.5 --question-file q.jsonl --image-folder images \\
      --answers-file answers/task1.jsonl --temperature 0 --conv-mode vicuna_v1
"""


class ShimUsageError(ValueError):
    """Bad shim command line (wrong or missing target module)."""


def _fork_eval_module(name: str) -> bool:
    """Whether ``name`` is an eval script of a fork whose LLaVA is not ``llava`` (CoIN's
    ``ETrain.Eval.LLaVA.CoIN.model_vqa``): a module found on the path that imports ``load_pretrained_model``."""
    import ast

    from ..patches.layout import binding, checkout_of

    checkout = checkout_of(name.split(".")[0])
    return checkout is not None and isinstance(binding(checkout, name, "load_pretrained_model", depth=0)[1],
                                               ast.ImportFrom)


def check_target(name: str) -> str:
    """Accept upstream LLaVA modules (``llava.*``) and a fork's own eval scripts outside ``llava`` (a module that
    imports ``load_pretrained_model``, e.g. CoIN's) that exist; never imports the target."""
    if not name or name.startswith("-"):
        raise ShimUsageError(f"missing the upstream module to run.\n\n{USAGE}")
    if not name.startswith("llava.") and not _fork_eval_module(name):
        raise ShimUsageError(f"{name!r} is not an upstream LLaVA module, nor a fork's eval script that imports "
                             f"load_pretrained_model (put the fork's checkout first on PYTHONPATH). "
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
    with eval_patches(remap_cpu=remap_cpu, eval_module=None if name.startswith("llava.") else name):
        sys.argv = [name, *argv]
        try:
            runpy.run_module(name, run_name="__main__", alter_sys=True)
        finally:
            sys.argv = saved_argv


OVERWRITE_FLAG = "--overwrite-answers"
#: The question-file format of each generator whose questions the shim checks (those of ``cli run``).
QUESTION_FORMATS = {"llava.eval.model_vqa_loader": "jsonl", "llava.eval.model_vqa": "jsonl",
                    "llava.eval.model_vqa_science": "science_json"}
SKIP_CHECK_FLAG = "--skip-data-check"


def _flag_value(argv: Sequence[str], flag: str) -> Optional[str]:
    """The value of ``flag`` (``--answers-file X`` or ``--answers-file=X``), last occurrence; None when absent."""
    value = None
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
    return value


def _replace_value(argv: List[str], flag: str, new: str) -> List[str]:
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == flag and i + 1 < len(out):
            out[i + 1] = new
        elif arg.startswith(flag + "="):
            out[i] = f"{flag}={new}"
    return out


def check_shim_args(name: str, argv: Sequence[str]) -> List[str]:
    """What the shim checks before any model loads; returns the argv for the upstream module.

    * ``--answers-file``: an existing non-empty file is refused unless ``--overwrite-answers`` (ours, taken
      off) says so; a path without a folder part is made absolute (upstream's ``os.makedirs('')`` fails);
      a folder, or a path whose folder cannot be created, is refused;
    * ``--model-path``: a finished checkpoint's ``dymoe_task.json`` is JSON;
    * ``--question-file`` of the generators in :data:`QUESTION_FORMATS`: the data check of ``cli run`` (ids,
      text, images; ``--skip-data-check``, ours, turns it off)."""
    from ..errors import DataError, OutputDirError
    from ..integration.data_check import check_question_file
    from ..integration.output_dir import is_finished, read_marker

    overwrite, skip_check = OVERWRITE_FLAG in argv, SKIP_CHECK_FLAG in argv
    rest = [a for a in argv if a not in (OVERWRITE_FLAG, SKIP_CHECK_FLAG)]
    answers = _flag_value(rest, "--answers-file")
    if answers:
        full = os.path.abspath(os.path.expanduser(answers))
        if os.path.isdir(full):
            raise OutputDirError(f"--answers-file {answers} is a folder; name the answers file (e.g. "
                                 f"{os.path.join(answers, 'answers.jsonl')})")
        if os.path.isfile(full) and os.path.getsize(full) > 0 and not overwrite:
            with open(full, "rb") as f:
                lines = sum(1 for line in f if line.strip())
            raise OutputDirError(f"--answers-file {answers} already exists ({lines} line(s)); the eval would overwrite "
                                 f"it. Choose another --answers-file, or pass {OVERWRITE_FLAG} to replace it")
        parent = os.path.dirname(full)
        probe = parent
        while not os.path.exists(probe) and os.path.dirname(probe) != probe:
            probe = os.path.dirname(probe)
        if not os.path.isdir(probe) or not os.access(probe, os.W_OK | os.X_OK):
            why = "is a file, not a folder" if not os.path.isdir(probe) else "is not writable"
            raise OutputDirError(f"--answers-file {answers} cannot be written: {probe} {why}; choose another path")
        rest = _replace_value(rest, "--answers-file", full)
    model_path = _flag_value(rest, "--model-path")
    if model_path and is_finished(model_path):  # the loader reads it after the base model: read it first
        read_marker(model_path, "--model-path")
    questions = _flag_value(rest, "--question-file")
    if questions and not skip_check and name in QUESTION_FORMATS:  # other modules read other formats (TSV, ...)
        fmt = QUESTION_FORMATS[name]
        report = check_question_file(questions, _flag_value(rest, "--image-folder"), fmt)
        if not report.ok:
            raise DataError(f"the check of --question-file found {len(report.errors)} problem(s) ("
                            + ", ".join(f"{k} x{n}" for k, n in report.counts().items()) + f") listed above; fix the "
                            f"file (or, if you know better, pass {SKIP_CHECK_FLAG})", details=report.format())
    return rest


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
        if not argv[0].startswith("llava."):
            check_target(argv[0])  # the usage refusal first
        rest = check_shim_args(argv[0], argv[1:])  # no model, no llava import: refuses within a second
        run_upstream(argv[0], rest)
    except ShimUsageError as exc:
        print(f"python -m llava_dymoe.eval: error: {exc}", file=sys.stderr)
        return 2
    except DyMoEError as exc:  # a loader refusal (another base model, an unfinished checkpoint, ...) or a fork
        if debug_enabled():  # without a patch point (patches.lines.UpstreamMismatch): one line, exit 2
            raise
        return print_refusal(exc)
    return 0
