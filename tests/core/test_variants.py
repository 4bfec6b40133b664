"""The beyond-the-paper variants' maths (``assign_rule``, ``spe_target``, ``router_init``) against naive
per-token references, and the promise that the paper's recipe is unchanged unless a variant is set."""
import os
import sys

import pytest
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(__file__))
import naive_ref as ref  # noqa: E402

from llava_dymoe.config import DyMoEConfig  # noqa: E402
from llava_dymoe.core import DyMoEContext, DyMoELinear, attach_context, new_token_mask  # noqa: E402
from llava_dymoe.core.centroids import spherical_kmeans  # noqa: E402
from llava_dymoe.core.losses import rsr_losses, specialization_from_weights, rsr_weights  # noqa: E402
from llava_dymoe.core.routing import (bank_scores, cascade_assignment, relative_gap,  # noqa: E402
                                      sequence_cascade_assignment)
from llava_dymoe.methods import get_method  # noqa: E402

SMALL = dict(experts_per_task=3, expert_rank=2, top_k=4, lora_dropout=0.0, router_temperature=0.3, tau=0.1,
             rsr_temperature=0.2)


# ---------------------------------------------------------------- cascade assignment
@pytest.mark.parametrize("banks,tau,seed", [(2, 0.2, 0), (3, 0.1, 1), (4, 0.3, 2), (5, 0.05, 3)])
def test_cascade_assignment_matches_naive_per_token(banks, tau, seed):
    torch.manual_seed(seed)
    z = torch.randn(300, banks * 4) * 0.4
    z[:10] = z[:10].abs()  # all-positive rows
    z[10:20] = -z[10:20].abs()  # all-negative rows: the relative gap uses |.|
    got = cascade_assignment(z, 4, tau)
    want = torch.tensor([ref.cascade_bank(z[n], 4, tau) for n in range(z.shape[0])])
    assert torch.equal(got, want)
    assert len(set(got.tolist())) == banks  # every bank is reached on these draws (the test can fail)


def test_cascade_with_two_groups_is_tags_decision_and_one_bank_is_bank_zero():
    torch.manual_seed(4)
    z = torch.randn(500, 12) * 0.3
    for n_banks_old in (1, 2):  # old group = banks 0..k-1, new = the last bank
        zz = z[:, :4 * (n_banks_old + 1)]
        new = cascade_assignment(zz, 4, 0.2) == n_banks_old
        assert torch.equal(new, new_token_mask(zz, 4 * n_banks_old, 0.2))
    assert torch.equal(cascade_assignment(z[:, :4], 4, 0.2), torch.zeros(500, dtype=torch.long))


