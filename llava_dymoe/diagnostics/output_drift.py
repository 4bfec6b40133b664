"""Output-level drift of old-task inputs (beside the gate-mass ``drift``; pilot-drift.md, issue 7).

Gate mass on the new experts is not forgetting by itself: an expert that receives a token but adds little
to its output is harmless.  Two measures look at outputs instead.

**New-bank delta norm** (per DyMoE module, later checkpoint B with ``n_B`` banks, earlier checkpoint A with
``n_A`` banks, on the valid tokens x of the old task's inputs).  With B's eval-mode gate ``g(x)`` over all
of B's experts (``gate_for``: no TAG, no dropout) and the per-expert LoRA factors ``A_e`` (rank slice of
``dymoe_A``) and ``B_e`` (column slice of ``dymoe_B``)::

    delta_new(x) = sum_{e in banks >= n_A} g_e(x) * scaling * B_e A_e x      (banks added after A)
    delta_old(x) = sum_{e in banks <  n_A} g_e(x) * scaling * B_e A_e x      (A's banks, under B's gate)
    base(x)      = W0 x                                                       (bias not included)

and, averaged over the N valid tokens::

    new_delta_norm = mean_t ||delta_new(x_t)||_2      old_delta_norm, base_norm likewise
    new_over_old   = new_delta_norm / old_delta_norm  (ratio of the means; None when the old one is 0)
    new_over_base  = new_delta_norm / base_norm

``W0 x + b + delta_old + delta_new`` is the layer's eval-mode output.  Computed by ``DeltaNorms`` from a
forward hook on each ``DyMoELinear`` (its input and public parameters); nothing is added to the layer's
forward, and with no ``DeltaNorms`` attached there is no hook and no cost.

**Answer-logit KL** (whole model, teacher forced): each old-task question with its reference answer is
tokenised as a LLaVA training sample (conversation ``human: <image>\\n{question}``, ``gpt: {answer}``,
conv vicuna_v1, ``preprocess_v1``); at every answer token (label != IGNORE_INDEX, the tokens the training
loss covers, the closing ``</s>`` included) the next-token distributions p_A and p_B (softmax of the logits
at the preceding position) give::

    answer_kl      = mean over answer tokens of KL(p_A || p_B) = sum_v p_A(v) (log p_A(v) - log p_B(v))
    argmax_changed = fraction of answer tokens with argmax p_A != argmax p_B
    token_acc_*    = fraction of answer tokens whose argmax is the reference token (A, B)
"""
from __future__ import annotations

import contextlib
from typing import Any, Dict, Iterator, List, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.layer import DyMoELinear, dymoe_layers
from ..core.routing import cosine_logits_parts, gate, routing_dtype


# ---------------------------------------------------------------------------------------------- delta norms
def gate_for(layer: DyMoELinear, x: Tensor) -> Tensor:
    """Eval-mode gate ``[N, E]`` of ``layer`` over all of its experts for inputs ``x`` ``[..., in]``.

    Router kinds (``dymoe_config.router``, "cosine" when the config has no such field): "cosine" = cosine
    logits at ``router_scale``; "linear" = plain dot-product logits (``cosine_logits`` with scale 0); both
    then ``gate(logits, top_k, router_temperature)`` (no TAG mask: eval routes over all experts);
    "none" = every expert has weight 1.
    """
    cfg = layer.dymoe_config
    kind = getattr(cfg, "router", "cosine")
    xf = x.reshape(-1, layer.in_features)
    if kind == "none":
        n_experts = len(layer.task_keys()) * layer.experts_per_task
        return torch.ones(xf.shape[0], n_experts, dtype=routing_dtype(xf.dtype), device=xf.device)
    if kind == "cosine":
        scale = cfg.router_scale
    elif kind == "linear":
        scale = 0.0
    else:
        raise ValueError(f"gate_for: unknown router kind {kind!r} (cosine, linear, none)")
    logits = cosine_logits_parts(xf, [layer.dymoe_router[k] for k in layer.task_keys()], scale)
    return gate(logits, cfg.top_k, cfg.router_temperature)


