"""Aux-loss transport: the injected gradient equals the gradient of the explicit loss (with and without
gradient checkpointing, reentrant and non-reentrant), and the collector's per-step count check."""
import os
import sys

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

sys.path.insert(0, os.path.dirname(__file__))
import naive_ref as ref  # noqa: E402

from llava_dymoe.config import DyMoEConfig  # noqa: E402
from llava_dymoe.core import (AuxCollector, DyMoEContext, DyMoELinear, attach_context,  # noqa: E402
                              inject_aux)

CKPT_MODES = ["none", "reentrant", "non_reentrant"]


def test_inject_aux_gradient_and_inertness():
    torch.manual_seed(0)
    w = torch.randn(3, requires_grad=True)
    x = torch.randn(4, 3)

    def run(explicit):
        out = x @ w
        aux = (w ** 3).sum()
        if explicit:
            return torch.autograd.grad((out ** 2).sum() + 0.25 * aux, w)[0]
        return torch.autograd.grad((inject_aux(out, aux, 0.25) ** 2).sum(), w)[0]

    ref.assert_close(run(False), run(True), rtol=1e-6)
    with torch.no_grad():  # inert: the very same tensor comes back
        out = x @ w
        assert inject_aux(out, (w ** 3).sum(), 0.25) is out
    with pytest.raises(ValueError, match="scalar"):
        inject_aux(x @ w, w, 1.0)
    with pytest.raises(RuntimeError, match="does not require grad"):
        inject_aux(x.sum(1), (w ** 2).sum(), 1.0)


class Block(nn.Module):
    def __init__(self, l1, l2):
        super().__init__()
        self.l1, self.l2 = l1, l2

    def forward(self, x):
        return self.l2(torch.tanh(self.l1(x)))


def make_model(seed, **kw):
    torch.manual_seed(seed)
    cfg = DyMoEConfig(**{**dict(experts_per_task=3, expert_rank=2, top_k=4, router_temperature=0.3, tau=0.1,
                                rsr_temperature=0.2), **kw})
    layers = []
    for _ in range(2):
        layer = DyMoELinear(nn.Linear(5, 5, dtype=torch.float64), cfg)
        layer.weight.requires_grad_(False)
        for _ in range(2):
            key = layer.add_task(dtype=torch.float64)
            with torch.no_grad():
                layer.dymoe_B[key].normal_()
        layers.append(layer)
    return Block(*layers).train()


def forward(model, x, mode):
    if mode == "none":
        return model(x)
    return checkpoint(model, x, use_reentrant=(mode == "reentrant"))


def backward_grads(loss, params):
    """``.backward()`` (reentrant checkpointing does not support ``autograd.grad``) and read ``.grad``."""
    for p in params:
        p.grad = None
    loss.backward()
    return [p.grad.clone() for p in params]


def explicit_aux(layer, inp, valid):
    """c_exc*L_exc + c_spe*L_spe + c_aux*L_aux of one layer, from the naive references."""
    cfg = layer.dymoe_config
    z = ref.cosine(inp.reshape(-1, 5), torch.cat(list(layer.dymoe_router.values())), cfg.router_scale)
    total = (cfg.c_exc * ref.exclusivity(z, 3, cfg.top_k, cfg.rsr_temperature, valid)
             + cfg.c_spe * ref.specialization(z, 3, cfg.top_k, cfg.rsr_temperature, valid))
    if cfg.c_aux > 0:
        new = torch.tensor([ref.use_new(z[n], 3, cfg.tau) for n in range(z.shape[0])])
        total = total + cfg.c_aux * ref.balance(z, 3, cfg.top_k, cfg.router_temperature, new & valid.reshape(-1))
    return total


@pytest.mark.parametrize("mode", CKPT_MODES)
@pytest.mark.parametrize("seed,coefs,rho,accum,grad_scale", [
    (0, dict(c_exc=0.5, c_spe=0.3), 1.0, 1, 1.0),
    (1, dict(c_exc=0.2, c_spe=0.7), 0.6, 4, 1.0),
    (2, dict(c_exc=0.1, c_spe=0.4, c_aux=0.3, top_k=2), 0.25, 2, 8.0),  # top-2 of 3: balance not degenerate
])
def test_injected_gradient_equals_explicit_loss(mode, seed, coefs, rho, accum, grad_scale):
    model = make_model(seed, lora_dropout=0.1, **coefs)
    x = torch.randn(2, 4, 5, dtype=torch.float64, requires_grad=True)
    valid = torch.tensor([[True, True, True, False], [True, True, False, False]])
    params = [x] + [p for p in model.parameters() if p.requires_grad]
    go = torch.randn(2, 4, 5, dtype=torch.float64)

    # (a) injected: the trainer's loss is main/accum (HF divides), the aux gradient rides on the layers
    ctx = DyMoEContext(rho=rho, grad_accum=accum, num_modules=2, grad_scale=grad_scale, valid_mask=valid)
    assert attach_context(model, ctx) == 2
    torch.manual_seed(100)
    y = forward(model, x, mode)
    grads = backward_grads(grad_scale * (y * go).sum() / accum, params)

    # (b) explicit: same forward without context, aux terms added to the loss from the naive references
    attach_context(model, None)
    inputs = []
    hooks = [m.register_forward_pre_hook(lambda m, a: inputs.append(a[0])) for m in (model.l1, model.l2)]
    torch.manual_seed(100)
    y_ref = model(x)
    for h in hooks:
        h.remove()
    aux = sum(explicit_aux(m, inp, valid) for m, inp in zip((model.l1, model.l2), inputs)) / 2
    loss = grad_scale * ((y_ref * go).sum() + rho * aux) / accum
    grads_ref = backward_grads(loss, params)
    ref.assert_close(y, y_ref, what="output")
    for name, a, b in zip(["x"] + [n for n, p in model.named_parameters() if p.requires_grad], grads, grads_ref):
        ref.assert_close(a, b, rtol=1e-7, atol=1e-10, what=name)
    assert grads[1:][-1].abs().sum() > 0


