"""core/rules: the routing rules behind one interface.  Bit-identity with the branch chain they replaced
(``legacy_forward``) for the paper's recipe, IncMoELoRA, the token cascade and the sequence bank; the ``given``
rule against a naive per-token reference; the factory."""
import os
import sys

import pytest
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(__file__))
import naive_ref as ref  # noqa: E402
from legacy_forward import legacy_forward  # noqa: E402

from llava_dymoe.config import DyMoEConfig  # noqa: E402
from llava_dymoe.core import AuxCollector, DyMoEContext, DyMoELinear, attach_context  # noqa: E402
from llava_dymoe.core.rules import (GivenRule, KeyScores, KeySelectorRule, PaperRule, RouterScores,  # noqa: E402
                                    SequenceBankRule, TokenCascadeRule, make_rule)
from llava_dymoe.methods import get_method  # noqa: E402

SMALL = dict(experts_per_task=3, expert_rank=2, top_k=4, lora_dropout=0.0, router_temperature=0.3, tau=0.1)


def build(cfg, tasks, seed, dtype):
    torch.manual_seed(seed)
    layer = DyMoELinear(nn.Linear(6, 5, dtype=dtype), cfg)
    for _ in range(tasks):
        key = layer.add_task(dtype=dtype)
        with torch.no_grad():
            layer.dymoe_B[key].normal_()
            if "dymoe_key" in layer.bank_names:
                layer.dymoe_key[key].normal_()
    return layer


RECIPES = [("dymoe", {}), ("incmoelora", {}), ("dymoe_cascade_warm_spetag", {}),
           ("dymoe_cascade_warm_spetag", dict(bank_keys="refreshed")), ("dymoe_seqbank", {}),
           ("dymoe_seqbank", dict(bank_keys="router"))]


@pytest.mark.parametrize("dtype", [torch.float32])
@pytest.mark.parametrize("method,extra", RECIPES)
@pytest.mark.parametrize("training", [True, False])
def test_rules_reproduce_the_branch_chain_bit_for_bit(method, extra, training, dtype):
    """Outputs and gradients (input, trainable banks; aux terms injected while training) of the refactored layer
    are bitwise those of the branch chain it replaced, on fixed inputs (3 banks, padding in the batch)."""
    cfg = get_method(method).build_config({**SMALL, **extra})
    layer = build(cfg, 3, 0, dtype).train(training)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 7, 6, generator=g).to(dtype).requires_grad_(True)
    valid = torch.rand(3, 7, generator=g) > 0.3
    go = torch.randn(3, 7, 5, generator=g).to(dtype)
    params = [x] + [p for p in layer.parameters() if p.requires_grad]
    results = []
    for run in (lambda: layer(x), lambda: legacy_forward(layer, x, {})):
        ctx = DyMoEContext(valid_mask=valid, num_modules=2, collector=AuxCollector())
        attach_context(layer, ctx)
        with ctx.collector.window():
            y = run()
        results.append((y.detach(), torch.autograd.grad(y, params, go), ctx.collector.summary()))
    (y1, g1, s1), (y2, g2, s2) = results
    assert torch.equal(y1, y2)
    assert all(torch.equal(a, b) for a, b in zip(g1, g2))
    assert s1 == s2