def bank_deltas(layer: DyMoELinear, x: Tensor, n_before: int) -> Tuple[Tensor, Tensor, Tensor]:
    """``(base, delta_old, delta_new)``, each ``[N, out]`` in fp32 (fp64 for fp64 inputs): ``W0 x``, the
    gated contribution of banks ``t0..t{n_before-1}`` and that of the later banks (module docstring)."""
    keys = layer.task_keys()
    if not 0 <= n_before <= len(keys):
        raise ValueError(f"bank_deltas: n_before must lie in [0, {len(keys)}], got {n_before!r}")
    dt = routing_dtype(x.dtype)
    xf = x.reshape(-1, layer.in_features).to(dt)
    base = F.linear(xf, layer.weight.to(dt))
    g = gate_for(layer, xf).to(dt)
    n, ept, r = xf.shape[0], layer.experts_per_task, layer.expert_rank
    old = torch.zeros(n, layer.out_features, dtype=dt, device=xf.device)
    new = torch.zeros_like(old)
    for i, k in enumerate(keys):
        gk = g[:, i * ept:(i + 1) * ept]  # [N, experts of bank k]
        xa = F.linear(xf, layer.dymoe_A[k].to(dt)).view(n, ept, r) * gk[:, :, None]
        delta = F.linear(xa.reshape(n, ept * r), layer.dymoe_B[k].to(dt)) * layer.scaling
        if i < n_before:
            old += delta
        else:
            new += delta
    return base, old, new


class DeltaNorms:
    """Per-module sums of ``||delta_new||``, ``||delta_old||`` and ``||W0 x||`` over valid tokens.

    ``attached(model)`` registers a forward hook on every ``DyMoELinear`` of ``model`` for the block's
    duration; a layer's valid-token mask comes from its ``DyMoEContext`` (``valid_mask``) when it has one.
    Banks ``t0..t{n_before-1}`` are "old" (checkpoint A's), the others "new".
    """

    def __init__(self, n_before: int):
        if isinstance(n_before, bool) or not isinstance(n_before, int) or n_before < 0:
            raise ValueError(f"DeltaNorms: n_before must be an int >= 0, got {n_before!r}")
        self.n_before = n_before
        self.sums: Dict[str, Tensor] = {}  # name -> fp64 [4]: n_tokens, sum ||new||, sum ||old||, sum ||W0 x||

    def reset(self) -> None:
        self.sums.clear()

    @torch.no_grad()
    def record(self, name: str, layer: DyMoELinear, x: Tensor) -> None:
        if len(layer.task_keys()) < self.n_before:
            raise ValueError(f"{name}: the model has {len(layer.task_keys())} bank(s), fewer than the earlier "
                             f"checkpoint's {self.n_before}; pass the checkpoints in training order")
        xf = x.reshape(-1, layer.in_features)
        ctx = getattr(layer, "_dymoe_ctx", None)
        valid = ctx.token_valid(xf.shape[0], xf.device) if ctx is not None else None
        if valid is not None:
            xf = xf[valid]
        base, old, new = bank_deltas(layer, xf, self.n_before)
        row = torch.stack([torch.tensor(float(xf.shape[0]), dtype=torch.float64, device=xf.device),
                           new.norm(dim=1).sum(dtype=torch.float64), old.norm(dim=1).sum(dtype=torch.float64),
                           base.norm(dim=1).sum(dtype=torch.float64)])
        self.sums[name] = self.sums[name] + row if name in self.sums else row

    @contextlib.contextmanager
    def attached(self, model: nn.Module) -> Iterator["DeltaNorms"]:
        handles = []
        try:
            for name, layer in dymoe_layers(model):
                if layer.num_tasks:
                    handles.append(layer.register_forward_hook(self._hook(name)))
            yield self
        finally:
            for h in handles:
                h.remove()

    def _hook(self, name: str):
        def hook(module, args, output):
            self.record(name, module, args[0])
        return hook

    def summary(self) -> Dict[str, Dict[str, Any]]:
        """Per module: ``n_tokens``, ``new_delta_norm``, ``old_delta_norm``, ``base_norm``, ``new_over_old``
        and ``new_over_base`` (ratios of the means; None when the denominator is 0)."""
        out = {}
        for name, s in self.sums.items():
            n, new, old, base = s.tolist()
            new, old, base = (v / n if n else 0.0 for v in (new, old, base))
            out[name] = {"n_tokens": int(n), "new_delta_norm": new, "old_delta_norm": old, "base_norm": base,
                         "new_over_old": new / old if old > 0 else None,
                         "new_over_base": new / base if base > 0 else None}
        return out


