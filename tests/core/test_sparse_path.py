"""The exact-savings path (``DyMoELinear._mix_sparse``) against the dense path (``_mix``, forced with
``LLAVA_DYMOE_DENSE=1``): values and gradients, training and eval, TAG on and off, every variant field of
``DyMoEConfig``, with and without the RSR / balance / orthogonality gradients injected.

The thresholds that pick gathered rows are lowered so that these small inputs take every branch (gathered
groups, split runs, skipped banks); fp64 keeps the comparison tight (the maths is the same, only the order
of float operations differs).
"""
import os
import sys

import pytest
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(__file__))
import naive_ref as ref  # noqa: E402

import llava_dymoe.core.layer as layer_mod  # noqa: E402
from llava_dymoe.config import DyMoEConfig  # noqa: E402
from llava_dymoe.core import DyMoEContext, DyMoELinear, attach_context  # noqa: E402

SMALL = dict(experts_per_task=3, expert_rank=2, top_k=4, lora_dropout=0.0, router_temperature=0.3, tau=0.1,
             rsr_temperature=0.2)

VARIANTS = {
    "paper": {},
    "no_tag": dict(use_tag=False),
    "cascade": dict(assign_rule="cascade"),
    "spe_tag": dict(spe_target="tag"),
    "distance": dict(tag_gap="distance"),
    "cascade_distance": dict(assign_rule="cascade", tag_gap="distance"),
    "balance": dict(c_aux=0.3, top_k=2),
    "orth": dict(c_orth=0.5),
    "dropout": dict(lora_dropout=0.2),
    "top1": dict(top_k=1),
    "T0.01": dict(router_temperature=0.01),
    "linear_router": dict(router="linear", use_tag=False, c_exc=0.0, c_spe=0.0),
    "lora_sum": dict(router="none", use_tag=False, c_exc=0.0, c_spe=0.0),
}


@pytest.fixture
def gather_everything(monkeypatch):
    """Gather any bank used by fewer than all tokens, split every spread run, at any token count."""
    monkeypatch.setattr(layer_mod, "GATHER_MIN_TOKENS", 0)
    monkeypatch.setattr(layer_mod, "GATHER_ROW_COST", 0)
    monkeypatch.setattr(layer_mod, "GATHER_MIN_RANK", 0)
    monkeypatch.setattr(layer_mod, "SPLIT_MAX_SHARE", 0.9)


def make_layer(tasks, seed, bias=True, in_f=6, out_f=5, dtype=torch.float64, **kw):
    torch.manual_seed(seed)
    layer = DyMoELinear(nn.Linear(in_f, out_f, bias=bias, dtype=dtype), DyMoEConfig(**{**SMALL, **kw}))
    layer.weight.requires_grad_(False)
    for _ in range(tasks):
        key = layer.add_task(dtype=dtype)
        with torch.no_grad():
            layer.dymoe_B[key].normal_()
    return layer


def run(layer, x, dense, monkeypatch, seed=7, go=None):
    """(output, grads of x and every trainable parameter) with the dense or the sparse path."""
    monkeypatch.setenv(layer_mod.DENSE_ENV, "1" if dense else "0")
    assert layer_mod.dense_forced() is dense
    params = [x] * x.requires_grad + [p for p in layer.parameters() if p.requires_grad]
    torch.manual_seed(seed)  # the same dropout draw for both paths
    y = layer(x)
    if go is None:
        go = torch.randn_like(y)
    if not y.requires_grad:
        return y, []
    return y, torch.autograd.grad((y * go).sum(), params, allow_unused=True)


def compare(layer, x, monkeypatch, rtol=1e-10, atol=1e-12):
    go = torch.randn(*x.shape[:-1], layer.out_features, dtype=x.dtype)
    y_d, g_d = run(layer, x, True, monkeypatch, go=go)
    y_s, g_s = run(layer, x, False, monkeypatch, go=go)
    ref.assert_close(y_s, y_d, rtol, atol, what="output")
    assert len(g_s) == len(g_d)
    for a, b in zip(g_s, g_d):
        assert (a is None) == (b is None)
        if a is not None:
            ref.assert_close(a, b, rtol, atol, what="grad")
    return y_s


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("tasks,training,context", [(1, True, True), (3, True, False), (3, True, True),
                                                    (3, False, False), (4, True, True), (4, False, True)])