def test_cascade_boundary_is_strict_and_zero_scores_stay_in_bank_zero():
    # bank scores (0.5, 0.625): D_rel = 0.125/0.625 = 0.2 exactly -> not claimed at tau 0.2 (TAG's '>')
    z = torch.tensor([[0.5, 0.1, 0.625, 0.0], [0.5, 0.1, 0.626, 0.0], [0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    assert cascade_assignment(z, 2, 0.2).tolist() == [0, 1, 0]
    assert cascade_assignment(z, 2, 0.2).tolist() == [ref.cascade_bank(z[n], 2, 0.2) for n in range(3)]
    assert bank_scores(z, 2).tolist() == [[0.5, 0.625], [0.5, 0.626], [0.0, 0.0]]
    with pytest.raises(ValueError, match="banks of 3"):
        cascade_assignment(z, 3, 0.2)


def test_cascade_skips_a_bank_that_only_beats_its_predecessors_weakly():
    # bank 2 is not decisive over max(bank0, bank1); bank 1 is decisive over bank 0 -> bank 1
    z = torch.tensor([[0.2, 0.6, 0.65]])
    assert cascade_assignment(z, 1, 0.2).item() == 1 == ref.cascade_bank(z[0], 1, 0.2)


# ---------------------------------------------------------------- TAG's gap in cosine distance
@pytest.mark.parametrize("banks,tau,seed", [(2, 0.2, 5), (4, 0.2, 6), (3, 0.1, 7)])
def test_distance_gap_matches_naive_in_tag_and_cascade(banks, tau, seed):
    torch.manual_seed(seed)
    z = (torch.rand(400, banks * 3) * 0.5 + 0.45)  # warm-started rows: every cosine high (0.45-0.95)
    z[:5] = 1.0  # a token on every row: zero distances, zero gap
    got = cascade_assignment(z, 3, tau, "distance", 1.0)
    want = torch.tensor([ref.cascade_bank(z[n], 3, tau, "distance", 1.0) for n in range(z.shape[0])])
    assert torch.equal(got, want) and got[:5].eq(0).all()
    new = new_token_mask(z, 3 * (banks - 1), tau, "distance", 1.0)
    assert torch.equal(new, got == banks - 1)
    # high scores shrink the similarity gap, not the distance gap: the distance rule claims more tokens here
    assert int(new.sum()) > int(new_token_mask(z, 3 * (banks - 1), tau).sum())


def test_relative_gap_forms_and_scale():
    a, b = torch.tensor([0.9, 0.5, 2.0]), torch.tensor([0.8, 0.5, 1.0])
    assert relative_gap(a, b).tolist() == pytest.approx([0.1 / 0.9, 0.0, 0.5])
    # distance with scale 1: |0.9 - 0.8| / max(0.1, 0.2) = 0.5; with scale 2: 0.1 / 1.2
    assert relative_gap(a[:1], b[:1], "distance", 1.0).item() == pytest.approx(0.5)
    assert relative_gap(a[:1], b[:1], "distance", 2.0).item() == pytest.approx(0.1 / 1.2)
    assert relative_gap(torch.tensor([1.0]), torch.tensor([1.0]), "distance").item() == 0.0
    with pytest.raises(ValueError, match="scale > 0"):
        relative_gap(a, b, "distance", 0.0)
    with pytest.raises(ValueError, match="gap must be one of"):
        relative_gap(a, b, "angle")


# ---------------------------------------------------------------- specialisation target
@pytest.mark.parametrize("seed", [0, 1])
def test_spe_target_tag_matches_naive_values_and_gradients(seed):
    torch.manual_seed(seed)
    z = (torch.randn(12, 9, dtype=torch.float64) * 0.5).requires_grad_(True)
    valid = torch.rand(12) > 0.3
    target = new_token_mask(z.detach(), 6, 0.1)
    assert 0 < int(target.sum()) < 12
    _, spe = rsr_losses(z, 6, 5, 0.2, valid, spe_target=target)
    want = ref.specialization_with_target(z, 6, 5, 0.2, target, valid)
    ref.assert_close(spe, want, what="L_spe")
    ref.assert_close(torch.autograd.grad(spe, z)[0], torch.autograd.grad(want, z)[0], what="dL_spe/dz")
    # the paper's target differs on these logits (the test can tell the two apart)
    paper = ref.specialization(z, 6, 5, 0.2, valid)
    assert abs(float(paper.detach()) - float(want.detach())) > 1e-3


def test_spe_target_is_detached_and_checked():
    z = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    w, g_old, g_new = rsr_weights(z, 3, 6, 0.2)
    soft = torch.rand(4, dtype=torch.float64, requires_grad=True)
    loss = specialization_from_weights(w, 3, g_old, g_new, None, soft)
    assert torch.autograd.grad(loss, soft, allow_unused=True)[0] is None
    with pytest.raises(ValueError, match="5 elements"):
        specialization_from_weights(w, 3, g_old, g_new, None, torch.zeros(5))


# ---------------------------------------------------------------- the layer under the cascade
def make_layer(tasks, seed=0, **kw):
    torch.manual_seed(seed)
    layer = DyMoELinear(nn.Linear(5, 4, dtype=torch.float64), DyMoEConfig(**{**SMALL, **kw}))
    for _ in range(tasks):
        key = layer.add_task(dtype=torch.float64)
        with torch.no_grad():
            layer.dymoe_B[key].normal_()
    return layer


def naive(layer, x, cascade):
    cfg = layer.dymoe_config
    banks = [(layer.dymoe_A[k], layer.dymoe_B[k], layer.dymoe_router[k]) for k in layer.task_keys()]
    return ref.layer_forward(x.reshape(-1, 5), layer.weight, layer.bias, banks, layer.experts_per_task,
                             layer.expert_rank, layer.scaling, cfg.top_k, cfg.router_temperature, cfg.router_scale,
                             tag_tau=None if cascade or not layer.training else cfg.tau,
                             cascade_tau=cfg.tau if cascade else None, cascade_gap=cfg.tag_gap)


@pytest.mark.parametrize("tasks,training,seed,gap", [(2, True, 0, "similarity"), (3, True, 1, "similarity"),
                                                     (3, False, 2, "similarity"), (4, False, 3, "similarity"),
                                                     (1, False, 4, "similarity"), (3, True, 5, "distance"),
                                                     (4, False, 6, "distance")])
def test_cascade_layer_matches_naive_values_and_gradients(tasks, training, seed, gap):
    layer = make_layer(tasks, seed, assign_rule="cascade", tag_gap=gap).train(training)
    x = torch.randn(2, 15, 5, dtype=torch.float64, requires_grad=True)
    y = layer(x)
    y_ref = naive(layer, x, cascade=True).reshape(y.shape)
    ref.assert_close(y, y_ref, rtol=1e-7, atol=1e-9, what="output")
    params = [x] + [p for p in layer.parameters() if p.requires_grad]
    go = torch.randn_like(y)
    for a, b in zip(torch.autograd.grad(y, params, go), torch.autograd.grad(y_ref, params, go)):
        ref.assert_close(a, b, rtol=1e-7, atol=1e-9, what="grad")


@pytest.mark.parametrize("tasks,training,seed", [(2, True, 0), (3, True, 1), (3, False, 2), (4, False, 3)])
def test_refreshed_bank_keys_choose_the_bank_and_the_router_rows_the_experts(tasks, training, seed):
    """``bank_keys="refreshed"``: the cascade's bank decision is on the keys, the gate inside the chosen bank on
    the router rows; against the naive per-token layer (values and gradients of the trainable bank), and the
    keys get no gradient and never require one."""
    layer = make_layer(tasks, seed, c_exc=0.0, c_spe=0.0, assign_rule="cascade", router_init="centroids",
                       bank_keys="refreshed")
    g = torch.Generator().manual_seed(seed + 50)
    with torch.no_grad():
        for k in layer.task_keys():  # keys unlike the rows, so the two rules give other banks
            assert torch.equal(layer.dymoe_key[k], layer.dymoe_router[k])  # they start as the rows
            layer.dymoe_key[k].copy_(torch.randn(layer.dymoe_key[k].shape, generator=g, dtype=torch.float64))
    assert all(not p.requires_grad for p in layer.dymoe_key.values())
    layer.train(training)
    x = torch.randn(40, 5, dtype=torch.float64, generator=g)
    y = layer(x)
    banks = [(layer.dymoe_A[k], layer.dymoe_B[k], layer.dymoe_router[k]) for k in layer.task_keys()]
    cfg = layer.dymoe_config
    args = (x, layer.weight, layer.bias, banks, layer.experts_per_task, layer.expert_rank, layer.scaling, cfg.top_k,
            cfg.router_temperature, cfg.router_scale)
    want = ref.layer_forward(*args, cascade_tau=cfg.tau, keys=[layer.dymoe_key[k] for k in layer.task_keys()])
    ref.assert_close(y, want, rtol=1e-9, atol=1e-10, what="keys")
    assert not torch.allclose(y, ref.layer_forward(*args, cascade_tau=cfg.tau))  # the keys made a difference
    last = layer.task_keys()[-1]
    params = [layer.dymoe_A[last], layer.dymoe_B[last], layer.dymoe_router[last]]
    got = torch.autograd.grad(y.square().sum(), params)
    ref_y = ref.layer_forward(*args, cascade_tau=cfg.tau, keys=[layer.dymoe_key[k] for k in layer.task_keys()])
    exp = torch.autograd.grad(ref_y.square().sum(), params)
    for a, b in zip(got, exp):
        ref.assert_close(a, b, rtol=1e-8, atol=1e-10, what="keys grad")


def test_refreshed_bank_keys_round_trip_through_the_bank_state():
    layer = make_layer(3, 0, assign_rule="cascade", router_init="centroids", bank_keys="refreshed")
    state = layer.bank_state_dict()
    assert {k.split(".")[0] for k in state} == {"dymoe_A", "dymoe_B", "dymoe_router", "dymoe_key"}
    fresh = DyMoELinear(torch.nn.Linear(5, 4, dtype=torch.float64), layer.dymoe_config)
    assert fresh.load_banks(state, dtype=torch.float64) == 3
    assert all(torch.equal(fresh.dymoe_key[k], layer.dymoe_key[k]) for k in layer.task_keys())
    no_keys = {k: v for k, v in state.items() if not k.startswith("dymoe_key.")}  # saved by a keyless recipe
    older = DyMoELinear(torch.nn.Linear(5, 4, dtype=torch.float64), layer.dymoe_config)
    assert older.load_banks(no_keys, dtype=torch.float64) == 3
    assert all(torch.equal(older.dymoe_key[k], layer.dymoe_router[k]) for k in layer.task_keys())
    missing = {k: v for k, v in state.items() if not k.startswith("dymoe_key.t2")}
    with pytest.raises(ValueError, match=r"missing \['dymoe_key.t2'\]"):
        DyMoELinear(torch.nn.Linear(5, 4, dtype=torch.float64), layer.dymoe_config).load_banks(missing)
    plain = make_layer(2, 0, assign_rule="cascade")  # the default stores no keys
    assert not plain.dymoe_key and "dymoe_key" not in {k.split(".")[0] for k in plain.bank_state_dict()}


# ---------------------------------------------------------------- bank_scope="sequence"
@pytest.mark.parametrize("banks,tau,seed,gap", [(2, 0.05, 0, "similarity"), (3, 0.02, 1, "similarity"),
                                                (4, 0.05, 2, "distance")])
def test_sequence_cascade_matches_naive_mean_of_valid_tokens(banks, tau, seed, gap):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(12, 9, 5, dtype=torch.float64, generator=g)
    rows = torch.randn(banks * 3, 5, dtype=torch.float64, generator=g)
    valid = torch.rand(12, 9, generator=g) > 0.3
    valid[0] = False  # no valid token: the mean over all of them
    z = ref.cosine(x.reshape(-1, 5), rows)
    got = sequence_cascade_assignment(z, 12, 3, tau, gap, 1.0, valid)
    want = ref.sequence_banks(x, rows, 3, tau, gap, 1.0, valid.tolist())
    assert got.repeat_interleave(9).tolist() == want
    assert len(set(got.tolist())) > 1  # the draws reach several banks (the test can fail)
    assert not torch.equal(got, sequence_cascade_assignment(z, 12, 3, tau, gap))  # the mask is used
    best = bank_scores(z, 3).view(12, 9, banks).mean(dim=1).argmax(dim=1)  # margin 0: the best mean score
    assert torch.equal(sequence_cascade_assignment(z, 12, 3, 0.0), best)
    with pytest.raises(ValueError, match="not 5 sequences"):
        sequence_cascade_assignment(z, 5, 3, tau)
    # a shortlist of every bank changes nothing; a bad one is refused
    every = torch.arange(banks).expand(12, banks)
    assert torch.equal(sequence_cascade_assignment(z, 12, 3, tau, gap, 1.0, valid, every), got)
    pairs = torch.stack([torch.randperm(banks, generator=g)[:2].sort().values for _ in range(12)])
    short = sequence_cascade_assignment(z, 12, 3, tau, gap, 1.0, valid, pairs)
    assert short.repeat_interleave(9).tolist() == ref.sequence_banks(x, rows, 3, tau, gap, 1.0, valid.tolist(),
                                                                     pairs.tolist())
    for bad in (every[:5], every.flip(1), every + 1, every[:, :0]):
        with pytest.raises(ValueError, match="shortlist"):
            sequence_cascade_assignment(z, 12, 3, tau, gap, 1.0, valid, bad)


@pytest.mark.parametrize("tasks,training,seed,keys,margin", [(2, True, 0, False, 0.0), (3, True, 1, True, 0.02),
                                                             (3, False, 2, False, 0.02), (4, False, 3, True, 0.0)])
def test_sequence_scope_layer_matches_naive_values_and_gradients(tasks, training, seed, keys, margin):
    """``bank_scope="sequence"``: every token of a sequence in the bank the mean of its valid tokens' bank
    scores chooses (on the keys when present), the gate inside it on the router rows; values and gradients
    against the naive per-token layer, valid tokens from the attached context."""
    extra = dict(router_init="centroids", bank_keys="refreshed") if keys else {}
    layer = make_layer(tasks, seed, c_exc=0.0, c_spe=0.0, assign_rule="cascade", bank_scope="sequence",
                       sequence_tau=margin, **extra)
    g = torch.Generator().manual_seed(seed + 70)
    if keys:
        with torch.no_grad():
            for k in layer.task_keys():
                layer.dymoe_key[k].copy_(torch.randn(layer.dymoe_key[k].shape, generator=g, dtype=torch.float64))
    layer.train(training)
    x = torch.randn(6, 8, 5, dtype=torch.float64, generator=g, requires_grad=True)
    valid = torch.rand(6, 8, generator=g) > 0.25
    attach_context(layer, DyMoEContext(valid_mask=valid))
    y = layer(x)
    attach_context(layer, None)
    key_rows = torch.cat([(layer.dymoe_key if keys else layer.dymoe_router)[k] for k in layer.task_keys()])
    cfg = layer.dymoe_config
    token_banks = ref.sequence_banks(x.detach(), key_rows, layer.experts_per_task, margin, valid=valid.tolist())
    assert len(set(token_banks)) > 1
    banks = [(layer.dymoe_A[k], layer.dymoe_B[k], layer.dymoe_router[k]) for k in layer.task_keys()]
    y_ref = ref.layer_forward(x.reshape(-1, 5), layer.weight, layer.bias, banks, layer.experts_per_task,
                              layer.expert_rank, layer.scaling, cfg.top_k, cfg.router_temperature, cfg.router_scale,
                              token_banks=token_banks).reshape(y.shape)
    ref.assert_close(y, y_ref, rtol=1e-7, atol=1e-9, what="output")
    per_token = ref.layer_forward(x.reshape(-1, 5), layer.weight, layer.bias, banks, layer.experts_per_task,
                                  layer.expert_rank, layer.scaling, cfg.top_k, cfg.router_temperature,
                                  cfg.router_scale, cascade_tau=cfg.tau, keys=[key_rows]).reshape(y.shape)
    assert not torch.allclose(y, per_token)  # the scope made a difference
    params = [x] + [p for p in layer.parameters() if p.requires_grad]
    go = torch.randn(y.shape, dtype=y.dtype, generator=g)
    for a, b in zip(torch.autograd.grad(y, params, go), torch.autograd.grad(y_ref, params, go)):
        ref.assert_close(a, b, rtol=1e-7, atol=1e-9, what="grad")


def test_sequence_scope_keeps_the_prompts_bank_while_decoding():
    """At inference a forward that continues the prompt's KV cache (``ctx.past_len`` where the prompt ended, the same
    batch: a decoding step) stays in the banks its prompt chose; a new prompt decides again; ``train()`` drops the
    kept decision."""
    layer = make_layer(3, 9, assign_rule="cascade", bank_scope="sequence").eval()  # sequence_tau 0: the best mean
    ctx = DyMoEContext(past_len=0)
    attach_context(layer, ctx)
    g = torch.Generator().manual_seed(9)
    rows = torch.cat(list(layer.dymoe_router.values()))
    cfg = layer.dymoe_config
    banks = [(layer.dymoe_A[k], layer.dymoe_B[k], layer.dymoe_router[k]) for k in layer.task_keys()]

    def naive_with(x, token_banks):
        return ref.layer_forward(x.reshape(-1, 5), layer.weight, layer.bias, banks, layer.experts_per_task,
                                 layer.expert_rank, layer.scaling, cfg.top_k, cfg.router_temperature,
                                 cfg.router_scale, token_banks=token_banks).reshape(*x.shape[:-1], 4)

    prompt = torch.randn(2, 7, 5, dtype=torch.float64, generator=g)
    prompt_banks = ref.sequence_banks(prompt, rows, 3, cfg.sequence_tau)[::7]
    ref.assert_close(layer(prompt), naive_with(prompt, [b for b in prompt_banks for _ in range(7)]), what="prompt")
    steps = torch.randn(40, 2, 1, 5, dtype=torch.float64, generator=g)
    own = [ref.sequence_banks(s, rows, 3, cfg.sequence_tau) for s in steps]
    assert any(o != prompt_banks for o in own)  # some step would have chosen another bank on its own
    for i, s in enumerate(steps):
        ctx.past_len = 7 + i
        ref.assert_close(layer(s), naive_with(s, prompt_banks), what="decoding step")
    ctx.past_len = 0
    other = torch.randn(2, 7, 5, dtype=torch.float64, generator=g)  # a new prompt decides again
    ref.assert_close(layer(other), naive_with(other, ref.sequence_banks(other, rows, 3, cfg.sequence_tau)), what="new prompt")
    layer.train().eval()  # the kept decision is dropped: a lone token decides for itself
    ctx.past_len = 7
    ref.assert_close(layer(steps[0]), naive_with(steps[0], own[0]), what="after train()")
    ref.assert_close(layer(steps[0][:1]), naive_with(steps[0][:1], own[0][:1]), what="other batch size")


@pytest.mark.parametrize("scope", ["token", "sequence"])
def test_under_the_cascade_g_new_is_the_share_of_tokens_assigned_to_the_new_bank(scope):
    """docs/diagnostics.md: with the cascade every token's gate sums to 1 inside its one bank, so the routing
    statistics' gate mass on the new bank (``g_new``) is the decision's new share (naive banks), while TAG's
    per-token ``frac_new`` on the raw logits is another quantity."""
    from llava_dymoe.core import RoutingStats, attach_stats

    layer = make_layer(3, 4, assign_rule="cascade", bank_scope=scope).eval()
    x = torch.randn(6, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    rows = torch.cat(list(layer.dymoe_router.values()))
    cfg = layer.dymoe_config
    if scope == "sequence":
        banks = ref.sequence_banks(x, rows, 3, cfg.sequence_tau, cfg.tag_gap, cfg.router_scale)
    else:
        banks = [ref.cascade_bank(z, 3, cfg.tau, cfg.tag_gap, cfg.router_scale)
                 for z in ref.cosine(x.reshape(-1, 5), rows, cfg.router_scale)]
    stats = RoutingStats()
    model = nn.Sequential(layer)
    attach_stats(model, stats)
    model(x)
    (row,) = stats.summary().values()
    want = sum(b == 2 for b in banks) / len(banks)
    assert 0 < want < 1 and row["mean_g_new"] == pytest.approx(want, abs=1e-9)
    assert row["bank_share"] == pytest.approx([sum(b == i for b in banks) / len(banks) for i in range(3)], abs=1e-9)


def test_cascade_changes_inference_but_not_the_new_bank_decision_of_training():
    paper, cascade = make_layer(3, 5), make_layer(3, 5, assign_rule="cascade")
    x = torch.randn(400, 5, dtype=torch.float64)
    # eval: the paper routes over all experts, the cascade picks one bank -> different outputs
    assert not torch.allclose(paper.eval()(x), cascade.eval()(x))
    # training: same tokens reach the new bank (TAG's decision); only the old-group routing differs
    for layer in (paper, cascade):
        layer.train()
    z = ref.cosine(x[:50], torch.cat(list(paper.dymoe_router.values())))
    new_naive = [ref.use_new(z[n], 6, 0.1) for n in range(50)]
    assert [ref.cascade_bank(z[n], 3, 0.1) == 2 for n in range(50)] == new_naive


def test_layer_spe_target_tag_injects_the_tag_target_gradient():
    """The aux gradient the layer injects with spe_target='tag' is that of c_spe * BCE(g_new, TAG decision)."""
    layer = make_layer(2, 6, spe_target="tag", c_exc=0.0, c_spe=0.5)
    layer.weight.requires_grad_(False)
    x = torch.randn(30, 5, dtype=torch.float64)
    attach_context(layer, DyMoEContext(rho=1.0, num_modules=1))
    router = layer.dymoe_router["t1"]
    g = torch.autograd.grad(layer(x).sum() * 0.0, router, allow_unused=True)[0]  # only the injected term
    attach_context(layer, None)
    z = ref.cosine(x, torch.cat([layer.dymoe_router["t0"], router]))
    target = [ref.use_new(z[n], 3, 0.1) for n in range(30)]
    assert 0 < sum(target) < 30
    want = torch.autograd.grad(0.5 * ref.specialization_with_target(z, 3, 4, 0.2, target), router)[0]
    ref.assert_close(g, want, rtol=1e-7, atol=1e-10, what="injected dL_spe/drouter")


# ---------------------------------------------------------------- nothing changes unless set
def test_variant_fields_default_to_the_paper_and_dymoe_recipe_does_not_set_them():
    cfg = get_method("dymoe").build_config()
    assert (cfg.assign_rule, cfg.spe_target, cfg.router_init, cfg.tag_gap) == ("paper", "paper", "kaiming",
                                                                                "similarity")
    assert (cfg.bank_keys, cfg.bank_scope, cfg.router_train, cfg.router_refresh) == ("router", "token", True, False)
    explicit = get_method("dymoe").build_config({"assign_rule": "paper", "spe_target": "paper",
                                                 "router_init": "kaiming"})
    assert explicit == cfg


@pytest.mark.parametrize("training", [True, False])
def test_paper_values_given_explicitly_give_bitwise_the_same_layer(training):
    a = make_layer(3, 7, c_exc=0.3, c_spe=0.4)
    b = make_layer(3, 7, c_exc=0.3, c_spe=0.4, assign_rule="paper", spe_target="paper", router_init="kaiming",
                   tag_gap="similarity", bank_scope="token", bank_keys="router")
    x = torch.randn(40, 5, dtype=torch.float64)
    outs = []
    for layer in (a, b):
        layer.train(training)
        attach_context(layer, DyMoEContext(rho=1.0, num_modules=1))
        y = layer(x)
        grads = torch.autograd.grad(y.sum(), [p for p in layer.parameters() if p.requires_grad]) if training else ()
        outs.append((y, grads))
    assert torch.equal(outs[0][0], outs[1][0])
    assert all(torch.equal(p, q) for p, q in zip(outs[0][1], outs[1][1]))


@pytest.mark.parametrize("kw,match", [
    (dict(assign_rule="cascade", use_tag=False), "needs --dymoe_use_tag True"),
    (dict(assign_rule="always"), "assign_rule must be one of"),
    (dict(spe_target="soft"), "spe_target must be one of"),
    (dict(router_init="centroids", router="linear"), "needs --dymoe_router cosine"),
    (dict(router_init="pca"), "router_init must be one of"),
    (dict(router_init_batches=0), "router_init_batches must be >= 1"),
    (dict(tag_gap="angle"), "tag_gap must be one of"),
    (dict(tag_gap="distance", router_scale=0.0), "needs --dymoe_router cosine with --dymoe_router_scale > 0"),
    (dict(router_train=False), "add --dymoe_router_init centroids"),
    (dict(bank_keys="refreshed", router_init="centroids"), "needs --dymoe_assign_rule cascade"),
    (dict(bank_keys="refreshed", assign_rule="cascade"), "needs --dymoe_assign_rule cascade and --dymoe_router_init"),
    (dict(bank_keys="stale"), "bank_keys must be one of"),
    (dict(bank_keys="fitted", router_init="centroids"), "needs --dymoe_assign_rule cascade"),
    (dict(bank_scope="sequence"), "needs --dymoe_assign_rule cascade"),
    (dict(bank_scope="batch", assign_rule="cascade"), "bank_scope must be one of"),
    (dict(bank_scope="sequence", assign_rule="cascade", sequence_tau=1.5), "sequence_tau must lie in"),
    (dict(router_refresh=True), "add --dymoe_router_init centroids"),
    (dict(router_train="no", router_init="centroids"), "router_train must be a bool"),
    (dict(router_refresh=1, router_init="centroids"), "router_refresh must be a bool"),
])
def test_variant_config_errors(kw, match):
    with pytest.raises(ValueError, match=match):
        DyMoEConfig(**kw)


# ---------------------------------------------------------------- spherical k-means
def test_spherical_kmeans_finds_planted_directions_and_is_deterministic():
    g = torch.Generator().manual_seed(0)
    dirs = torch.nn.functional.normalize(torch.randn(4, 16, generator=g), dim=1)
    x = torch.cat([d * (1 + torch.rand(50, 1, generator=g)) + 0.05 * torch.randn(50, 16, generator=g)
                   for d in dirs])
    m = spherical_kmeans(x, 4, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(m.norm(dim=1), torch.ones(4), atol=1e-6)
    assert (m @ dirs.t()).amax(dim=0).min() > 0.99  # every planted direction has a centroid
    again = spherical_kmeans(x, 4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(m, again)


def test_spherical_kmeans_centroid_is_the_normalised_mean_of_its_tokens():
    x = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, -1.0], [-0.6, -0.8]])
    m = spherical_kmeans(x, 2, generator=torch.Generator().manual_seed(0))
    want = {tuple(torch.nn.functional.normalize(x[i] + x[j], dim=0).round(decimals=5).tolist())
            for i, j in ((0, 1), (2, 3))}
    assert {tuple(r.round(decimals=5).tolist()) for r in m} == want


def test_spherical_kmeans_from_given_rows_keeps_row_identity_and_is_lloyd_from_there():
    """``init``: no seeding; row j ends on the cluster it started nearest to (the experts behind it stay
    meaningful), and the result is a fixed point: each row is the normalised mean of the tokens it wins."""
    g = torch.Generator().manual_seed(3)
    dirs = torch.nn.functional.normalize(torch.randn(3, 8, generator=g), dim=1)
    x = torch.cat([d + 0.1 * torch.randn(40, 8, generator=g) for d in dirs])
    start = dirs[[2, 0, 1]] + 0.3 * torch.randn(3, 8, generator=g)  # rows in another order, off their clusters
    m = spherical_kmeans(x, 3, init=start * 5.0)  # the norms of the given rows do not matter
    assert (m @ dirs[[2, 0, 1]].t()).diagonal().min() > 0.99
    u = torch.nn.functional.normalize(x, dim=1)
    win = (u @ m.t()).argmax(dim=1)
    for j in range(3):
        assert torch.allclose(m[j], torch.nn.functional.normalize(u[win == j].sum(0), dim=0), atol=1e-6)
    assert torch.equal(m, spherical_kmeans(x, 3, init=start))
    with pytest.raises(ValueError, match=r"init must be \[3, 8\]"):
        spherical_kmeans(x, 3, init=start[:2])


def test_spherical_kmeans_more_clusters_than_tokens_and_errors():
    m = spherical_kmeans(torch.tensor([[1.0, 0.0], [0.0, 2.0]]), 4, generator=torch.Generator().manual_seed(0))
    assert m.shape == (4, 2) and torch.allclose(m.norm(dim=1), torch.ones(4))
    with pytest.raises(ValueError, match="N >= 1"):
        spherical_kmeans(torch.zeros(0, 3), 2)
    with pytest.raises(ValueError, match="k must be"):
        spherical_kmeans(torch.ones(3, 3), 0)


# ---------------------------------------------------------------- every recipe keeps old banks frozen
_METHODS = __import__("llava_dymoe.methods", fromlist=["VARIANTS"])


@pytest.mark.parametrize("method", sorted(_METHODS.VARIANTS) + [_METHODS.PLUS])
def test_every_variant_recipe_trains_only_the_new_bank(method):
    """Each beyond-the-paper recipe's layer fields (router_init acts in the trainer: here the new rows are set
    to spherical k-means centroids of the task's tokens, as the calibration pass does), a task-2 layer with the
    RSR losses on, three SGD steps on every trainable parameter: bank t0 is bit-identical, bank t1 moved.
    (Two of the recipes also train two tasks through upstream train(): tests/integration/test_variants_train.py.)"""
    cfg = get_method(method).build_config()
    fields = {f: getattr(cfg, f) for f in ("assign_rule", "spe_target", "router_init", "tag_gap", "router_train",
                                           "bank_keys", "bank_scope")}
    layer = make_layer(2, 8, c_exc=0.3, c_spe=0.4, **fields)
    layer.weight.requires_grad_(False)
    layer.bias.requires_grad_(False)
    x = torch.randn(6, 10, 5, dtype=torch.float64)  # six sequences (bank_scope="sequence" decides per sequence)
    if cfg.router_init == "centroids":
        with torch.no_grad():
            rows = layer.dymoe_router["t1"]
            rows.copy_(spherical_kmeans(x.reshape(-1, 5), rows.shape[0], generator=torch.Generator().manual_seed(0)) * rows.norm(dim=-1, keepdim=True))
    old = {n: getattr(layer, n)["t0"].detach().clone() for n in ("dymoe_A", "dymoe_B", "dymoe_router")}
    new = {n: getattr(layer, n)["t1"].detach().clone() for n in ("dymoe_A", "dymoe_B", "dymoe_router")}
    if not cfg.router_train:  # as the trainer does once the rows are set
        layer.dymoe_router["t1"].requires_grad_(False)
    trainable = [p for p in layer.parameters() if p.requires_grad]
    opt = torch.optim.SGD(trainable, lr=0.1)
    attach_context(layer, DyMoEContext(rho=1.0, num_modules=1))
    layer.train()
    for _ in range(3):
        opt.zero_grad()
        layer(x).square().mean().backward()
        opt.step()
    attach_context(layer, None)
    for n, v in old.items():
        assert torch.equal(getattr(layer, n)["t0"], v), f"{method}: {n}.t0 changed"
    fixed = set() if cfg.router_train else {"dymoe_router"}
    assert all(not torch.equal(getattr(layer, n)["t1"], v) for n, v in new.items() if n not in fixed), method
    assert all(torch.equal(getattr(layer, n)["t1"], new[n]) for n in fixed), method