def test_the_bit_identity_test_can_fail():
    """The comparison above sees a routing change: the legacy chain with another tau differs."""
    cfg = get_method("dymoe").build_config(SMALL)
    layer = build(cfg, 3, 0, torch.float64).train()
    x = torch.randn(3, 7, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = layer(x)
    cfg.tau = 0.0
    assert not torch.equal(y, legacy_forward(layer, x, {}))


@pytest.mark.parametrize("fields,rule,scorer", [
    (dict(), PaperRule, None),
    (dict(assign_rule="cascade"), TokenCascadeRule, RouterScores),
    (dict(assign_rule="cascade", router_init="centroids", bank_keys="fitted"), TokenCascadeRule, KeyScores),
    (dict(assign_rule="cascade", bank_scope="sequence"), SequenceBankRule, RouterScores),
    (dict(assign_rule="cascade", bank_scope="sequence", router_init="centroids", bank_keys="refreshed"),
     SequenceBankRule, KeyScores),
    (dict(assign_rule="given"), GivenRule, None),
    (dict(assign_rule="given", bank_scope="sequence", bank_keys="fitted"), KeySelectorRule, KeyScores)])
def test_the_config_picks_the_rule(fields, rule, scorer):
    got = make_rule(DyMoEConfig(**fields))
    assert type(got) is rule
    if scorer is not None:
        assert type(got.scorer) is scorer


def test_a_layer_follows_a_rule_change_of_its_shared_config():
    cfg = DyMoEConfig(**SMALL)
    layer = build(cfg, 2, 0, torch.float64).eval()
    layer(torch.randn(1, 3, 6, dtype=torch.float64))
    assert type(layer._rule()) is PaperRule
    cfg.assign_rule = "cascade"
    assert type(layer._rule()) is TokenCascadeRule


# ---------------------------------------------------------------- assign_rule="given"
def naive_given(layer, x, weights):
    """Per token: sum over banks b of weights[seq, b] * the top-min(k, ept) softmax of the bank's own logits."""
    cfg, ept, r = layer.dymoe_config, layer.experts_per_task, layer.expert_rank
    keys = layer.task_keys()
    routers = torch.cat([layer.dymoe_router[k] for k in keys])
    b_, s_ = x.shape[:2]
    outs = []
    for n in range(b_ * s_):
        xn = x.reshape(-1, x.shape[-1])[n]
        z = ref.cosine(xn[None], routers, cfg.router_scale)[0]
        y = layer.weight @ xn + layer.bias
        for b, k in enumerate(keys):
            p = ref.gate_row(z[b * ept:(b + 1) * ept], min(cfg.top_k, ept), cfg.router_temperature)
            for e in range(ept):
                sl = slice(e * r, (e + 1) * r)
                y = y + layer.scaling * weights[n // s_, b] * p[e] * (layer.dymoe_B[k][:, sl] @ (layer.dymoe_A[k][sl] @ xn))
        outs.append(y)
    return torch.stack(outs).reshape(b_, s_, -1)


@pytest.mark.parametrize("top_k", [2, 5])
def test_given_rule_at_inference_matches_the_naive_reference(top_k):
    """Values and gradients against the naive per-token mixture; a bank of weight 0 gets exact zeros."""
    layer = build(DyMoEConfig(**{**SMALL, "top_k": top_k, "assign_rule": "given"}), 3, 2, torch.float64).eval()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 4, 6, dtype=torch.float64, generator=g, requires_grad=True)
    weights = torch.tensor([[0.0, 1.0, 0.0], [0.2, 0.5, 0.3], [0.0, 0.0, 1.0]], dtype=torch.float64)
    ctx = DyMoEContext(bank_weights=weights)
    attach_context(layer, ctx)
    from llava_dymoe.core import RoutingStats, attach_stats
    stats = RoutingStats()
    attach_stats(layer, stats)
    y = layer(x)
    y_ref = naive_given(layer, x, weights)
    ref.assert_close(y, y_ref, rtol=1e-9, atol=1e-11, what="output")
    go = torch.randn(y.shape, dtype=y.dtype, generator=g)
    params = [x] + list(layer.dymoe_parameters())
    for p in layer.dymoe_parameters():
        p.requires_grad_(True)
    y = layer(x)
    for a, b in zip(torch.autograd.grad(y, params, go), torch.autograd.grad(naive_given(layer, x, weights), params, go)):
        ref.assert_close(a, b, rtol=1e-9, atol=1e-11, what="grad")


def test_given_gate_is_exactly_zero_where_the_bank_weight_is_zero():
    from llava_dymoe.core.routing import banked_gate, gate
    z = torch.randn(4, 9, generator=torch.Generator().manual_seed(0))
    w = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.3, 0.7], [0.0, 0.0, 1.0], [0.5, 0.5, 0.0]])
    g = banked_gate(z, 3, 2, 0.5, w)
    assert torch.equal(g.view(4, 3, 3).amax(2) > 0, w > 0)
    assert torch.allclose(g.view(4, 3, 3).sum(2), w)
    assert torch.equal(g[0, :3], gate(z[:1, :3], 2, 0.5)[0])  # one-hot: the bank's own top-k gate


