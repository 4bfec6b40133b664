"""DyMoE core (torch only; never imports llava, transformers, deepspeed or peft).

Public API (method.md §1–§3, §8):

- routing:   ``cosine_logits``, ``tag_mask``, ``new_token_mask``, ``gate``
- losses:    ``exclusivity_loss``, ``specialization_loss``, ``rsr_losses``, ``new_expert_balance_loss``,
             ``orthogonality_loss`` (O-LoRA baseline), ``masked_mean``
- layer:     ``DyMoELinear``, ``dymoe_layers``, ``attach_context``, ``attach_stats``
- rules:     ``core.rules``: the token-to-bank rules (paper, cascade, sequence, given) behind
             ``Rule.assign(RuleInput) -> Assignment``; ``make_rule(cfg)`` picks one from the config
- transport: ``DyMoEContext``, ``AuxCollector``, ``AuxLossInjector``, ``inject_aux``
- schedule:  ``rsr_schedule``
- stats:     ``RoutingStats`` (routing statistics on demand, off by default; ``attach_stats`` turns them on)

Trainer usage (one context for the whole model; works with and without gradient checkpointing, reentrant
or not, and under ZeRO-3, because the aux gradient rides on each layer's output)::

    n_layers = len(list(dymoe_layers(model)))    # e.g. 32 decoder layers x 7 projections
    ctx = DyMoEContext(grad_accum=args.gradient_accumulation_steps, num_modules=n_layers,
                       grad_scale=1.0, collector=AuxCollector())   # grad_scale: fp16 loss scale, if any
    attach_context(model, ctx)
    # every micro-batch, in compute_loss:
    ctx.rho = rsr_schedule(state.global_step / state.max_steps, cfg.rsr_start)
    ctx.valid_mask = None   # or bool [B, S]; in LLaVA integration/context_hooks.py sets it (and the spliced
                            # labels, the KV-cache length) from the forward (llava-integration.md §6.3 item 5)
    ctx.collector.reset()
    with ctx.collector.window():                  # closed before backward: recomputes are not counted
        out = model(**inputs)
    stats = ctx.collector.summary(expected=n_layers)   # detached means, for logging only
    return out.loss                               # do NOT add the aux terms: their gradient is injected
"""
from .layer import DyMoELinear, attach_context, attach_stats, dymoe_layers
from .losses import (exclusivity_loss, masked_mean, new_expert_balance_loss, orthogonality_loss, rsr_losses,
                     specialization_loss)
from .routing import cosine_logits, gate, new_token_mask, tag_mask
from .schedule import rsr_schedule
from .stats import RoutingStats
from .transport import AuxCollector, AuxLossInjector, DyMoEContext, inject_aux

__all__ = [
    "AuxCollector", "AuxLossInjector", "DyMoEContext", "DyMoELinear", "RoutingStats", "attach_context",
    "attach_stats", "cosine_logits",
    "dymoe_layers", "exclusivity_loss", "gate", "inject_aux", "masked_mean", "new_expert_balance_loss",
    "new_token_mask", "orthogonality_loss", "rsr_losses", "rsr_schedule", "specialization_loss", "tag_mask",
]