def test_sparse_equals_dense_values_and_gradients(variant, tasks, training, context, gather_everything,
                                                  monkeypatch):
    for seed in (0, 1):
        layer = make_layer(tasks, seed, **VARIANTS[variant])
        layer.train(training)
        if context:  # RSR / balance / orthogonality gradients injected (rho = 1, two accumulation steps)
            attach_context(layer, DyMoEContext(rho=1.0, grad_accum=2, num_modules=3))
        x = torch.randn(3, 11, 6, dtype=torch.float64, requires_grad=True)
        compare(layer, x, monkeypatch)
        with torch.no_grad():  # inference / the first pass of a reentrant checkpoint
            y_d = run(layer, x, True, monkeypatch)[0]
            ref.assert_close(run(layer, x, False, monkeypatch)[0], y_d, 1e-10, 1e-12, what="no-grad output")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_default_thresholds_on_a_larger_batch(seed, monkeypatch):
    """Default GATHER_* values, 300 tokens (>= GATHER_MIN_TOKENS): training with TAG gathers the new bank."""
    layer = make_layer(3, seed, in_f=16, out_f=8, experts_per_task=4, top_k=4, tau=0.05)
    layer.train()
    attach_context(layer, DyMoEContext(rho=0.5))
    x = torch.randn(300, 16, dtype=torch.float64, requires_grad=True)
    compare(layer, x, monkeypatch)


def test_all_tokens_old_still_gives_the_new_bank_zero_grads_and_the_aux_gradient(gather_everything, monkeypatch):
    """New router rows = copies of old ones: c_new <= c_old, no token is new, so the trainable bank runs on 0
    rows; its A/B get zero gradients (not None, as with the dense path: optimizers and ZeRO see the same
    parameters) and the RSR losses' injected gradient still reaches the new router rows."""
    layer = make_layer(3, 0)
    with torch.no_grad():
        layer.dymoe_router["t2"].copy_(layer.dymoe_router["t0"])
    layer.train()
    attach_context(layer, DyMoEContext(rho=1.0))
    x = torch.randn(20, 6, dtype=torch.float64, requires_grad=True)
    compare(layer, x, monkeypatch)
    _, grads = run(layer, x, False, monkeypatch)
    g_a, g_b, g_r = grads[-3:]  # the trainable bank's A, B, router rows
    assert torch.all(g_a == 0) and torch.all(g_b == 0)
    assert g_r.abs().sum() > 0  # the RSR losses' injected gradient


def test_unused_frozen_bank_is_not_computed(monkeypatch):
    """Eval: a bank whose router rows point away from every token gets no weight, so it is skipped: even a
    NaN in its A does not reach the output (the dense path multiplies it by 0 and gets NaN)."""
    layer = make_layer(3, 0, top_k=3, router_temperature=0.01)
    layer.eval()
    u = torch.randn(6, dtype=torch.float64)
    x = u + 0.05 * torch.randn(9, 6, dtype=torch.float64)
    with torch.no_grad():
        layer.dymoe_router["t1"].copy_(-u.expand(3, 6) + 0.01 * torch.randn(3, 6, dtype=torch.float64))
        layer.dymoe_router["t2"].copy_(u.expand(3, 6) + 0.3 * torch.randn(3, 6, dtype=torch.float64))
        y_ok = run(layer, x, True, monkeypatch)[0].detach()
        layer.dymoe_A["t1"][0, 0] = float("nan")
        assert torch.isnan(run(layer, x, True, monkeypatch)[0]).any()
        y = run(layer, x, False, monkeypatch)[0]
    assert torch.isfinite(y).all()
    ref.assert_close(y, y_ok, 1e-10, 1e-12)


