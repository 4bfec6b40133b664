"""``router_init="centroids"`` (beyond the paper): warm-start the new bank's router rows from the task's data.

Before the first training step (and before DeepSpeed wraps the model), ``router_init_batches`` batches of
the task's training set are run through the model in eval mode with the new bank set aside, i.e. through
exactly the previous task's model (the new bank's B is 0, so this is also what step 0 of training computes
up to routing).  A forward pre-hook on every ``DyMoELinear`` keeps up to ``MAX_TOKENS`` valid input tokens
(attention mask), and each layer's new router rows become the spherical k-means centroids of its tokens
(``core.centroids``), rescaled to the norms of the kaiming rows they replace (the cosine router ignores the
norm, the optimizer's step size relative to the row does not).

The batches are drawn with their own generator seeded from (seed, task): the training data order and every
other random stream are untouched.  Under ZeRO-3 the base weights are partitioned before the trainer
exists, so this pass cannot run there (refused with the alternative named).
"""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional

import torch
from torch import Tensor, nn

from ..core import DyMoELinear, dymoe_layers
from ..core.centroids import spherical_kmeans

log = logging.getLogger("llava_dymoe.trainer")

#: Tokens kept per projection for the k-means (a uniform subsample when the batches hold more).
MAX_TOKENS = 4096


class _Bank:
    """The trainable bank of one layer, set aside while the calibration batches run."""

    def __init__(self, layer: DyMoELinear, key: str):
        self.layer, self.key = layer, key
        self.params = {name: getattr(layer, name).pop(key) for name in layer.bank_names}

    def restore(self) -> None:
        for name, p in self.params.items():
            getattr(self.layer, name)[self.key] = p
        self.layer._dymoe_cache.clear()


def _move(batch: Dict[str, Any], device) -> Dict[str, Any]:
    return {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}


class _Enough(Exception):
    """Raised by the hook of the one layer asked for: the rest of the forward is not needed."""


@torch.no_grad()
def collect_inputs(model: nn.Module, batches: List[Dict[str, Any]], ctx, generator: torch.Generator,
                   max_tokens: int = MAX_TOKENS, only: Optional[str] = None,
                   prompt_only: bool = False) -> Dict[str, Tensor]:
    """``{layer name: [n <= max_tokens, in_features]}`` valid inputs of every DyMoE layer over ``batches``;
    ``only``: of that layer alone, each forward stopped once its input is seen; ``prompt_only``: the valid
    tokens that carry no label (``ctx.token_prompt``), i.e. what a per-sequence decision pools."""
    kept: Dict[str, List[Tensor]] = {}

    def hook_for(name):
        def hook(module, args):
            x = args[0].reshape(-1, module.in_features)
            pick = ctx.token_prompt if prompt_only else ctx.token_valid
            valid = pick(x.shape[0], x.device) if ctx is not None else None
            kept.setdefault(name, []).append((x[valid] if valid is not None else x).detach().float().cpu())
            if only is not None:
                raise _Enough
        return hook

    handles = [layer.register_forward_pre_hook(hook_for(name)) for name, layer in dymoe_layers(model)
               if only is None or name == only]
    device = next(p.device for p in model.parameters())
    try:
        for batch in batches:
            try:
                model(**_move(batch, device))
            except _Enough:
                pass
    finally:
        for h in handles:
            h.remove()
    out = {}
    for name, parts in kept.items():
        x = torch.cat(parts)
        if x.shape[0] > max_tokens:
            x = x[torch.randperm(x.shape[0], generator=generator)[:max_tokens]]
        out[name] = x
    return out


def init_router_from_data(model: nn.Module, key: str, dataset, collator, batch_size: int, n_batches: int,
                          seed: int, ctx=None) -> Dict[str, float]:
    """Set bank ``key``'s router rows of every DyMoE layer to centroids of the task's inputs (module docstring).

    Returns a summary: layers initialised, tokens per layer (min), mean cosine of a token to its centroid.
    """
    summary = _fit_rows(model, key, dataset, collator, batch_size, n_batches, seed, ctx, refresh=False)
    for _, layer in dymoe_layers(model):  # bank_keys="refreshed": the keys start as the warm-started rows
        if "dymoe_key" in layer.bank_names:
            with torch.no_grad():
                layer.dymoe_key[key].copy_(layer.dymoe_router[key])
    return summary


def refresh_router_from_data(model: nn.Module, key: str, dataset, collator, batch_size: int, n_batches: int,
                             seed: int, ctx=None) -> Dict[str, float]:
    """``router_refresh`` (beyond the paper): re-centre bank ``key``'s rows on the task's inputs *through the
    trained model* (every bank in place), k-means started from the current rows so row j stays the cluster its
    experts were trained behind.

    Why: the rows were set before the task trained, from inputs that the task's own bank then changed (deeper
    projections see the outputs of earlier ones); a later task's rows are set from inputs that pass through this
    bank.  Re-centring at the end of the task measures every bank's rows on the same footing: its task's tokens
    as the finished model computes them.  Summary as ``init_router_from_data`` plus ``moved``: the share of
    tokens whose best row changed, and ``fit_before`` (mean token-row cosine before re-centring).
    """
    return _fit_rows(model, key, dataset, collator, batch_size, n_batches, seed, ctx, refresh=True)


