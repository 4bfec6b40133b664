"""DyMoELinear: wrapping, expansion, forward against a naive per-token loop (values and gradients)."""
import math
import os
import sys

import pytest
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(__file__))
import naive_ref as ref  # noqa: E402

import llava_dymoe.core.layer as layer_mod  # noqa: E402
from llava_dymoe.config import DyMoEConfig  # noqa: E402
from llava_dymoe.core import DyMoELinear, cosine_logits, new_token_mask  # noqa: E402

SEEDS = [0, 1, 2]
SMALL = dict(experts_per_task=3, expert_rank=2, top_k=4, lora_dropout=0.0, router_temperature=0.3, tau=0.1)


def make_layer(tasks, seed=0, dtype=torch.float64, bias=True, in_f=5, out_f=4, **kw):
    torch.manual_seed(seed)
    base = nn.Linear(in_f, out_f, bias=bias, dtype=dtype)
    layer = DyMoELinear(base, DyMoEConfig(**{**SMALL, **kw}))
    for _ in range(tasks):
        key = layer.add_task(dtype=dtype)
        with torch.no_grad():
            layer.dymoe_B[key].normal_()
    return layer


def naive(layer, x, tag):
    cfg = layer.dymoe_config
    banks = [(layer.dymoe_A[k], layer.dymoe_B[k], layer.dymoe_router[k]) for k in layer.task_keys()]
    return ref.layer_forward(x.reshape(-1, layer.in_features), layer.weight, layer.bias, banks,
                             layer.experts_per_task, layer.expert_rank, layer.scaling, cfg.top_k,
                             cfg.router_temperature, cfg.router_scale, cfg.tau if tag else None)


def compare_with_naive(layer, x, tag, rtol=1e-7, atol=1e-9):
    inputs = [x] + [p for p in layer.parameters() if p.requires_grad]
    y = layer(x)
    assert y.shape == (*x.shape[:-1], layer.out_features)
    y_ref = naive(layer, x, tag).reshape(y.shape)
    ref.assert_close(y, y_ref, rtol, atol, what="output")
    go = torch.randn_like(y)
    for a, b in zip(torch.autograd.grad(y, inputs, go), torch.autograd.grad(y_ref, inputs, go)):
        ref.assert_close(a, b, rtol, atol, what="grad")


def test_wraps_without_copy_and_keeps_names():
    parent = nn.Sequential(nn.Linear(6, 5))
    base = parent[0]
    n_before = sum(p.numel() for p in parent.parameters())
    parent[0] = layer = DyMoELinear.from_linear(base, DyMoEConfig(**SMALL))
    assert isinstance(layer, nn.Linear)
    assert layer.weight is base.weight and layer.bias is base.bias
    assert list(parent.state_dict()) == ["0.weight", "0.bias"]
    assert sum(p.numel() for p in parent.parameters()) == n_before  # no second weight
    layer.add_task()
    names = [n for n, _ in layer.named_parameters()]
    assert names == ["weight", "bias", "dymoe_A.t0", "dymoe_B.t0", "dymoe_router.t0"]
    assert not any("lora_" in n for n in parent.state_dict())
    nb = DyMoELinear(nn.Linear(6, 5, bias=False), DyMoEConfig(**SMALL))
    assert nb.bias is None and "bias" not in nb.state_dict()
    with pytest.raises(ValueError, match="already"):
        DyMoELinear(layer, DyMoEConfig())
    with pytest.raises(TypeError):
        DyMoELinear(nn.Conv1d(2, 2, 1), DyMoEConfig())


def test_never_reads_weight_shape():
    """ZeRO-3 partitions the base weight to shape [0]; construction and add_task must not care."""
    base = nn.Linear(6, 5)
    base.weight = nn.Parameter(torch.empty(0))
    layer = DyMoELinear(base, DyMoEConfig(**SMALL))
    layer.add_task()
    assert layer.dymoe_A["t0"].shape == (6, 6) and layer.dymoe_B["t0"].shape == (5, 6)


def test_add_task_init_freezing_and_dtype():
    layer = make_layer(0, in_f=64, out_f=8, dtype=torch.float32)
    assert layer.add_task() == "t0"
    bound = 1.0 / math.sqrt(64)  # kaiming_uniform(a=sqrt(5)) on [*, fan_in]
    a, b, r = layer.dymoe_A["t0"], layer.dymoe_B["t0"], layer.dymoe_router["t0"]
    assert a.shape == (6, 64) and b.shape == (8, 6) and r.shape == (3, 64)
    assert a.dtype == torch.float32 and a.device == layer.weight.device
    assert a.abs().max() <= bound and a.std() > bound / 4 and r.abs().max() <= bound and torch.all(b == 0)
    assert layer.scaling == pytest.approx(128.0 / 6)
    assert layer.add_task(dtype=torch.float64) == "t1" and layer.dymoe_A["t1"].dtype == torch.float64
    assert [p.requires_grad for p in layer.dymoe_parameters()] == [False, True] * 3
    assert layer.weight.requires_grad  # the base is left to the caller
    assert (layer.num_tasks, layer.num_experts) == (2, 6)
    layer.set_trainable_tasks(["t0"])
    assert [p.requires_grad for p in layer.dymoe_parameters()] == [True, False] * 3
    with pytest.raises(ValueError, match="unknown task"):
        layer.set_trainable_tasks(["t7"])


