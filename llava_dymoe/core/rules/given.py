"""``assign_rule="given"``: banks weighted by a model-level selector (the ``oracle_bank`` / ``hide_selector``
baselines), not by the layer.

* Training (layer in training mode): every token may use only the newest (trainable) bank's experts, so each bank
  is trained on its own task's data only; ``use_new`` is every token.
* Inference: the attached ``DyMoEContext.bank_weights`` ``[B, T]`` (set before the LLM forward; one-hot = a known
  task, a softmax over task similarities = a selector) weigh the banks per sequence, and inside each bank the gate
  is the top-k (``min(top_k, experts_per_task)``) softmax of the router logits at ``router_temperature``:
  ``g[n, e] = bank_weights[seq(n), bank(e)] * softmax_topk_within_bank(e)(z[n] / T)[e]``
  (``routing.banked_gate``).  A bank of weight 0 gets exact zeros (the sparse mixing skips it).  The same rows
  serve every forward of the same ``B`` sequences, KV-cache decoding steps included.
"""
from __future__ import annotations

import torch

from .base import Assignment, Rule, RuleInput, bank_mask


class GivenRule(Rule):
    """Newest bank while training; the context's per-sequence bank weights at inference."""

    def assign(self, inp: RuleInput) -> Assignment:
        n = inp.logits.shape[0]
        if inp.training:
            if inp.num_tasks < 2:
                return Assignment()
            newest = torch.full((n,), inp.num_tasks - 1, dtype=torch.long, device=inp.logits.device)
            use_new = torch.ones(n, dtype=torch.bool, device=inp.logits.device) if inp.n_old > 0 else None
            return Assignment(allowed=bank_mask(inp, newest), use_new=use_new)
        return Assignment(bank_weights=token_bank_weights(inp))


def token_bank_weights(inp: RuleInput) -> torch.Tensor:
    """The context's ``bank_weights`` ``[B, T]`` repeated to the tokens, ``[N, T]`` in the logits' dtype."""
    ctx = inp.ctx
    w = ctx.bank_weights if ctx is not None else None
    if w is None:
        where = "no DyMoEContext is attached to the layer" if ctx is None else "DyMoEContext.bank_weights is None"
        raise ValueError(f"assign_rule='given' at inference needs the bank weights of the batch's sequences, but "
                         f"{where}: set ctx.bank_weights to a float [batch, {inp.num_tasks}] tensor (one row per "
                         "sequence, one column per task bank; e.g. one-hot on the task id) before the LLM forward, "
                         "with the context attached (attach_context)")
    n, shape = inp.logits.shape[0], tuple(inp.batch_shape)
    batch = shape[0] if len(shape) >= 2 else 1
    if w.dim() != 2 or w.shape[1] != inp.num_tasks or w.shape[0] != batch or n % batch:
        raise ValueError(f"DyMoEContext.bank_weights has shape {tuple(w.shape)}, expected [{batch}, "
                         f"{inp.num_tasks}] (the layer input's batch {shape} x the layer's {inp.num_tasks} banks)")
    if not w.is_floating_point():
        raise ValueError(f"DyMoEContext.bank_weights must be a float tensor, got {w.dtype}")
    w = w.to(device=inp.logits.device, dtype=inp.logits.dtype)
    return w.repeat_interleave(n // batch, dim=0)
