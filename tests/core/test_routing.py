"""Routing functions against naive per-token loops: values and gradients (method.md §1.4, §2, §3.1)."""
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
import naive_ref as ref  # noqa: E402

from llava_dymoe.core.routing import cosine_logits, gate, new_token_mask, tag_mask  # noqa: E402

SEEDS = [0, 1, 2]


def _grads(out, inputs, seed):
    gen = torch.Generator().manual_seed(seed + 100)
    go = torch.randn(out.shape, generator=gen, dtype=out.dtype)
    return torch.autograd.grad(out, inputs, go, allow_unused=True)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("scale", [1.0, 2.5, 0.0, -1.0])
def test_cosine_logits_matches_naive(seed, scale):
    torch.manual_seed(seed)
    x = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    z = cosine_logits(x, w, scale)
    z_ref = ref.cosine(x, w, scale)
    ref.assert_close(z, z_ref, what="logits")
    for a, b in zip(_grads(z, (x, w), seed), _grads(z_ref, (x, w), seed)):
        ref.assert_close(a, b, what="grad")


def test_cosine_logits_shapes_dtypes_and_zero_rows():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 6, dtype=torch.bfloat16)
    w = torch.randn(5, 6)
    z = cosine_logits(x, w)
    assert z.dtype == torch.float32 and z.shape == (6, 5)
    ref.assert_close(z, ref.cosine(x.float().reshape(6, 6), w), rtol=1e-5, atol=1e-6)
    assert z.abs().max() <= 1.0 + 1e-5
    xz = torch.zeros(3, 6, requires_grad=True)  # zero token: logits 0, finite gradient
    wz = torch.zeros(5, 6).index_fill_(0, torch.tensor([0]), 1.0).requires_grad_()
    out = cosine_logits(xz, wz)
    out.sum().backward()
    assert torch.equal(out, torch.zeros(3, 5))
    assert torch.isfinite(xz.grad).all() and torch.isfinite(wz.grad).all()
    with pytest.raises(ValueError, match="router weight"):
        cosine_logits(torch.randn(3, 6), torch.randn(5, 4))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n_old", [0, 1, 3, 5])
@pytest.mark.parametrize("tau", [0.0, 0.2, 0.5, 1.0])
def test_tag_mask_matches_naive(seed, n_old, tau):
    torch.manual_seed(seed)
    z = torch.randn(40, 6)
    m = tag_mask(z, n_old, tau)
    assert m.dtype == torch.bool and m.shape == z.shape
    assert torch.equal(m, ref.tag(z, n_old, tau))
    if n_old:  # mutually exclusive partition: each token lives in exactly one group
        old_any, new_any = m[:, :n_old].any(1), m[:, n_old:].any(1)
        assert torch.equal(old_any, ~new_any)
        assert torch.equal(m[:, n_old:].all(1), new_token_mask(z, n_old, tau))


def test_tag_mask_edge_cases():
    # ties c_new == c_old -> D_rel = 0 -> old group; both maxima zero -> D_rel := 0 (no NaN) -> old group
    z = torch.tensor([[0.5, 0.1, 0.5, -0.2],
                      [0.0, -1.0, 0.0, -3.0],
                      [0.4, 0.0, 0.8, 0.1],     # D_rel = 0.5 > 0.2 and new dominant -> new
                      [0.50, 0.0, 0.52, 0.0],   # D_rel ~ 0.04 -> ambiguous -> old (method.md §2 example)
                      [0.8, 0.0, 0.4, 0.0],     # old dominant -> old
                      [-0.5, -0.6, -0.1, -0.9]])  # negatives: c_old=-0.5, c_new=-0.1, D_rel=0.8 -> new
    m = tag_mask(z, 2, 0.2)
    expected_new = torch.tensor([False, False, True, False, False, True])
    assert torch.equal(m[:, 2:].all(1), expected_new)
    assert torch.equal(m[:, :2].all(1), ~expected_new)
    assert torch.equal(new_token_mask(z, 2, 0.2), expected_new)
    assert tag_mask(z, 0, 0.2).all()
    assert tag_mask(z, 4, 0.2).all()  # no new group: every expert is old and allowed
    assert tag_mask(z.double(), 2, 1.0)[:, :2].all()  # tau = 1: D_rel <= 1 always -> never new
    with pytest.raises(ValueError, match="n_old"):
        tag_mask(z, 5, 0.2)


# rows [old, old, new, new] whose D_rel = |c_new - c_old| / max(|c_new|, |c_old|) is exactly representable
_BOUNDARY = torch.tensor([[1.0, 0.0, 2.0, 0.0],      # D_rel = 1/2
                          [0.75, 0.0, 1.0, 0.0],     # D_rel = 1/4
                          [0.0, -1.0, 1.0, 0.0],     # c_old = 0: D_rel = 1
                          [-1.0, -2.0, -0.5, -3.0]])  # negatives: D_rel = 1/2