def test_given_rule_trains_only_the_newest_bank_and_calls_every_token_new():
    """While training every token routes inside the newest bank (the gate is its top-k softmax), bank_weights
    ignored; TAG's new share is 1 and frozen banks run on no token."""
    layer = build(DyMoEConfig(**{**SMALL, "assign_rule": "given"}), 3, 4, torch.float64)
    layer.set_trainable_tasks(["t2"])
    layer.train()
    x = torch.randn(2, 5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    ctx = DyMoEContext(collector=AuxCollector(), bank_weights=torch.tensor([[1.0, 0.0, 0.0]] * 2))
    attach_context(layer, ctx)
    with ctx.collector.window():
        y = layer(x)
    assert ctx.collector.summary()["tag_new_frac"] == 1.0
    ref.assert_close(y, naive_given(layer, x, torch.tensor([[0.0, 0.0, 1.0]] * 2, dtype=torch.float64)),
                     rtol=1e-9, atol=1e-11, what="training")


def test_given_rule_keeps_the_rows_while_decoding_and_refuses_without_them():
    layer = build(DyMoEConfig(**{**SMALL, "assign_rule": "given"}), 2, 6, torch.float64).eval()
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    attach_context(layer, DyMoEContext(bank_weights=w))
    step = torch.randn(2, 1, 6, dtype=torch.float64)
    ref.assert_close(layer(step), naive_given(layer, step, w), rtol=1e-9, atol=1e-11, what="decoding step")
    with pytest.raises(ValueError, match=r"bank_weights has shape \(2, 2\), expected \[3, 2\]"):
        layer(torch.randn(3, 1, 6, dtype=torch.float64))
    attach_context(layer, DyMoEContext())
    with pytest.raises(ValueError, match="DyMoEContext.bank_weights is None"):
        layer(step)
    attach_context(layer, None)
    with pytest.raises(ValueError, match="no DyMoEContext is attached"):
        layer(step)


@pytest.mark.parametrize("kw,match", [(dict(router="none", use_tag=False, c_exc=0.0, c_spe=0.0), "needs a router"),
                                      (dict(expand=False), "needs a router"),
                                      (dict(bank_scope="sequence"), "needs --dymoe_bank_keys fitted"),
                                      (dict(bank_scope="sequence", bank_keys="refreshed"), "key_selector"),
                                      (dict(bank_scope="sequence", bank_keys="fitted", task_selector="hide"),
                                       "--dymoe_task_selector none"),
                                      (dict(bank_keys="fitted"), "--dymoe_bank_scope sequence"),
                                      (dict(task_selector="shortlist"), "the key_selector layout"),
                                      (dict(bank_scope="sequence", bank_keys="fitted", task_selector="shortlist",
                                            selector_shortlist=0), "selector_shortlist")])
def test_given_rule_config_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        DyMoEConfig(assign_rule="given", **kw)


# ---------------------------------------------------------------- key_selector (given + sequence)
KEY_SELECTOR = {**SMALL, "assign_rule": "given", "bank_scope": "sequence", "bank_keys": "fitted"}


def _key_rows(layer):
    return torch.cat([layer.dymoe_key[k] for k in layer.task_keys()])


def test_key_selector_at_inference_is_the_given_rule_on_the_naive_sequence_banks():
    """Values and input gradients: each sequence gets the bank of the naive per-sequence decision (mean over its
    prompt tokens of each bank's best cosine to the keys, the cascade at margin 0), weight 1, and the gate inside
    it that oracle_bank uses; a decoding step that continues the prompt's cache keeps the prompt's bank."""
    layer = build(DyMoEConfig(**KEY_SELECTOR), 3, 7, torch.float64).eval()
    g = torch.Generator().manual_seed(8)
    x = torch.randn(4, 6, 6, dtype=torch.float64, generator=g, requires_grad=True)
    valid = torch.ones(4, 6, dtype=torch.bool)
    valid[0, 4:] = valid[2, :2] = False  # right and left padding
    ctx = DyMoEContext(valid_mask=valid)
    ctx.past_len = 0
    attach_context(layer, ctx)
    banks = ref.sequence_banks(x.detach(), _key_rows(layer), 3, 0.0, valid=valid)[::6]
    assert len(set(banks)) > 1  # the test distinguishes banks
    weights = torch.nn.functional.one_hot(torch.tensor(banks), 3).to(torch.float64)
    y = layer(x)
    y_ref = naive_given(layer, x, weights)
    ref.assert_close(y, y_ref, rtol=1e-9, atol=1e-11, what="output")
    go = torch.randn(y.shape, dtype=y.dtype, generator=g)
    ref.assert_close(torch.autograd.grad(y, x, go)[0], torch.autograd.grad(y_ref, x, go)[0], rtol=1e-9, atol=1e-11,
                     what="input grad")
    ctx.past_len = 6  # the next token of the same four sequences
    step = torch.randn(4, 1, 6, dtype=torch.float64, generator=g)
    ctx.valid_mask = None
    ref.assert_close(layer(step), naive_given(layer, step, weights), rtol=1e-9, atol=1e-11, what="decoding step")


def test_key_selector_trains_the_newest_bank_alone_and_never_reads_its_keys():
    """While training: the given rule's output (every token in the newest bank), whatever the keys say."""
    layer = build(DyMoEConfig(**KEY_SELECTOR), 3, 9, torch.float64)
    layer.set_trainable_tasks(["t2"])
    layer.train()
    x = torch.randn(2, 5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(10))
    ctx = DyMoEContext(collector=AuxCollector())
    attach_context(layer, ctx)
    newest = torch.tensor([[0.0, 0.0, 1.0]] * 2, dtype=torch.float64)
    with ctx.collector.window():
        y = layer(x)
    assert ctx.collector.summary()["tag_new_frac"] == 1.0
    ref.assert_close(y, naive_given(layer, x, newest), rtol=1e-9, atol=1e-11, what="training")
    with torch.no_grad():
        for k in layer.task_keys():
            layer.dymoe_key[k].normal_()
    ref.assert_close(layer(x), y, rtol=0, atol=0, what="training with other keys")


def test_key_selector_with_one_bank_is_that_bank():
    layer = build(DyMoEConfig(**KEY_SELECTOR), 1, 11, torch.float64).eval()
    x = torch.randn(2, 3, 6, dtype=torch.float64)
    attach_context(layer, DyMoEContext())
    ref.assert_close(layer(x), naive_given(layer, x, torch.ones(2, 1, dtype=torch.float64)), rtol=1e-9, atol=1e-11,
                     what="one bank")


def test_anchored_keys_choose_only_among_the_shortlisted_banks():
    """With a shortlist in ``ctx.bank_weights`` (anchored_keys): each sequence gets the naive decision walked over its
    shortlisted banks only (values against the naive given rule on those one-hot rows); a shortlist of every bank is
    key_selector's answer; a ragged or missized shortlist is refused."""
    cfg = DyMoEConfig(**{**KEY_SELECTOR, "task_selector": "shortlist"})
    layer = build(cfg, 4, 12, torch.float64).eval()
    g = torch.Generator().manual_seed(13)
    x = torch.randn(5, 6, 6, dtype=torch.float64, generator=g)
    valid = torch.ones(5, 6, dtype=torch.bool)
    valid[1, 4:] = False
    short = [[0, 2], [1, 3], [2, 3], [0, 1], [1, 2]]
    free = ref.sequence_banks(x, _key_rows(layer), 3, 0.0, valid=valid)[::6]
    banks = ref.sequence_banks(x, _key_rows(layer), 3, 0.0, valid=valid, shortlist=short)[::6]
    assert all(b in s for b, s in zip(banks, short)) and banks != free  # the shortlist changes some decisions
    w = torch.zeros(5, 4, dtype=torch.float64)
    for row, s in enumerate(short):
        w[row, s] = 1.0
    ctx = DyMoEContext(valid_mask=valid, bank_weights=w)
    attach_context(layer, ctx)
    want = torch.nn.functional.one_hot(torch.tensor(banks), 4).to(torch.float64)
    xg = x.clone().requires_grad_(True)
    y, y_ref = layer(xg), naive_given(layer, xg, want)
    ref.assert_close(y, y_ref, rtol=1e-9, atol=1e-11, what="shortlisted")
    go = torch.randn(y.shape, dtype=y.dtype, generator=g)
    ref.assert_close(torch.autograd.grad(y, xg, go)[0], torch.autograd.grad(y_ref, xg, go)[0], rtol=1e-9, atol=1e-11,
                     what="shortlisted input grad")
    layer.train().eval()  # drop the kept decision
    ctx.bank_weights = torch.ones(5, 4, dtype=torch.float64)
    every = torch.nn.functional.one_hot(torch.tensor(free), 4).to(torch.float64)
    ref.assert_close(layer(x), naive_given(layer, x, every), rtol=1e-9, atol=1e-11, what="every bank shortlisted")
    for bad, message in ((torch.ones(5, 3), r"expected \[5, 4\]"), (w[:, :4] * 0, "same number"),
                         (torch.cat([w[:4], torch.ones(1, 4, dtype=torch.float64)]), "same number")):
        layer.train().eval()
        ctx.bank_weights = bad
        with pytest.raises(ValueError, match=message):
            layer(x)