def test_sparse_path_groups(monkeypatch):
    """``_sparse_groups``: trainable bank alone and always present, unused frozen banks dropped, runs of
    frozen banks merged, spread runs split, gathering only above the token floor and when the skipped rows
    outweigh the gathered ones (GATHER_ROW_COST = the bank rank here: (n - m) * banks > m)."""
    layer = make_layer(4, 0)
    monkeypatch.setattr(layer_mod, "GATHER_ROW_COST", layer.bank_rank)
    monkeypatch.setattr(layer_mod, "GATHER_MIN_RANK", 0)
    layer.train()
    n = 400
    used = torch.zeros(n, 4, dtype=torch.bool)
    used[:350, 0] = used[:350, 1] = True   # a dense run of two frozen banks
    used[:, 2] = False                     # an unused frozen bank
    used[350:, 3] = True                   # the trainable bank, 50 tokens
    counts = used.sum(0).tolist()
    assert layer._sparse_groups(used, counts) == [(0, 2, False), (3, 4, True)]
    with torch.no_grad():  # no grad: every bank frozen, the last one too (used by 50 of 400 -> gathered)
        assert layer._sparse_groups(used, counts) == [(0, 2, False), (3, 4, True)]
    spread = torch.zeros(n, 4, dtype=torch.bool)
    for t in range(4):  # cascade-like: every token in one bank
        spread[t * 100:(t + 1) * 100, t] = True
    with torch.no_grad():
        assert layer._sparse_groups(spread, spread.sum(0).tolist()) == [(t, t + 1, True) for t in range(4)]
    small = used[:40]  # below GATHER_MIN_TOKENS: nothing gathered, nothing split
    assert layer._sparse_groups(small, small.sum(0).tolist()) == [(0, 2, False), (3, 4, False)]


def test_env_switch_selects_the_dense_path(monkeypatch):
    layer = make_layer(2, 0).train()
    calls = []
    for name in ("_mix", "_mix_sparse"):
        real = getattr(DyMoELinear, name)
        monkeypatch.setattr(DyMoELinear, name, lambda self, *a, _n=name, _r=real: calls.append(_n) or _r(self, *a))
    x = torch.randn(4, 6, dtype=torch.float64)
    for value, want in (("1", "_mix"), ("true", "_mix"), ("0", "_mix_sparse"), ("", "_mix_sparse")):
        monkeypatch.setenv(layer_mod.DENSE_ENV, value)
        layer(x)
        assert calls[-1] == want
    monkeypatch.delenv(layer_mod.DENSE_ENV)
    layer(x)
    assert calls[-1] == "_mix_sparse"


def test_bf16_sparse_close_to_dense(gather_everything, monkeypatch):
    """bf16 base and banks (HF --bf16): the two paths agree to bf16 rounding."""
    layer = make_layer(3, 0, dtype=torch.float32).to(torch.bfloat16)
    layer.train()
    x = torch.randn(40, 6, dtype=torch.bfloat16)
    y_d = run(layer, x, True, monkeypatch)[0].float()
    y_s = run(layer, x, False, monkeypatch)[0].float()
    assert (y_s - y_d).abs().max() <= 2e-2 * y_d.abs().max()


def test_groups_below_the_minimum_rank_are_never_gathered_or_split(monkeypatch):
    """GATHER_MIN_RANK (default): single small banks run on every row, spread runs stay concatenated."""
    layer = make_layer(4, 0)
    spread = torch.zeros(400, 4, dtype=torch.bool)
    for t in range(4):
        spread[t * 100:(t + 1) * 100, t] = True
    with torch.no_grad():
        assert layer._sparse_groups(spread, spread.sum(0).tolist()) == [(0, 4, False)]
    monkeypatch.setattr(layer_mod, "GATHER_MIN_RANK", 0)
    monkeypatch.setattr(layer_mod, "GATHER_ROW_COST", 1)
    with torch.no_grad():
        assert layer._sparse_groups(spread, spread.sum(0).tolist()) == [(t, t + 1, True) for t in range(4)]
