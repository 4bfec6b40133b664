"""Eval-side patches E1/E2 (llava-integration.md §6.1): DyMoE checkpoints through upstream's loader.

E1 wraps ``llava.model.builder.load_pretrained_model``.  Upstream routes by substrings of the
model name and would send a DyMoE directory to its LoRA branch, which merges adapters into the
base weights; a token-routed MoE cannot be merged.  The wrapper therefore asks
``is_dymoe_checkpoint(model_path)`` first (decided by the checkpoint's config content, not its
name) and, if so, returns ``load_dymoe_for_eval(model_path, model_base, model_name, **kwargs)``:
the same 4-tuple as upstream.  Both come from ``llava_dymoe.integration.eval_loader``.
Everything else goes to the original, unchanged.

E2 (``rebind_by_value``): ``llava.eval.*`` and ``llava.serve.*`` do ``from llava.model.builder
import load_pretrained_model``; copies in modules that are already imported are rebound too.

On a machine without CUDA (``cpu_remap.is_active()``), upstream eval calls the loader with its
defaults ``device="cuda", device_map="auto"``; the wrapper turns them (and any other CUDA
device) into ``"cpu"`` for both branches, so the model lands on CPU in fp16.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import inspect
import json
import logging
import os
from typing import Any, Callable, Iterator, List, Optional

from . import cpu_remap
from ._base import Patch, PatchError, PatchSet

logger = logging.getLogger("llava_dymoe.patches")

LOADER_TARGET = "llava.model.builder:load_pretrained_model"
HOOK_MODULE = "llava_dymoe.integration.eval_loader"


def _config_has_dymoe(model_path: str) -> bool:
    """Fallback detector used only while the checkpoint hooks module is absent."""
    cfg = os.path.join(os.path.expanduser(str(model_path)), "config.json")
    try:
        with open(cfg) as f:
            return "dymoe" in json.load(f)
    except (OSError, ValueError):
        return False


def _hooks():
    """``(is_dymoe_checkpoint, load_dymoe_for_eval)``, imported lazily at call time.

    If the hooks module does not exist (an install without the train/checkpoint side), plain
    checkpoints still load through upstream, and a DyMoE one fails loudly: never a silent base
    model.
    """
    try:
        hooks = importlib.import_module(HOOK_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name != HOOK_MODULE:
            raise

        def missing_loader(model_path, *args, **kwargs):
            raise PatchError(f"{model_path} is a DyMoE checkpoint (config.json has a 'dymoe' block), but "
                             f"{HOOK_MODULE} is not importable, so it cannot be rebuilt. Reinstall "
                             "llava-dymoe (pip install -e .) from a complete checkout.")
        return _config_has_dymoe, missing_loader
    return hooks.is_dymoe_checkpoint, hooks.load_dymoe_for_eval


def _cuda_options_to_cpu(options: dict) -> None:
    """Without CUDA: ``device="cuda"`` and ``device_map="auto"``/CUDA maps become ``"cpu"``.

    ``"auto"`` is mapped too because upstream then skips its fp16 move of the vision tower and
    leaves placement to accelerate; an explicit non-CUDA device (e.g. ``"mps"``) is kept.
    """
    if cpu_remap.is_cuda_device(options.get("device")):
        options["device"] = "cpu"
    dm = options.get("device_map")
    if isinstance(dm, dict):
        options["device_map"] = {k: "cpu" if cpu_remap.is_cuda_device(v) else v for k, v in dm.items()}
    elif dm == "auto" or cpu_remap.is_cuda_device(dm):
        options["device_map"] = "cpu"


#: upstream's own ``load_pretrained_model`` options (both lines); a fork's other named parameters are its own
UPSTREAM_LOADER_OPTIONS = frozenset(("load_8bit", "load_4bit", "device_map", "device", "use_flash_attn"))


def make_loader_wrapper(original: Callable, fork_builder: bool = False) -> Callable:
    """E1: the replacement for ``load_pretrained_model`` (delegates to ``original`` for non-DyMoE).
    ``fork_builder``: ``original`` is a fork's own builder outside ``llava`` (CoIN's); a DyMoE checkpoint is then
    rebuilt with that builder's model class and token names (``load_dymoe_for_eval(builder_globals=...)``)."""
    signature = inspect.signature(original)

    @functools.wraps(original)
    def load_pretrained_model(*args, **kwargs):
        force_cpu = cpu_remap.is_active()
        bound = signature.bind(*args, **kwargs)
        is_dymoe, load_dymoe = _hooks()
        dymoe = bool(is_dymoe(bound.arguments["model_path"]))
        if not dymoe and not force_cpu:
            return original(*args, **kwargs)  # untouched upstream behaviour
        bound.apply_defaults()
        options = dict(bound.arguments)
        options.update(options.pop("kwargs", {}) or {})
        if force_cpu:
            _cuda_options_to_cpu(options)
        model_path, model_base, model_name = (options.pop(k) for k in
                                              ("model_path", "model_base", "model_name"))
        if dymoe:
            logger.info("E1: %s is a DyMoE checkpoint; rebuilding it on base %s%s", model_path, model_base,
                        " (CPU)" if force_cpu else "")
            extra = [k for k in signature.parameters if k in options and k not in UPSTREAM_LOADER_OPTIONS]
            if extra:  # a fork's own builder parameters (num_task, text_tower ...) mean nothing to a DyMoE load
                logger.info("E1: not passing the fork's builder parameters %s to the DyMoE loader", ", ".join(extra))
            own = {k: v for k, v in options.items() if k not in extra}
            if fork_builder:
                own["builder_globals"] = original.__globals__  # a fork's own model classes (CoIN's ETrain)
            return load_dymoe(model_path, model_base, model_name, **own)
        logger.info("E1: upstream load_pretrained_model(%s) with device=%r, device_map=%r (no CUDA)",
                    model_path, options.get("device"), options.get("device_map"))
        return original(model_path, model_base, model_name, **options)

    return load_pretrained_model