_BOUNDARY_D_REL = [0.5, 0.25, 1.0, 0.5]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("row", range(len(_BOUNDARY_D_REL)))
def test_tag_boundary_is_strict(row, dtype):
    """method.md §2: a token is new when D_rel > tau; D_rel == tau is ambiguous and stays with the old group
    (a change to >= fails here), while the smallest step above tau makes it new."""
    z = _BOUNDARY[row:row + 1].to(dtype)
    tau = _BOUNDARY_D_REL[row]
    from llava_dymoe.core.routing import cascade_assignment, group_scores

    assert group_scores(z, 2)[2].item() == tau  # the row sits exactly on the boundary
    assert not new_token_mask(z, 2, tau).item()
    assert tag_mask(z, 2, tau)[0].tolist() == [True, True, False, False]
    assert ref.use_new(z[0], 2, tau) is False
    assert cascade_assignment(z, 2, tau).item() == 0  # the newest bank claims the token only above tau
    below = tau * (1 - 2 ** -20)  # a step below tau that fp32 (the routing dtype of bf16/fp32 logits) resolves
    assert new_token_mask(z, 2, below).item() and ref.use_new(z[0], 2, below) is True
    assert tag_mask(z, 2, below)[0].tolist() == [False, False, True, True]
    assert cascade_assignment(z, 2, below).item() == 1


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("top_k,temperature", [(1, 0.5), (3, 0.5), (6, 0.3), (9, 1.0), (4, 0.05)])
@pytest.mark.parametrize("masked", [False, True])
def test_gate_matches_naive(seed, top_k, temperature, masked):
    torch.manual_seed(seed)
    z = torch.randn(12, 6, dtype=torch.float64, requires_grad=True)
    allowed = ref.tag(z.detach(), 3, 0.2) if masked else None
    g = gate(z, top_k, temperature, allowed)
    g_ref = ref.gate(z, top_k, temperature, allowed)
    ref.assert_close(g, g_ref, what="gate")
    ref.assert_close(g.sum(1), torch.ones(12, dtype=torch.float64), what="row sums")
    assert ((g > 0).sum(1) <= top_k).all()
    ref.assert_close(_grads(g, (z,), seed)[0], _grads(g_ref, (z,), seed)[0], what="grad")


def test_gate_default_temperature_fp32_and_bf16():
    torch.manual_seed(0)
    x = torch.randn(32, 16)
    w = torch.randn(8, 16)
    z32 = cosine_logits(x, w)
    zbf = cosine_logits(x.to(torch.bfloat16), w)
    for z in (z32, zbf):
        g = gate(z, 4, 0.01)
        assert g.dtype == torch.float32
        assert torch.isfinite(g).all()
        ref.assert_close(g.sum(1), torch.ones(32), rtol=1e-5, atol=1e-5)
    ref.assert_close(gate(z32, 4, 0.01), ref.gate(z32.double(), 4, 0.01), rtol=1e-4, atol=1e-5)


def test_gate_never_nan():
    z = torch.randn(4, 5, requires_grad=True)
    allowed = torch.ones(4, 5, dtype=torch.bool)
    allowed[1] = False  # nothing allowed for token 1
    allowed[2, 1:] = False  # only one expert allowed, top_k larger than that
    g = gate(z, 3, 0.01, allowed)
    assert torch.isfinite(g).all()
    assert torch.equal(g[1], torch.zeros(5))
    assert g[2, 0] == 1.0 and g[2, 1:].abs().sum() == 0
    ref.assert_close(g[[0, 3]].sum(1), torch.ones(2), rtol=1e-6)
    (g * torch.randn(4, 5)).sum().backward()
    assert torch.isfinite(z.grad).all() and torch.equal(z.grad[1], torch.zeros(5))
    # huge logits at T = 0.01 (up-cast from bf16) stay finite
    big = torch.tensor([[100.0, -100.0, 99.0]], dtype=torch.bfloat16)
    assert torch.isfinite(gate(big, 2, 0.01)).all()
    assert gate(torch.zeros(0, 3), 2, 0.1).shape == (0, 3)


def test_gate_top_k_ge_e_is_plain_softmax():
    z = torch.randn(5, 4, dtype=torch.float64)
    for k in (4, 10):
        ref.assert_close(gate(z, k, 0.3), torch.softmax(z / 0.3, dim=1))


def test_gate_bad_arguments():
    z = torch.randn(3, 4)
    with pytest.raises(ValueError, match="top_k"):
        gate(z, 0, 0.1)
    with pytest.raises(ValueError, match="temperature"):
        gate(z, 2, 0.0)
    with pytest.raises(ValueError, match="allowed"):
        gate(z, 2, 0.1, torch.ones(3, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\[N, E\]"):
        gate(torch.randn(3), 2, 0.1)


def test_cosine_logits_stay_fp32_inside_autocast():
    """HF's CPU AMP (``--bf16 True`` without DeepSpeed) runs the forward under ``torch.autocast``, which would do the
    router's matmul in bf16 (a cosine off by ~1e-3, ~0.1 after T_route = 0.01): the logits and their gradients must
    be those of the fp32 computation, bit for bit."""
    from llava_dymoe.core.losses import orthogonality_loss

    torch.manual_seed(0)
    x = torch.randn(64, 48, dtype=torch.bfloat16, requires_grad=True)
    w = torch.randn(16, 48, requires_grad=True)
    z_ref = cosine_logits(x, w)
    g_ref = torch.autograd.grad(z_ref.sum(), (x, w))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = cosine_logits(x, w)
        naive_amp = (x.float() / x.float().norm(dim=1, keepdim=True)) @ (w / w.norm(dim=1, keepdim=True)).t()
    g = torch.autograd.grad(z.sum(), (x, w))  # backward outside the region, as HF's Trainer does it
    assert z.dtype == torch.float32 and torch.equal(z, z_ref)
    assert all(torch.equal(a, b) for a, b in zip(g, g_ref))
    assert naive_amp.dtype == torch.bfloat16 and (naive_amp.float() - z_ref).abs().max() > 1e-4  # what it guards
    a_new, a_old = torch.randn(8, 48), torch.randn(8, 48)
    ref_orth = orthogonality_loss(a_new, [a_old])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(orthogonality_loss(a_new, [a_old]), ref_orth)
