"""RSR and balance losses against naive per-token loops: values and gradients (method.md §3.2–§3.3)."""
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
import naive_ref as ref  # noqa: E402

from llava_dymoe.core.losses import (exclusivity_loss, masked_mean, new_expert_balance_loss,  # noqa: E402
                                     rsr_losses, specialization_loss)

SEEDS = [0, 1, 2]
RSR = [(exclusivity_loss, ref.exclusivity), (specialization_loss, ref.specialization)]


def _valid(kind, n, seed):
    if kind == "none":
        return None
    if kind == "some":
        return torch.rand(n, generator=torch.Generator().manual_seed(seed)) > 0.4
    return torch.zeros(n, dtype=torch.bool)


def _grad(loss, z):
    return torch.autograd.grad(loss, z, allow_unused=True)[0]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("fn,naive", RSR, ids=["exc", "spe"])
@pytest.mark.parametrize("n_old,top_k,temperature", [(4, 4, 0.1), (4, 8, 0.1), (2, 3, 0.5), (5, 16, 1.0)])
@pytest.mark.parametrize("valid_kind", ["none", "some"])
def test_rsr_losses_match_naive(seed, fn, naive, n_old, top_k, temperature, valid_kind):
    torch.manual_seed(seed)
    z = (torch.rand(10, 8, dtype=torch.float64) * 2 - 1).requires_grad_()
    valid = _valid(valid_kind, 10, seed)
    loss = fn(z, n_old, top_k, temperature, valid)
    loss_ref = naive(z, n_old, top_k, temperature, valid)
    assert loss.dim() == 0
    ref.assert_close(loss, loss_ref, what="loss")
    ref.assert_close(_grad(loss, z), _grad(loss_ref, z), what="grad")


def test_rsr_losses_shares_weights_and_matches_public_functions():
    z = torch.randn(6, 8, requires_grad=True)
    valid = torch.tensor([1, 1, 0, 1, 0, 1], dtype=torch.bool).reshape(2, 3)  # any shape with N elements
    exc, spe = rsr_losses(z, 3, 4, 0.1, valid)
    ref.assert_close(exc, exclusivity_loss(z, 3, 4, 0.1, valid))
    ref.assert_close(spe, specialization_loss(z, 3, 4, 0.1, valid))


@pytest.mark.parametrize("fn", [exclusivity_loss, specialization_loss, new_expert_balance_loss])
def test_all_invalid_gives_zero_with_gradient_path(fn):
    z = torch.randn(5, 6, requires_grad=True)
    loss = fn(z, 2, 3, 0.1, torch.zeros(5, dtype=torch.bool))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(z.grad, torch.zeros(5, 6))
    empty = torch.zeros(0, 6, requires_grad=True)
    assert fn(empty, 2, 3, 0.1).item() == 0.0


def test_specialization_extreme_logits_fp32_finite():
    """g_new -> 1 (or 0) in fp32: log(1 - g_new) via log(g_old) stays finite (pilot-drift.md pitfall)."""
    z = torch.tensor([[-1.0, -1.0, 1.0, 1.0],    # new group dominates: g_new == 1 in fp32
                      [1.0, -1.0, -1.0, -1.0],   # old dominates: g_new ~ 0
                      [0.3, 0.1, 0.29, -0.5]], requires_grad=True)
    loss = specialization_loss(z, 2, 4, 0.01)
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(z.grad).all()
    # value agrees with the textbook BCE evaluated in fp64, clamped at 1e-8 like upstream
    zd = z.detach().double()
    ref.assert_close(loss, ref.specialization(zd, 2, 4, 0.01), rtol=1e-4, atol=1e-4)
    exc = exclusivity_loss(z, 2, 4, 0.01)
    assert torch.isfinite(exc)


def test_specialization_target_is_detached():
    """Gradient must equal that of the BCE with y treated as a constant (naive ref uses a python float y)."""
    torch.manual_seed(3)
    z = torch.randn(6, 6, dtype=torch.float64, requires_grad=True)
    g = _grad(specialization_loss(z, 3, 6, 0.2), z)
    g_ref = _grad(ref.specialization(z, 3, 6, 0.2), z)
    ref.assert_close(g, g_ref)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n_old,top_k", [(0, 2), (3, 1), (3, 2), (2, 16)])
@pytest.mark.parametrize("valid_kind", ["none", "some"])
def test_balance_loss_matches_naive(seed, n_old, top_k, valid_kind):
    torch.manual_seed(seed)
    z = torch.randn(12, 7, dtype=torch.float64, requires_grad=True)
    valid = _valid(valid_kind, 12, seed)
    loss = new_expert_balance_loss(z, n_old, top_k, 0.5, valid)
    loss_ref = ref.balance(z, n_old, top_k, 0.5, valid)
    ref.assert_close(loss, loss_ref, what="balance")
    ref.assert_close(_grad(loss, z), _grad(loss_ref, z), what="grad")


def test_balance_loss_degenerate_when_top_k_covers_new_experts():
    z = torch.randn(9, 20, requires_grad=True)  # 4 old + 16 new, top-16: method.md §3.3
    loss = new_expert_balance_loss(z, 4, 16, 0.01)
    ref.assert_close(loss, torch.tensor(1.0), rtol=1e-6)
    loss.backward()
    assert z.grad.abs().max() < 1e-6


def test_masked_mean_and_errors():
    v = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert masked_mean(v).item() == 2.5
    assert masked_mean(v, torch.tensor([True, False, True, False])).item() == 2.0
    with pytest.raises(ValueError, match="valid mask"):
        masked_mean(v, torch.ones(3, dtype=torch.bool))
    z = torch.randn(3, 4)
    with pytest.raises(ValueError, match="n_old"):
        exclusivity_loss(z, 0, 2, 0.1)  # RSR needs an old group
    with pytest.raises(ValueError, match="n_old"):
        specialization_loss(z, 4, 2, 0.1)  # ... and a new group
    with pytest.raises(ValueError, match="n_old"):
        new_expert_balance_loss(z, 4, 2, 0.1)
