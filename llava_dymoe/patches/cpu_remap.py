"""E3 support: run LLaVA's unchanged, CUDA-hard-coded eval modules on a machine without CUDA.

What the upstream modules (llava-torch 1.2.2.post1) actually call, and what is remapped:

* ``llava/eval/model_vqa_loader.py``: ``input_ids.to(device='cuda', non_blocking=True)`` and
  ``image_tensor.to(dtype=torch.float16, device='cuda', ...)``  -> ``Tensor.to`` maps CUDA devices
  to ``cpu`` (the dtype is kept: fp16 matmul works on CPU in torch >= 2.1);
* ``model_vqa.py``, ``model_vqa_science.py``: ``.unsqueeze(0).cuda()``, ``.half().cuda()``
  -> ``Tensor.cuda`` returns the tensor unchanged (already on CPU);
* ``llava/model/builder.py``: ``load_pretrained_model(..., device_map="auto", device="cuda")``:
  not a tensor call; the E1 wrapper (``patches/eval.py``) asks :func:`is_active` and forces
  ``device="cpu", device_map="cpu"`` (then upstream loads fp16 weights on CPU, as the demo does).
* For other llava entry points (``run_llava``, ``serve/cli``, ``model_qa``): ``Module.cuda``,
  ``Module.to("cuda")``, ``torch.cuda.synchronize`` / ``empty_cache`` are no-ops too.

``torch.device("cuda")`` objects themselves are left alone (the type is used everywhere; creating
one needs no GPU); only their use as a ``.to`` target is remapped.  Everything is scoped through
the patch machinery: logged, and restored on exit (an inherited attribute such as
``Tensor.cuda`` is deleted from the subclass again, not shadowed).  When CUDA is available the
context manager does nothing.
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import logging
from typing import Any, Iterator

from ._base import Patch, PatchSet, is_ours

logger = logging.getLogger("llava_dymoe.patches")

#: Every attribute the remap may replace (the restore test checks each one).
REMAP_TARGETS = (
    "torch:Tensor.cuda", "torch:Tensor.to", "torch.nn:Module.cuda", "torch.nn:Module.to",
    "torch.cuda:synchronize", "torch.cuda:empty_cache",
)


def is_cuda_device(dev: Any) -> bool:
    """Whether ``dev`` (str, torch.device or ordinal) names a CUDA device."""
    import torch

    if isinstance(dev, torch.device):
        return dev.type == "cuda"
    if isinstance(dev, str):
        return dev == "cuda" or dev.startswith("cuda:")
    return isinstance(dev, int) and not isinstance(dev, bool)  # a bare ordinal means cuda:N


def _cpu_args(args: tuple, kwargs: dict):
    """Replace CUDA device arguments of ``.to(...)`` by ``"cpu"``; dtypes/tensors pass through."""
    args = tuple("cpu" if is_cuda_device(a) else a for a in args)
    if is_cuda_device(kwargs.get("device")):
        kwargs = {**kwargs, "device": "cpu"}
    return args, kwargs


def _make_to(original):
    @functools.wraps(original)
    def to(self, *args, **kwargs):
        args, kwargs = _cpu_args(args, kwargs)
        return original(self, *args, **kwargs)
    return to


def _make_tensor_cuda(original):
    @functools.wraps(original)
    def cuda(self, device=None, non_blocking=False, memory_format=None):
        return self  # CPU tensors stay where they are; Tensor.to("cpu") returns self as well
    return cuda


def _make_module_cuda(original):
    @functools.wraps(original)
    def cuda(self, device=None):
        return self
    return cuda


def _make_noop(original):
    @functools.wraps(original)
    def noop(*args, **kwargs):
        return None
    return noop


def cpu_remap_patch_set() -> PatchSet:
    """The remap as a :class:`PatchSet` (torch only; no llava version requirement)."""
    makers = [_make_tensor_cuda, _make_to, _make_module_cuda, _make_to, _make_noop, _make_noop]
    why = "no CUDA: unchanged upstream eval code runs on CPU (llava_dymoe E3)"
    return PatchSet("cpu-remap", [Patch(t, m, description=why) for t, m in zip(REMAP_TARGETS, makers)],
                    requires={"torch": ">=2.1"})


def is_active() -> bool:
    """True while the remap is in place (scoped or process-wide, e.g. through the autopatch)."""
    import torch

    return is_ours(inspect.getattr_static(torch.Tensor, "cuda"))


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


@contextlib.contextmanager
def cuda_to_cpu() -> Iterator[bool]:
    """Remap CUDA calls to CPU for the duration of the block; yields whether it remapped.

    Nested use is harmless: the inner block finds the targets already patched and changes nothing.
    """
    if cuda_available():
        logger.info("cuda_to_cpu: CUDA is available; nothing remapped")
        yield False
        return
    logger.info("cuda_to_cpu: no CUDA device; remapping .cuda()/'cuda' devices to CPU (fp16 kept)")
    with cpu_remap_patch_set():
        yield True