@pytest.mark.parametrize("tasks", [1, 3])
@pytest.mark.parametrize("training", [True, False])
def test_b_zero_equals_base(tasks, training):
    layer = make_layer(0, dtype=torch.float32, lora_dropout=0.2)
    for _ in range(tasks):
        layer.add_task()  # B = 0
    layer.train(training)
    for x in (torch.randn(7, 5), torch.randn(2, 3, 5)):
        y = layer(x)
        ref.assert_close(y, nn.functional.linear(x, layer.weight, layer.bias), rtol=0, atol=1e-7)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("case", ["1task", "3tasks_tag", "3tasks_eval", "3tasks_notag", "topk_gt_E",
                                  "dot_router", "no_bias", "T0.01"])
def test_forward_matches_naive(seed, case):
    kw = {"topk_gt_E": dict(top_k=20), "dot_router": dict(router_scale=0.0), "T0.01": dict(router_temperature=0.01),
          "3tasks_notag": dict(use_tag=False)}.get(case, {})
    tasks = 1 if case == "1task" else 3
    layer = make_layer(tasks, seed=seed, bias=case != "no_bias", **kw)
    layer.train(case != "3tasks_eval")
    x = torch.randn(2, 8, 5, dtype=torch.float64, requires_grad=True)
    tag = layer.training and layer.dymoe_config.use_tag
    if case == "3tasks_tag":  # the seeds exercise both TAG groups
        use_new = new_token_mask(cosine_logits(x, torch.cat(list(layer.dymoe_router.values()))), 6, 0.1)
        assert use_new.any() and not use_new.all()
    compare_with_naive(layer, x, tag)


def test_2d_and_3d_inputs_agree():
    layer = make_layer(2)
    x = torch.randn(3, 4, 5, dtype=torch.float64)
    ref.assert_close(layer(x).reshape(12, 4), layer(x.reshape(12, 5)))


@pytest.mark.parametrize("tasks_before", [1, 2])
def test_add_task_keeps_old_outputs_for_old_tokens_and_old_params_get_no_grad(tasks_before):
    layer = make_layer(tasks_before, seed=4, dtype=torch.float32)
    layer.weight.requires_grad_(False)
    layer.bias.requires_grad_(False)
    x = torch.randn(64, 5, requires_grad=True)
    layer.eval()
    with torch.no_grad():
        y_before = layer(x)
    old = [p for p in layer.dymoe_parameters()]
    key = layer.add_task(dtype=torch.float32)
    with torch.no_grad():
        layer.dymoe_B[key].normal_()
    layer.train()
    y_after = layer(x)
    use_new = new_token_mask(cosine_logits(x, torch.cat(list(layer.dymoe_router.values()))),
                             3 * tasks_before, layer.dymoe_config.tau)
    assert use_new.any() and not use_new.all()
    ref.assert_close(y_after[~use_new], y_before[~use_new], rtol=1e-6, atol=1e-6, what="old tokens")
    assert (y_after[use_new] - y_before[use_new]).abs().max() > 1e-3
    y_after.square().sum().backward()
    assert all(p.grad is None for p in old)
    new = [layer.dymoe_A[key], layer.dymoe_B[key], layer.dymoe_router[key]]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in new)


def test_bf16_input_routes_in_fp32(monkeypatch):
    seen = []
    real_gate = layer_mod.gate

    def spy(logits, *a, **k):
        seen.append(logits.dtype)
        return real_gate(logits, *a, **k)

    monkeypatch.setattr(layer_mod, "gate", spy)
    layer = make_layer(3, dtype=torch.float32, router_temperature=0.01)
    x = torch.randn(4, 6, 5)
    for banks_bf16 in (False, True):
        if banks_bf16:  # everything bf16 (HF --bf16 casts the whole model)
            layer = layer.to(torch.bfloat16)
        else:  # bf16 base, fp32 banks
            layer.weight.data = layer.weight.data.to(torch.bfloat16)
            layer.bias.data = layer.bias.data.to(torch.bfloat16)
        y = layer(x.to(torch.bfloat16))
        assert y.dtype == torch.bfloat16 and torch.isfinite(y.float()).all()
        y32 = make_layer(3, dtype=torch.float32, router_temperature=0.01)(x)
        assert (y.float() - y32).abs().max() < 0.05 * y32.abs().max()
    assert seen and all(d == torch.float32 for d in seen)


def test_never_nan_with_zero_and_huge_tokens():
    layer = make_layer(3, dtype=torch.float32, router_temperature=0.01)
    x = torch.randn(10, 5)
    x[0] = 0.0
    x[1] = 1e6
    x.requires_grad_(True)
    y = layer(x)
    y.sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters() if p.grad is not None)


