"""The baselines' layer configurations (lora, moelora, olora) against independent references.

* ``lora``: the same forward and gradients as peft's own ``lora.Linear`` holding the same A and B;
* ``olora``: every bank summed with weight 1, and O-LoRA's orthogonality loss (value by hand, its
  gradient injected with the un-ramped, summed scale);
* ``moelora``: a dense softmax over dot-product gate logits, by hand per token.
"""
import math

import pytest
import torch
from torch import nn

from llava_dymoe.config import DyMoEConfig
from llava_dymoe.core import AuxCollector, DyMoEContext, DyMoELinear, orthogonality_loss
from llava_dymoe.methods import OLORA_LAMBDA, get_method

D_IN, D_OUT, N = 12, 10, 7


def _base(seed=0):
    torch.manual_seed(seed)
    return nn.Linear(D_IN, D_OUT)


def _fill(layer, seed=1):
    """Random non-zero B (a fresh bank has B = 0) for every bank."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for k in layer.task_keys():
            layer.dymoe_B[k].copy_(torch.randn(layer.dymoe_B[k].shape, generator=g) * 0.3)


def test_recipes_are_what_the_docstring_says():
    lora = get_method("lora").build_config()
    assert (lora.experts_per_task, lora.expert_rank, lora.router, lora.expand, lora.use_tag) == (1, 64, "none", False,
                                                                                                   False)
    assert lora.scaling == 2.0 and lora.c_orth == 0 and lora.c_exc == lora.c_spe == 0
    moe = get_method("moelora").build_config()
    assert (moe.experts_per_task, moe.expert_rank, moe.router, moe.router_temperature, moe.top_k, moe.expand) == \
        (16, 4, "linear", 1.0, 16, False)
    olora = get_method("olora").build_config()
    assert (olora.experts_per_task, olora.expert_rank, olora.lora_alpha, olora.router, olora.expand,
            olora.c_orth) == (1, 8, 16.0, "none", True, 0.5) and OLORA_LAMBDA == 0.5
    assert DyMoEConfig().router == "cosine" and DyMoEConfig().expand and DyMoEConfig().c_orth == 0.0


@pytest.mark.parametrize("bad, message", [
    ({"router": "softmax"}, "router must be one of"),
    ({"router": "none"}, "use_tag"),  # the paper's defaults route; 'none' has no scores for TAG/RSR
    ({"router": "none", "use_tag": False, "c_exc": 0.0, "c_spe": 0.0, "c_aux": 0.1}, "c_aux"),
    ({"c_orth": -1.0}, "c_orth must be >= 0"),
    ({"expand": "no"}, "expand must be a bool"),
])
def test_bad_baseline_settings_name_the_field(bad, message):
    with pytest.raises(ValueError, match=message):
        DyMoEConfig(**bad)


def test_lora_matches_peft_lora_values_and_gradients():
    from peft.tuners.lora import Linear as PeftLoraLinear

    cfg = get_method("lora").build_config({"expert_rank": 4, "lora_alpha": 8.0, "lora_dropout": 0.0})
    ours = DyMoELinear(_base(), cfg)
    ours.add_task()
    _fill(ours)
    ref = PeftLoraLinear(_base(), "default", r=4, lora_alpha=8, lora_dropout=0.0)
    with torch.no_grad():
        ref.lora_A["default"].weight.copy_(ours.dymoe_A["t0"])
        ref.lora_B["default"].weight.copy_(ours.dymoe_B["t0"])
    x = torch.randn(3, N, D_IN, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    w = torch.randn(3, N, D_OUT)
    for mode in ("train", "eval"):
        getattr(ours, mode)()
        getattr(ref, mode)()
        y, y_ref = ours(x), ref(x2)
        torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-6)
    (y * w).sum().backward()
    (y_ref * w).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours.dymoe_A["t0"].grad, ref.lora_A["default"].weight.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours.dymoe_B["t0"].grad, ref.lora_B["default"].weight.grad, rtol=1e-5, atol=1e-6)


def test_router_none_sums_every_bank_with_weight_one():
    cfg = get_method("olora").build_config({"lora_dropout": 0.0, "expert_rank": 3})
    layer = DyMoELinear(_base(), cfg)
    for _ in range(3):
        layer.add_task()
    _fill(layer)
    layer.eval()
    x = torch.randn(N, D_IN)
    with torch.no_grad():
        y = layer(x)
        want = torch.stack([
            layer.weight @ x[n] + layer.bias + sum(cfg.scaling * (layer.dymoe_B[k] @ (layer.dymoe_A[k] @ x[n]))
                                                   for k in layer.task_keys())
            for n in range(N)])
    torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-6)


def test_moelora_gate_is_a_dense_softmax_of_dot_products():
    cfg = get_method("moelora").build_config({"experts_per_task": 3, "top_k": 3, "expert_rank": 2,
                                              "lora_dropout": 0.0})
    layer = DyMoELinear(_base(), cfg)
    layer.add_task()
    _fill(layer)
    with torch.no_grad():
        layer.dymoe_router["t0"].mul_(3.0)  # logits of order 1: a non-trivial softmax
    x = torch.randn(N, D_IN, requires_grad=True)
    y = layer(x)
    r = cfg.expert_rank
    rows = []
    for n in range(N):
        logits = [float(x[n].detach() @ layer.dymoe_router["t0"][e].detach()) for e in range(3)]
        ex = [math.exp(v / cfg.router_temperature) for v in logits]
        g = [v / sum(ex) for v in ex]
        assert 0.05 < max(g) < 0.99  # dense and not one-hot: the reference is informative
        out = layer.weight @ x[n] + layer.bias
        for e in range(3):
            a, b = layer.dymoe_A["t0"][e * r:(e + 1) * r], layer.dymoe_B["t0"][:, e * r:(e + 1) * r]
            out = out + g[e] * cfg.scaling * (b @ (a @ x[n]))
        rows.append(out)
    torch.testing.assert_close(y, torch.stack(rows), rtol=1e-5, atol=1e-5)
    y.sum().backward()
    assert layer.dymoe_router["t0"].grad.abs().sum() > 0  # the gate learns


def test_orthogonality_loss_value_by_hand():
    g = torch.Generator().manual_seed(3)
    a_new, olds = torch.randn(2, 5, generator=g), [torch.randn(3, 5, generator=g), torch.randn(2, 5, generator=g)]
    want = 0.0
    for a in olds:
        for i in range(a_new.shape[0]):
            for j in range(a.shape[0]):
                want += abs(sum(float(a_new[i, k]) * float(a[j, k]) for k in range(5)))
    assert float(orthogonality_loss(a_new, olds)) == pytest.approx(want, rel=1e-6)
    assert float(orthogonality_loss(a_new, [])) == 0.0
    with pytest.raises(ValueError, match="old A must be"):
        orthogonality_loss(a_new, [torch.randn(2, 4)])


@pytest.mark.parametrize("rho, grad_accum", [(0.0, 1), (1.0, 2)])
def test_orthogonality_gradient_is_injected_unramped_and_summed(rho, grad_accum):
    cfg = get_method("olora").build_config({"lora_dropout": 0.0, "expert_rank": 2})
    layer = DyMoELinear(_base(), cfg)
    layer.add_task()
    layer.add_task()  # t0 frozen, t1 trainable
    _fill(layer)
    layer.train()
    ctx = DyMoEContext(rho=rho, grad_accum=grad_accum, num_modules=5, collector=AuxCollector())
    layer._dymoe_ctx = ctx
    x = torch.randn(N, D_IN)
    with ctx.collector.window():
        y = layer(x)
    logged = ctx.collector.summary(expected=1)
    y.sum().backward()
    got = layer.dymoe_A["t1"].grad.clone()

    # reference: the same forward without context, plus c_orth * orth / grad_accum as an explicit loss
    layer.dymoe_A["t1"].grad = None
    layer._dymoe_ctx = None
    a_new = layer.dymoe_A["t1"]
    orth = (a_new @ layer.dymoe_A["t0"].t()).abs().sum()
    (layer(x).sum() + cfg.c_orth * orth / grad_accum).backward()
    torch.testing.assert_close(got, layer.dymoe_A["t1"].grad, rtol=1e-5, atol=1e-6)
    assert logged["orth"] == pytest.approx(float(orth.detach()), rel=1e-5)
    assert layer.dymoe_A["t0"].grad is None


def test_frozen_last_bank_gets_no_orthogonality_term():
    cfg = get_method("olora").build_config({"lora_dropout": 0.0, "expert_rank": 2})
    layer = DyMoELinear(_base(), cfg)
    layer.add_task()
    layer.add_task()
    layer.set_trainable_tasks([])
    layer.train()
    layer._dymoe_ctx = DyMoEContext(collector=AuxCollector())
    assert layer._aux(None, 0, None) == []