def eval_patch_set(loader_replacement: Optional[Callable[[Any], Any]] = None,
                   eval_module: Optional[str] = None) -> PatchSet:
    """E1 + E2 as a :class:`PatchSet` (not applied).

    ``loader_replacement`` is a factory ``original -> replacement`` (same contract as
    ``Patch.make``) for forks or tests; the default is :func:`make_loader_wrapper`.  The version
    requirements are those of the line the ``llava`` in use belongs to (``lines.select_line``).
    ``eval_module``: the eval script that will run; one outside ``llava`` (CoIN's
    ``ETrain.Eval.LLaVA.CoIN.model_vqa``) gets E1 on the builder it imports (``layout.discover``) and its
    package swept for by-value copies.
    """
    from .lines import select_line

    selection = select_line("eval", eval_module=eval_module)
    layout = selection.report.layout
    target = f"{layout.builder}:load_pretrained_model" if layout is not None else LOADER_TARGET
    default = functools.partial(make_loader_wrapper, fork_builder=True) if layout is not None else make_loader_wrapper
    return PatchSet("eval", [Patch(
        target, loader_replacement or default, rebind_by_value=True,
        description="E1/E2: DyMoE checkpoints rebuilt by llava_dymoe, others deferred to upstream",
        sweep_packages=(layout.package,) if layout is not None else ())],
        requires=selection.requires)


def apply_eval_patches(*, remap_cpu: bool = True, eval_module: Optional[str] = None) -> List[PatchSet]:
    """Apply E1/E2 (+ the CPU remap when there is no CUDA) for the rest of the process (E4).

    Returns the applied sets, oldest first; revert them in reverse order to undo.
    """
    sets = []
    if remap_cpu and not cpu_remap.cuda_available():
        sets.append(cpu_remap.cpu_remap_patch_set().apply())
    try:
        sets.append(eval_patch_set(eval_module=eval_module).apply())
    except BaseException:
        for ps in reversed(sets):
            ps.revert()
        raise
    return sets


@contextlib.contextmanager
def eval_patches(*, remap_cpu: bool = True, eval_module: Optional[str] = None) -> Iterator[PatchSet]:
    """Scoped E1/E2, inside ``cuda_to_cpu()`` when ``remap_cpu`` (which is a no-op with CUDA), and D1
    (``vision_check.py``)."""
    from .vision_check import vision_check_cache

    with contextlib.ExitStack() as stack:
        if remap_cpu:
            stack.enter_context(cpu_remap.cuda_to_cpu())
        stack.enter_context(vision_check_cache())  # D1 (patches/vision_check.py): a speed-up only
        yield stack.enter_context(eval_patch_set(eval_module=eval_module))