@pytest.mark.parametrize("mode", CKPT_MODES)
def test_collector_counts_once_per_layer_under_checkpointing(mode):
    model = make_model(3, lora_dropout=0.0)
    collector = AuxCollector()
    attach_context(model, DyMoEContext(collector=collector))
    x = torch.randn(2, 4, 5, dtype=torch.float64, requires_grad=True)
    collector.reset()
    with collector.window():
        y = forward(model, x, mode)
    y.square().sum().backward()  # a reentrant/non-reentrant recompute happens here, window closed
    stats = collector.summary(expected=2)
    assert set(stats) == {"rsr_exc", "rsr_spe", "tag_new_frac"}
    # the logged values are the detached means over the layers of the explicit losses
    inputs = []
    hooks = [m.register_forward_pre_hook(lambda m, a: inputs.append(a[0])) for m in (model.l1, model.l2)]
    model(x)
    for h in hooks:
        h.remove()
    cfg = model.l1.dymoe_config
    zs = [ref.cosine(i.reshape(-1, 5), torch.cat(list(m.dymoe_router.values())))
          for m, i in zip((model.l1, model.l2), inputs)]
    exc = sum(ref.exclusivity(z, 3, cfg.top_k, cfg.rsr_temperature) for z in zs) / 2
    assert stats["rsr_exc"] == pytest.approx(exc.item(), rel=1e-5)


@pytest.mark.parametrize("mode", ["reentrant", "non_reentrant"])
def test_collector_count_check_catches_recorded_recompute(mode):
    model = make_model(4)
    collector = AuxCollector()
    attach_context(model, DyMoEContext(collector=collector))
    x = torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True)
    with collector.window():  # wrong: window still open during backward
        forward(model, x, mode).sum().backward()
    assert collector.count == 4
    with pytest.raises(RuntimeError, match="recorded twice"):
        collector.summary(expected=2)


def test_rho_zero_injects_nothing_but_still_records():
    model = make_model(5, lora_dropout=0.0)
    collector = AuxCollector()
    x = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    attach_context(model, DyMoEContext(rho=0.0, collector=collector))
    with collector.window():
        y = model(x)
    g = torch.autograd.grad(y.sum(), model.l1.dymoe_router["t1"])[0]
    attach_context(model, None)
    g_ref = torch.autograd.grad(model(x).sum(), model.l1.dymoe_router["t1"])[0]
    ref.assert_close(g, g_ref)
    assert collector.summary(expected=2)["rsr_spe"] > 0


def test_eval_mode_single_task_and_no_context():
    model = make_model(6)
    collector = AuxCollector()
    attach_context(model, DyMoEContext(collector=collector))
    x = torch.randn(4, 5, dtype=torch.float64)
    model.eval()
    with collector.window():
        model(x)
    assert collector.count == 0  # eval: no TAG, no aux, nothing recorded
    single = DyMoELinear(nn.Linear(5, 5), DyMoEConfig(experts_per_task=2, expert_rank=2, top_k=2))
    single.add_task()
    attach_context(single, DyMoEContext(collector=collector))
    with collector.window():
        single(torch.randn(3, 5))
    assert collector.summary(expected=1) == {}  # task 1: counted, no RSR terms
    with pytest.raises(ValueError, match="valid_mask"):
        attach_context(model.train(), DyMoEContext(valid_mask=torch.ones(3, dtype=torch.bool)))
        model(x)


def test_balance_loss_in_task_one_is_injected():
    """Task 1 (no old group): with c_aux > 0 the Switch balance over all experts is injected."""
    torch.manual_seed(7)
    layer = DyMoELinear(nn.Linear(5, 5, dtype=torch.float64),
                        DyMoEConfig(experts_per_task=4, expert_rank=2, top_k=2, lora_dropout=0.0, c_aux=0.5,
                                    router_temperature=0.5))
    layer.add_task(dtype=torch.float64)
    x = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
    router = layer.dymoe_router["t0"]
    attach_context(layer, DyMoEContext(rho=0.8, grad_accum=2))
    g = torch.autograd.grad(layer(x).sum(), (x, router))
    attach_context(layer, None)
    z = ref.cosine(x, router)
    loss = layer(x).sum() + 0.8 / 2 * 0.5 * ref.balance(z, 0, 2, layer.dymoe_config.router_temperature)
    g_ref = torch.autograd.grad(loss, (x, router))
    for a, b in zip(g, g_ref):
        ref.assert_close(a, b)
    assert (g_ref[1] - torch.autograd.grad(layer(x).sum(), router)[0]).abs().max() > 1e-4  # not vacuous


def test_context_scale():
    assert DyMoEContext(rho=0.5, grad_accum=4, num_modules=8, grad_scale=2.0).aux_grad_scale() == 0.5 * 2 / 32
    with pytest.raises(ValueError, match="grad_accum"):
        DyMoEContext(grad_accum=0).aux_grad_scale()