def test_no_grad_cache_matches_grad_path_and_tracks_updates():
    layer = make_layer(4, dtype=torch.float64).eval()
    x = torch.randn(6, 5, dtype=torch.float64)
    y_grad = layer(x)
    with torch.no_grad():
        y1 = layer(x)
        assert layer._dymoe_cache  # frozen banks concatenated once for inference
        ref.assert_close(y1, y_grad)
        layer.dymoe_B["t1"].mul_(2.0)  # in-place edit of a frozen bank invalidates the cache
        y2 = layer(x)
    ref.assert_close(y2, naive(layer, x, tag=False))
    assert (y2 - y1).abs().max() > 1e-6
    layer.train()
    assert not layer._dymoe_cache
    with torch.no_grad():  # e.g. the first pass of a reentrant checkpoint: no cache while training
        layer(x)
    assert not layer._dymoe_cache


def test_bank_state_round_trip_and_errors():
    layer = make_layer(3, seed=5)
    state = layer.bank_state_dict()
    assert sorted(state) == sorted(f"{n}.t{i}" for n in ("dymoe_A", "dymoe_B", "dymoe_router") for i in range(3))
    assert sorted(layer.bank_state_dict(["t1"])) == ["dymoe_A.t1", "dymoe_B.t1", "dymoe_router.t1"]
    fresh = DyMoELinear(nn.Linear(5, 4, dtype=torch.float64), layer.dymoe_config)
    fresh.weight, fresh.bias = layer.weight, layer.bias
    assert fresh.load_banks(state, dtype=torch.float64) == 3
    assert all(not p.requires_grad for p in fresh.dymoe_parameters())
    x = torch.randn(5, 5, dtype=torch.float64)
    ref.assert_close(fresh.eval()(x), layer.eval()(x))
    assert fresh.add_task(dtype=torch.float64) == "t3"
    with pytest.raises(ValueError, match="already has"):
        fresh.load_banks(state)
    empty = lambda: DyMoELinear(nn.Linear(5, 4), layer.dymoe_config)  # noqa: E731
    with pytest.raises(ValueError, match="missing"):
        empty().load_banks({k: v for k, v in state.items() if k != "dymoe_B.t1"})
    with pytest.raises(ValueError, match="unexpected"):
        empty().load_banks({**state, "dymoe_A.extra": state["dymoe_A.t0"]})
    with pytest.raises(ValueError, match="shape"):
        empty().load_banks({**state, "dymoe_A.t0": torch.zeros(3, 5)})


def test_merge_raises_repr_and_to_linear():
    layer = make_layer(2)
    with pytest.raises(NotImplementedError, match="cannot be merged"):
        layer.merge()
    text = repr(layer)
    for part in ("tasks=2", "experts=6", "expert_rank=2", "top_k=4"):
        assert part in text
    lin = layer.to_linear()
    assert type(lin) is nn.Linear and lin.weight is layer.weight and lin.bias is layer.bias
    with pytest.raises(ValueError, match="features"):
        layer(torch.randn(3, 7, dtype=torch.float64))


@pytest.mark.parametrize("dense", [False, True])
def test_autocast_forward_routes_in_fp32(monkeypatch, dense):
    """The plain ``--bf16 True`` layout (bf16 base, fp32 banks: a frozen one and a trainable one) under HF's CPU
    autocast: the forward runs (the banks' in-place accumulation used to fail with 'self and mat2 must have the
    same dtype' from task 2 on), the gate sees exactly the logits of an fp32 computation outside autocast, the
    output is bf16 and within bf16 rounding of the fp32 layer, and the trainable fp32 bank gets an fp32 gradient."""
    from llava_dymoe.core.routing import cosine_logits_parts

    if dense:
        monkeypatch.setenv(layer_mod.DENSE_ENV, "1")
    seen = []
    real_gate = layer_mod.gate
    monkeypatch.setattr(layer_mod, "gate", lambda logits, *a, **k: seen.append(logits) or real_gate(logits, *a, **k))
    layer = make_layer(2, dtype=torch.float32, router_temperature=0.01, in_f=48, out_f=32)
    x32 = torch.randn(40, 48)
    y32 = layer(x32).detach()
    seen.clear()
    layer.weight.data = layer.weight.data.to(torch.bfloat16)
    layer.bias.data = layer.bias.data.to(torch.bfloat16)
    x = x32.to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    assert y.dtype == torch.bfloat16
    ref_logits = cosine_logits_parts(x, [layer.dymoe_router[k] for k in layer.task_keys()],
                                     layer.dymoe_config.router_scale)
    assert len(seen) == 1 and seen[0].dtype == torch.float32 and torch.equal(seen[0], ref_logits)
    assert (y.float() - y32).abs().max() < 0.02 * y32.abs().max()  # bf16 inputs and products: ~2^-8 per op
    y.float().sum().backward()
    grad = layer.dymoe_B["t1"].grad
    assert grad is not None and grad.dtype == torch.float32 and torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert layer.dymoe_B["t0"].grad is None