# ---------------------------------------------------------------------------------------------- answer KL
def answer_kl(logits_a: Tensor, logits_b: Tensor) -> Tensor:
    """Per-position ``KL(p_A || p_B)`` ``[T]`` from next-token logits ``[T, V]``; softmax and KL in fp64 (the
    KL of two close models is far below fp32 log-probability rounding)."""
    if logits_a.shape != logits_b.shape:
        raise ValueError(f"answer_kl: shapes differ, {tuple(logits_a.shape)} vs {tuple(logits_b.shape)}")
    logp_a = torch.log_softmax(logits_a.double(), dim=-1)
    logp_b = torch.log_softmax(logits_b.double(), dim=-1)
    return F.kl_div(logp_b, logp_a, reduction="none", log_target=True).sum(-1)


def answer_logits(probe, rows: List[Dict[str, Any]], image_folder: str,
                    refs: Dict[str, Any]) -> List[Dict[str, Tensor]]:
    """Teacher-forced next-token logits at the answer tokens of every question, per question
    ``{"logits": [T, V] fp32, "target": [T]}`` (``Probe.teacher_forced``; prompt: module docstring)."""
    from llava.constants import DEFAULT_IMAGE_TOKEN

    out = []
    for row in rows:
        answer = refs[str(row["question_id"])]
        if isinstance(answer, (list, tuple)):  # several references: teacher-force the first
            answer = answer[0]
        conv = [{"from": "human", "value": DEFAULT_IMAGE_TOKEN + "\n" + row["text"]},
                {"from": "gpt", "value": str(answer)}]
        ids, labels = probe.conversation_ids(conv)
        pixels, _ = probe.image(image_folder, row["image"])
        out.append(probe.teacher_forced(ids, labels, pixels))
    return out


def compare_answers(before: List[Dict[str, Tensor]], after: List[Dict[str, Tensor]]) -> Dict[str, Any]:
    """``answer_kl``, ``argmax_changed``, ``token_acc_before``/``after`` and ``n_answer_tokens`` (pooled
    over all answer tokens of all questions)."""
    if len(before) != len(after):
        raise ValueError(f"compare_answers: {len(before)} vs {len(after)} questions")
    kl_sum, changed, hit_a, hit_b, n = 0.0, 0, 0, 0, 0
    for a, b in zip(before, after):
        if not torch.equal(a["target"], b["target"]):
            raise ValueError("compare_answers: the answer tokens differ between the checkpoints (tokenizers?)")
        kl_sum += float(answer_kl(a["logits"], b["logits"]).sum())
        arg_a, arg_b = a["logits"].argmax(-1), b["logits"].argmax(-1)
        changed += int((arg_a != arg_b).sum())
        hit_a += int((arg_a == a["target"]).sum())
        hit_b += int((arg_b == b["target"]).sum())
        n += int(a["target"].numel())
    if n == 0:
        raise ValueError("compare_answers: no answer tokens (did preprocess_v1 mask every label?)")
    return {"answer_kl": kl_sum / n, "argmax_changed": changed / n, "token_acc_before": hit_a / n,
            "token_acc_after": hit_b / n, "n_answer_tokens": n}
