"""D1: answer transformers' "is Pillow installed?" once per process instead of once per image operation.

transformers 4.37.2's ``is_vision_available()`` looks Pillow's version up in the installed distributions'
metadata (``importlib.metadata.version``) on every call, and its image processing asks on every image, several
times: ``image_utils.is_valid_image`` and ``to_numpy_array``, and ``requires_backends(..., ["vision"])`` in
``image_transforms.to_pil_image``, ``resize``, ``center_crop`` and ``convert_to_rgb``.  LLaVA's training dataset
runs the CLIP image processor on every sample in the training loop (``--dataloader_num_workers 0`` unless told),
and on CPU taking the lookups out cut the training loop's time by 15 % for a tiny-model task and by
43 % for the base model (measured 2026-12-03; docs/speed.md).

The replacements ask upstream's check once (one answer shared by both) and keep it (the installed packages do
not change while a process runs); ``requires_backends`` with any backend other than ``vision`` alone goes to the
original.  Written for the transformers of both upstream lines (4.37.2 and 4.31.0 look the version up the same
way); on any other transformers :func:`apply_vision_check_cache` does nothing (logged).
"""
from __future__ import annotations

import contextlib
import functools
import logging
from typing import Any, Callable, Dict, Iterator, Optional

from ._base import Patch, PatchSet, _installed_version

logger = logging.getLogger("llava_dymoe.patches")

#: the transformers releases (the 1.2 and the 1.1 line's) whose check looks the version up on every call
TRANSFORMERS = ("4.37.2", "4.31.0")
#: where the image-processing path binds the two functions (``from .utils import ...`` copies them)
TARGETS = ("transformers.image_utils:is_vision_available", "transformers.image_transforms:requires_backends")


def _once(check: Callable[[], bool]) -> Callable[[], bool]:
    answer: Dict[str, bool] = {}

    def cached() -> bool:
        if "vision" not in answer:
            answer["vision"] = bool(check())
        return answer["vision"]
    return cached


def _make_is_vision_available(original, check: Callable[[], bool]):
    @functools.wraps(original)
    def is_vision_available():
        return check()
    return is_vision_available


def _make_requires_backends(original, check: Callable[[], bool]):
    @functools.wraps(original)
    def requires_backends(obj: Any, backends: Any) -> None:
        wanted = [backends] if not isinstance(backends, (list, tuple)) else list(backends)
        if wanted == ["vision"] and check():
            return None
        return original(obj, backends)
    return requires_backends


def vision_check_patch_set(transformers_version: str = TRANSFORMERS[0]) -> PatchSet:
    """D1 as a :class:`PatchSet` (not applied), requiring ``transformers_version`` (one of :data:`TRANSFORMERS`)."""
    if transformers_version not in TRANSFORMERS:
        raise ValueError(f"D1 is written for transformers {' or '.join(TRANSFORMERS)}, not {transformers_version}")
    def ask() -> bool:  # upstream's own check, looked up when first asked (after the version guard)
        from transformers.utils import import_utils

        return import_utils.is_vision_available()

    check = _once(ask)  # one answer for both replacements
    why = "D1: Pillow's presence checked once per process, not per image operation"
    return PatchSet("vision-check", [
        Patch(TARGETS[0], functools.partial(_make_is_vision_available, check=check), description=why),
        Patch(TARGETS[1], functools.partial(_make_requires_backends, check=check), description=why)],
        requires={"transformers": f"=={transformers_version}"})


def apply_vision_check_cache() -> Optional[PatchSet]:
    """Apply D1 for the rest of the process on a transformers of :data:`TRANSFORMERS`; returns the applied set,
    else ``None`` (another transformers: not written for it; logged, nothing changes but the speed)."""
    have = _installed_version("transformers")
    if have not in TRANSFORMERS:
        logger.info("D1 (vision check cache) not applied: transformers %s, written for %s", have,
                    " or ".join(TRANSFORMERS))
        return None
    return vision_check_patch_set(have).apply()


@contextlib.contextmanager
def vision_check_cache() -> Iterator[Optional[PatchSet]]:
    """D1 for the duration of the block (nothing on another transformers); reverted on exit."""
    applied = apply_vision_check_cache()
    try:
        yield applied
    finally:
        if applied is not None:
            applied.revert()
