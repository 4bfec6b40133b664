"""RoutingStats: hand-built routers with hand-computed values; outputs bitwise unchanged with stats on."""
import math

import pytest
import torch
from torch import nn

from llava_dymoe.config import DyMoEConfig
from llava_dymoe.core import AuxCollector, DyMoEContext, DyMoELinear, RoutingStats, attach_context, attach_stats

R2 = math.sqrt(2.0)


def hand_layer(top_k=1, tau=0.2):
    """2 tasks x 2 experts on 2 features; routers: t0 = [1,0], [0,1]; t1 = [1,1], [-1,0]."""
    base = nn.Linear(2, 3, dtype=torch.float64)
    layer = DyMoELinear(base, DyMoEConfig(experts_per_task=2, expert_rank=1, top_k=top_k, lora_dropout=0.0,
                                          router_temperature=1.0, tau=tau))
    for _ in range(2):
        layer.add_task(dtype=torch.float64)
    with torch.no_grad():
        layer.dymoe_router["t0"].copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
        layer.dymoe_router["t1"].copy_(torch.tensor([[1.0, 1.0], [-1.0, 0.0]]))
    return layer.eval()


# tokens: [1,0] (old: c_old=1, c_new=1/sqrt2), [0,1] (old), [1,1] (new: c_old=1/sqrt2, c_new=1),
# [1,0.2]: c_old = 1/sqrt(1.04), c_new = 1.2/(sqrt2*sqrt(1.04)) -> D_rel = 1 - 1.2/sqrt2 ~ 0.1515 (ambiguous)
X = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, 0.2]], dtype=torch.float64)
D_AMB = 1 - 1.2 / R2
C_OLD = [1.0, 1.0, 1 / R2, 1 / math.sqrt(1.04)]
C_NEW = [1 / R2, 1 / R2, 1.0, 1.2 / (R2 * math.sqrt(1.04))]
D_REL = [1 - 1 / R2, 1 - 1 / R2, 1 - 1 / R2, D_AMB]


def test_hand_computed_top1():
    layer = hand_layer()
    stats = RoutingStats()
    assert attach_stats(layer, stats) == 1
    with torch.no_grad():
        layer(X)
    row = stats.summary()[""]
    assert row["n_tokens"] == 4
    assert row["bank_mass"] == pytest.approx([3.0, 1.0])       # top-1: e0, e1, e2, e0
    assert row["bank_share"] == pytest.approx([0.75, 0.25])
    assert row["top1_hist"] == [2, 1, 1, 0]
    assert row["mean_c_old"] == pytest.approx(sum(C_OLD) / 4)
    assert row["mean_c_new"] == pytest.approx(sum(C_NEW) / 4)
    assert row["mean_d_rel"] == pytest.approx(sum(D_REL) / 4)
    assert (row["frac_new"], row["frac_old"], row["frac_ambiguous"]) == pytest.approx((0.25, 0.5, 0.25))
    assert row["mean_g_new"] == pytest.approx(0.25)


def test_soft_gate_mass_tau_valid_and_kinds():
    layer = hand_layer(top_k=4)  # softmax over all 4 logits at T=1
    ctx = DyMoEContext(valid_mask=torch.tensor([[True, True, True, False]]),
                       token_kind=torch.tensor([[0, 1, 2, 2]]))
    attach_context(layer, ctx)
    stats = RoutingStats(tau=0.5)  # every D_rel above is < 0.5: all ambiguous
    attach_stats(layer, stats)
    with torch.no_grad():
        layer(X.view(1, 4, 2))
    p = torch.softmax(torch.tensor([C_OLD[0], 0.0, C_NEW[0], -1.0]), 0)   # token [1,0]
    q = torch.softmax(torch.tensor([0.0, 1.0, 1 / R2, 0.0]), 0)           # token [0,1]
    s = torch.softmax(torch.tensor([1 / R2, 1 / R2, 1.0, -1 / R2]), 0)    # token [1,1]
    mass = p + q + s
    row = stats.summary()[""]
    assert row["n_tokens"] == 3
    assert row["bank_mass"] == pytest.approx([float(mass[:2].sum()), float(mass[2:].sum())])
    assert row["frac_ambiguous"] == 1.0 and row["frac_new"] == 0.0 and row["frac_old"] == 0.0
    kinds = row["by_kind"]
    assert set(kinds) == {"image", "instruction", "answer"}
    assert kinds["image"]["n_tokens"] == 1 and kinds["answer"]["n_tokens"] == 1
    assert kinds["answer"]["bank_mass"] == pytest.approx([float(s[:2].sum()), float(s[2:].sum())])
    assert kinds["instruction"]["mean_c_old"] == pytest.approx(1.0)


def test_one_bank_has_no_types_and_window_pauses():
    layer = hand_layer()
    layer.dymoe_A.pop("t1"), layer.dymoe_B.pop("t1"), layer.dymoe_router.pop("t1")
    stats = RoutingStats(active=False)
    attach_stats(layer, stats)
    with torch.no_grad():
        layer(X)
        assert stats.summary() == {}
        with stats.window():
            layer(X)
    row = stats.summary()[""]
    assert row["bank_mass"] == pytest.approx([4.0]) and "frac_new" not in row
    total = RoutingStats()
    total.merge(stats)
    total.merge(stats)
    assert total.summary()[""]["n_tokens"] == 8


def test_keep_top1_and_layer_mean():
    layer = hand_layer()
    stats = RoutingStats(keep_top1=True)
    attach_stats(layer, stats)
    with torch.no_grad():
        layer(X)
    assert stats.top1_tokens[""][0].tolist() == [0, 1, 2, 0]
    assert stats.layer_mean()["frac_old"] == pytest.approx(0.5)


@pytest.mark.parametrize("training", [False, True])
def test_outputs_bitwise_unchanged(training):
    torch.manual_seed(0)
    base = nn.Linear(16, 8)
    layer = DyMoELinear(base, DyMoEConfig(experts_per_task=4, expert_rank=2, top_k=3, lora_dropout=0.1))
    for _ in range(3):
        key = layer.add_task()
        with torch.no_grad():
            layer.dymoe_B[key].normal_()
    layer.set_trainable_tasks([key])
    layer.train(training)
    attach_context(layer, DyMoEContext(collector=AuxCollector()))
    x = torch.randn(2, 5, 16, requires_grad=True)
    results = []
    for stats in (None, RoutingStats(keep_top1=True)):
        attach_stats(layer, stats)
        torch.manual_seed(1)
        y = layer(x)
        grads = torch.autograd.grad(y.square().sum(), [x, layer.dymoe_router[key], layer.dymoe_A[key]])
        results.append((y.detach(), grads))
    assert torch.equal(results[0][0], results[1][0])
    for a, b in zip(results[0][1], results[1][1]):
        assert torch.equal(a, b)


def test_bad_tau():
    with pytest.raises(ValueError, match="tau"):
        RoutingStats(tau=-1)


def test_d_rel_histogram():
    layer = hand_layer()
    stats = RoutingStats(d_rel_bins=20)  # bins of width 0.1 over [0, 2]
    attach_stats(layer, stats)
    with torch.no_grad():
        layer(X)
    hist = stats.summary()[""]["d_rel_hist"]
    assert len(hist) == 20 and hist[1] == 1 and hist[2] == 3 and sum(hist) == 4
