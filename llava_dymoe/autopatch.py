"""E4 (optional): env-gated autopatch, so upstream command lines run unchanged with DyMoE checkpoints.

    python -m llava_dymoe.autopatch install     # writes llava_dymoe_autopatch.pth into site-packages
    LLAVA_DYMOE=1 python -m llava.eval.model_vqa_loader --model-path CKPT --model-base BASE ...
    python -m llava_dymoe.autopatch uninstall   # removes it;  `status` tells what is in place
    python -m llava_dymoe.autopatch check [--llava-dir PATH] [--entry PATH] [--fit-dir DIR] [--smoke]
        # the entry a fork runs, every patch point, whether the run-time plugin fits, the fork diff per
        # file; --smoke: two tiny DyMoE tasks and an eval through the fork (exit 0 only when they pass)

The ``.pth`` line (run by ``site`` at interpreter start) imports this module only when
``LLAVA_DYMOE=1``.  Why it stays safe: without the variable nothing is imported at all; with it,
this module imports nothing heavy either.  It registers an import hook and applies the eval patch
set (E1/E2, + the CPU remap when there is no CUDA) right after ``llava.model.builder`` is first
imported, i.e. before any ``llava.eval`` module copies ``load_pretrained_model`` by value.
Processes that never import LLaVA's builder (pip, the trainer, tools) are left untouched, and a
failing patch raises at that import instead of being swallowed.
"""
from __future__ import annotations

import argparse
import importlib.abc
import importlib.machinery
import logging
import os
import sys
import sysconfig
from typing import List, Optional

logger = logging.getLogger("llava_dymoe.patches")

ENV = "LLAVA_DYMOE"
PTH_NAME = "llava_dymoe_autopatch.pth"
#: Exactly the line of patches/llava_dymoe_autopatch.pth (a test keeps the two identical).
PTH_LINE = 'import os; os.environ.get("LLAVA_DYMOE") == "1" and __import__("llava_dymoe.autopatch")\n'
TRIGGER = "llava.model.builder"

_applied: List = []  # PatchSets applied by this module, oldest first


def apply_now() -> None:
    """Apply the eval patch set (+ CPU remap without CUDA) for the rest of the process."""
    if _applied:
        return
    from llava_dymoe.patches.eval import apply_eval_patches

    _applied.extend(apply_eval_patches())
    logger.info("autopatch (%s=1): %s", ENV, ", ".join(ps.name for ps in _applied))


def revert() -> None:
    """Undo :func:`apply_now` and remove the import hook."""
    while _applied:
        _applied.pop().revert()
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _BuilderHook)]


class _BuilderHook(importlib.abc.MetaPathFinder):
    """Finds ``llava.model.builder`` through the normal finders and patches it once executed."""

    def find_spec(self, fullname, path, target=None):
        if fullname != TRIGGER:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        exec_module = spec.loader.exec_module

        def exec_then_patch(module):
            exec_module(module)
            sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _BuilderHook)]
            apply_now()

        spec.loader.exec_module = exec_then_patch
        return spec


def install_hook() -> None:
    """Patch now if the builder is already imported, else when it gets imported."""
    if TRIGGER in sys.modules:
        apply_now()
    elif not any(isinstance(f, _BuilderHook) for f in sys.meta_path):
        sys.meta_path.insert(0, _BuilderHook())


# -- install / uninstall the .pth ---------------------------------------------------------------
def default_site_dir() -> str:
    return sysconfig.get_paths()["purelib"]


def status(site_dir: Optional[str] = None) -> str:
    path = os.path.join(site_dir or default_site_dir(), PTH_NAME)
    if not os.path.exists(path):
        state = "not installed"
    else:
        with open(path) as f:
            same = f.read() == PTH_LINE
        state = "installed" if same else "installed, but with different content (reinstall)"
    active = os.environ.get(ENV) == "1"
    return (f"{path}: {state}; {ENV}={os.environ.get(ENV, '(unset)')}, so the autopatch is "
            f"{'active' if active else 'inactive'} in new processes (it needs {ENV}=1)")


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m llava_dymoe.autopatch",
                                description="Install/uninstall the env-gated autopatch .pth (E4).")
    p.add_argument("action", choices=["install", "uninstall", "status", "check"])
    p.add_argument("--llava-dir", default=None, help="check: a llava package directory or a fork checkout "
                   "holding llava/, or a checkout whose LLaVA is another package, e.g. CoIN's ETrain (default: the llava this "
                   "Python would import)")
    p.add_argument("--entry", default=None, help="check: the fork's training entry (a .py path under the checkout, "
                   "or a module); default: the file its shell scripts launch, else llava/train/train.py")
    p.add_argument("--fit-dir", default=None, help="check: write the diff parts fitted to this fork here (one "
                   "file each; nothing is overwritten)")
    p.add_argument("--smoke", action="store_true", help="check: also run two tiny DyMoE tasks and one eval through "
                   "the fork's entry (subprocesses, a few minutes on CPU); exit 0 only when they pass")
    p.add_argument("--smoke-dir", default=None, help="check --smoke: work folder (default: a new temporary one)")
    p.add_argument("--site-dir", default=None, help="target directory (default: this interpreter's "
                   "site-packages, %(default)s)")
    args = p.parse_args(argv)
    if args.action == "check":
        from llava_dymoe.errors import DyMoEError, debug_enabled, print_refusal
        from llava_dymoe.patches.check import check

        try:
            return check(args.llava_dir, args.entry, args.fit_dir, args.smoke_dir, args.smoke)
        except DyMoEError as exc:  # one line (LLAVA_DYMOE_DEBUG=1: the traceback)
            if debug_enabled():
                raise
            return print_refusal(exc)
    path = os.path.join(args.site_dir or default_site_dir(), PTH_NAME)
    if args.action == "install":
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(PTH_LINE)
        print(f"installed {path}; run upstream eval modules with {ENV}=1 to use DyMoE checkpoints")
    elif args.action == "uninstall":
        if os.path.exists(path):
            os.remove(path)
            print(f"removed {path}")
        else:
            print(f"nothing to remove: {path} does not exist")
    else:
        print(status(args.site_dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
elif os.environ.get(ENV) == "1":
    install_hook()