def refresh_keys_from_data(model: nn.Module, key: str, dataset, collator, batch_size: int, n_batches: int,
                           seed: int, ctx=None, prompt_only: bool = False) -> Dict[str, float]:
    """``bank_keys="refreshed"`` (beyond the paper): as ``refresh_router_from_data``, for bank ``key``'s cascade
    keys (``dymoe_key``) instead of its router rows, so the gate inside the bank, which the experts were trained
    behind, is untouched; only which bank a token goes to follows the finished model's inputs.

    Projection by projection in forward order: a projection's keys are fitted on inputs computed with every
    earlier projection's keys already re-centred (the bank decisions upstream change what it sees), so the
    result is consistent with the model that will answer, one forward pass (cut at the projection) each.

    ``prompt_only`` (``bank_scope="sequence"``): the keys are fitted on the prompt tokens alone, the tokens whose
    scores the per-sequence decision pools in training and at inference; answer tokens (a quarter of a grounding
    sequence) would fit keys on tokens the decision never sees."""
    return _fit_rows(model, key, dataset, collator, batch_size, n_batches, seed, ctx, refresh=True,
                     target="dymoe_key", prompt_only=prompt_only)


def _fit_rows(model: nn.Module, key: str, dataset, collator, batch_size: int, n_batches: int, seed: int, ctx,
              refresh: bool, target: str = "dymoe_router", prompt_only: bool = False) -> Dict[str, float]:
    what = ("bank keys" if target == "dymoe_key" else "router_refresh") if refresh \
        else "router_init='centroids'"
    if dataset is None or len(dataset) == 0:
        raise ValueError(f"{what} needs the task's training set; none was given to the trainer")
    gen = torch.Generator().manual_seed(int(seed))
    order = torch.randperm(len(dataset), generator=gen).tolist()
    batches = [collator([dataset[i] for i in order[s:s + batch_size]])
               for s in range(0, min(len(order), batch_size * n_batches), batch_size)]
    layers = dict(dymoe_layers(model))
    banks = [] if refresh else [_Bank(layer, key) for layer in layers.values()]
    sequential = refresh and target == "dymoe_key"
    fits, before, moved, counts = [], [], [], []
    was_training = model.training
    model.eval()
    try:
        if not sequential:
            try:
                inputs = collect_inputs(model, batches, ctx, gen, prompt_only=prompt_only)
            finally:
                for bank in banks:
                    bank.restore()
        for name, layer in layers.items():
            if sequential:
                inputs = collect_inputs(model, batches, ctx, gen, only=name, prompt_only=prompt_only)
            x = inputs.get(name)
            if x is None or x.shape[0] == 0:
                raise RuntimeError(f"{what}: layer {name} saw no valid token in {len(batches)} batches")
            router = getattr(layer, target)[key]
            u = x / x.norm(dim=1, keepdim=True).clamp_min(1e-6)
            if refresh:
                old = router.detach().float().to(u.device)
                old = old / old.norm(dim=1, keepdim=True).clamp_min(1e-6)
                sim_old = u @ old.t()
                cent = spherical_kmeans(x, router.shape[0], init=old)
            else:
                cent = spherical_kmeans(x, router.shape[0], generator=gen)
            norms = router.detach().float().norm(dim=1, keepdim=True)
            with torch.no_grad():
                router.copy_((cent * norms.to(cent.device)).to(device=router.device, dtype=router.dtype))
            sim = u @ cent.t()
            fits.append(float(sim.amax(dim=1).mean()))
            if refresh:
                before.append(float(sim_old.amax(dim=1).mean()))
                moved.append(float((sim_old.argmax(dim=1) != sim.argmax(dim=1)).float().mean()))
            counts.append(x.shape[0])
    finally:
        model.train(was_training)
    _broadcast_rows(layers.values(), key, target)
    summary = {"layers": len(layers), "batches": len(batches), "min_tokens": min(counts),
               "mean_fit": sum(fits) / len(fits)}
    if refresh:
        summary.update(fit_before=sum(before) / len(before), moved=sum(moved) / len(moved))
        log.info("%s: bank %s of %d layers from %d batches; mean cosine token-row %.3f -> %.3f, "
                 "%.1f %% of tokens changed their best row", what, key, summary["layers"], summary["batches"],
                 summary["fit_before"], summary["mean_fit"], 100 * summary["moved"])
    else:
        log.info("router_init=centroids: bank %s of %d layers from %d batches (>= %d tokens per layer; mean "
                 "cosine token-centroid %.3f)", key, summary["layers"], summary["batches"], summary["min_tokens"],
                 summary["mean_fit"])
    return summary


def _broadcast_rows(layers, key: str, target: str = "dymoe_router") -> None:
    """Every rank computed the rows from the same batches; rank 0's copy wins so that ranks can never differ
    (GPU kernels need not be bitwise deterministic)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        for layer in layers:
            dist.broadcast(getattr(layer, target)[key].data, src=0)
            if target == "dymoe_router" and "dymoe_key" in layer.bank_names and key in layer.dymoe_key:
                dist.broadcast(layer.dymoe_key[key].data, src=0)
