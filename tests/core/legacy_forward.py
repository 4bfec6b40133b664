"""The routing of ``DyMoELinear.forward`` as it was before the rules were split into ``core/rules`` (commit
de022fe), kept verbatim as a reference: the refactored layer must give bit-identical outputs and gradients
for the paper's recipe, IncMoELoRA, the token cascade and the sequence bank (tests/core/test_rules.py).

``legacy_forward(layer, x, state)`` runs the old branch chain on ``layer``'s banks; ``state`` (a dict) holds the
old ``_dymoe_seq_bank`` between calls.  Only the routing is copied: the banks, the mixing and the aux terms are
the layer's own methods, which the refactor did not touch."""
import torch
import torch.nn.functional as F

from llava_dymoe.core.layer import dense_forced
from llava_dymoe.core.routing import (cascade_assignment, cosine_logits_parts, gate, new_token_mask, routing_dtype,
                                      sequence_cascade_assignment)


def legacy_forward(layer, x, state):
    if layer.num_tasks == 0:
        return F.linear(x, layer.weight, layer.bias)
    cfg = layer.dymoe_config
    xf = x.reshape(-1, layer.in_features)
    parts = layer._parts()
    multi = layer.training and layer.num_tasks >= 2
    n_old = layer.num_experts - layer.experts_per_task if multi else 0
    use_new = logits = None
    if cfg.router == "none":
        g = torch.ones(xf.shape[0], layer.num_experts, dtype=routing_dtype(xf.dtype), device=xf.device)
    else:
        scale = cfg.router_scale if cfg.router == "cosine" else 0.0
        logits = cosine_logits_parts(xf, [p[2] for p in parts], scale)
        allowed = None
        if cfg.assign_rule == "cascade" and layer.num_tasks >= 2:
            score = logits
            if "dymoe_key" in layer.bank_names:
                score = cosine_logits_parts(xf, [layer.dymoe_key[k] for k in layer.task_keys()], scale)
            if cfg.bank_scope == "sequence":
                bank = _sequence_bank(layer, score, x, state)
            else:
                bank = cascade_assignment(score, layer.experts_per_task, cfg.tau, cfg.tag_gap, cfg.router_scale)
            bank_of = torch.arange(layer.num_experts, device=logits.device) // layer.experts_per_task
            allowed = bank[:, None] == bank_of[None, :]
            if multi:
                use_new = bank == layer.num_tasks - 1
        elif multi and cfg.use_tag:
            use_new = new_token_mask(logits, n_old, cfg.tau, cfg.tag_gap, cfg.router_scale)
            is_new = torch.arange(layer.num_experts, device=logits.device) >= n_old
            allowed = use_new[:, None] == is_new[None, :]
        g = gate(logits, cfg.top_k, cfg.router_temperature, allowed)
    aux = []
    if layer.training and layer._dymoe_ctx is not None:
        aux = layer._aux(logits, n_old, use_new)
    if cfg.router == "none" or dense_forced():
        y = layer._mix(xf, g, parts, aux)
    else:
        y = layer._mix_sparse(xf, g, parts, aux)
    return y.view(*x.shape[:-1], layer.out_features)


def _sequence_bank(layer, score, x, state):
    cfg = layer.dymoe_config
    batch = x.shape[0] if x.dim() >= 3 else 1
    seq_len = score.shape[0] // batch
    kept = state.get("kept")
    if not layer.training and seq_len == 1 and kept is not None and kept.shape[0] == batch:
        seq = kept
    else:
        ctx = layer._dymoe_ctx
        valid = ctx.token_valid(score.shape[0], score.device) if ctx is not None else None
        seq = sequence_cascade_assignment(score, batch, layer.experts_per_task, cfg.sequence_tau, cfg.tag_gap,
                                          cfg.router_scale, valid)
        state["kept"] = None if layer.training else seq
    return seq.repeat_interleave(seq_len)
