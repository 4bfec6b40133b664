"""cuda_to_cpu(): CUDA calls of the upstream eval modules become CPU calls, and everything is restored."""
import importlib
import inspect
import logging

import pytest
import torch

from llava_dymoe.patches import cpu_remap
from llava_dymoe.patches._base import applied_patch_sets, is_ours

pytestmark = [pytest.mark.skipif(torch.cuda.is_available(), reason="the remap only acts without CUDA"),
              pytest.mark.llava11]
_NOTHING = object()


def _owner(target):
    module, _, path = target.partition(":")
    owner = importlib.import_module(module)
    *parents, attr = path.split(".")
    for p in parents:
        owner = getattr(owner, p)
    return owner, attr


def _snapshot():
    """For every remap target: the owner's own dict entry (or absence) and the resolved value."""
    snap = {}
    for target in cpu_remap.REMAP_TARGETS:
        owner, attr = _owner(target)
        snap[target] = (vars(owner).get(attr, _NOTHING), inspect.getattr_static(owner, attr))
    return snap


def test_remaps_what_upstream_eval_calls_and_restores_everything(caplog):
    before = _snapshot()
    assert "cuda" not in vars(torch.Tensor) and "to" not in vars(torch.Tensor)  # inherited from TensorBase
    caplog.set_level(logging.INFO, logger="llava_dymoe.patches")
    with cpu_remap.cuda_to_cpu() as remapped:
        assert remapped and cpu_remap.is_active()
        assert [ps.name for ps in applied_patch_sets()] == ["cpu-remap"]
        ids = torch.tensor([[1, 2, 3]])
        # model_vqa_loader: .to(device='cuda', non_blocking=True) and .to(dtype=fp16, device='cuda', ...)
        assert ids.to(device="cuda", non_blocking=True).device.type == "cpu"
        img = torch.rand(1, 3, 4, 4).to(dtype=torch.float16, device="cuda", non_blocking=True)
        assert img.device.type == "cpu" and img.dtype == torch.float16
        # model_vqa / model_vqa_science: .unsqueeze(0).cuda(), .half().cuda()
        assert ids.unsqueeze(0).cuda().device.type == "cpu" and img.half().cuda() is not None
        for dev in ("cuda:0", torch.device("cuda"), torch.device("cuda", 0), 0):
            assert ids.to(dev).device.type == "cpu"
        assert ids.to(torch.float32).dtype == torch.float32 and ids.to(img).dtype == torch.float16
        lin = torch.nn.Linear(4, 4)
        assert lin.cuda() is lin and lin.to("cuda", dtype=torch.float16) is lin
        assert lin.weight.dtype == torch.float16 and lin.weight.device.type == "cpu"
        # fp16 is kept on purpose: torch >= 2.1 runs fp16 matmul on CPU
        out = lin(img.reshape(-1, 4)[:2])
        assert out.dtype == torch.float16 and torch.isfinite(out).all()
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
    assert not cpu_remap.is_active() and not applied_patch_sets()
    assert _snapshot() == before
    assert "cuda" not in vars(torch.Tensor) and "to" not in vars(torch.Tensor)
    with pytest.raises((AssertionError, RuntimeError)):
        torch.ones(1).cuda()  # the real behaviour is back
    assert "reverted patch set 'cpu-remap'" in caplog.text and "patched torch:Tensor.to" in caplog.text


def test_restored_after_an_exception():
    before = _snapshot()
    with pytest.raises(KeyError):
        with cpu_remap.cuda_to_cpu():
            raise KeyError("boom")
    assert _snapshot() == before and not cpu_remap.is_active()


def test_nested_use_is_a_no_op_inside():
    with cpu_remap.cuda_to_cpu():
        with cpu_remap.cuda_to_cpu() as inner:
            assert inner and cpu_remap.is_active()
        assert cpu_remap.is_active()  # the inner exit must not undo the outer remap
        assert torch.ones(1).cuda().device.type == "cpu"
    assert not cpu_remap.is_active()


def test_no_effect_when_cuda_is_available(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    before = _snapshot()
    with cpu_remap.cuda_to_cpu() as remapped:
        assert remapped is False and not cpu_remap.is_active() and _snapshot() == before
        assert not is_ours(inspect.getattr_static(torch.Tensor, "cuda"))
