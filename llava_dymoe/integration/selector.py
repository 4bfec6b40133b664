"""Task selectors on a LLaVA model: anchors fitted per task, saved with the checkpoint, bank weights at eval.

``DyMoEConfig.task_selector`` (with ``assign_rule="given"``):

* ``"hide"`` (``--dymoe_method hide_selector``): at the end of each task's training, ``fit_task_anchor`` reads
  ``selector_samples`` training samples (a seeded draw, the same on every rank) and keeps the mean image and
  text feature (``task_features.py``); the task checkpoint stores every task's anchors so far in
  ``dymoe_anchors.safetensors`` (earlier rows copied from the previous checkpoint bit for bit).  At eval each
  prompt's bank weights are ``softmax(mean cosine to each task's anchors / selector_temperature)``.
* ``"prism"`` (``--dymoe_method prism_selector``, Prism's port of HiDe-LLaVA's selector): the same anchors, fitted
  the same way; at eval each prompt uses the bank of the most similar task alone (one-hot argmax).
* ``"shortlist"`` (``--dymoe_method anchored_keys``, beyond the papers): the same anchors, fitted the same way; at
  eval each prompt's ``selector_shortlist`` most similar tasks get weight 1 (0 elsewhere), and the layers' fitted keys
  choose one bank among them (``core/rules/key_selector.py``).
* ``"oracle"`` (``--dymoe_method oracle_bank``, an UPPER BOUND): the eval job names the true task,
  ``DYMOE_EVAL_TASK_ID=i`` (1-based, set by ``cli run`` for every job of this method), and every prompt uses
  bank ``t{i-1}`` alone.

``install_task_selector`` puts the weights into the layers' ``DyMoEContext.bank_weights`` before the LLM body
runs: a forward pre-hook on the model (a forward with ``input_ids`` and several tokens: a prompt) and a wrapper
of the model's ``generate`` (upstream LLaVA's ``generate`` splices the image into ``inputs_embeds`` before its
first forward, so that forward no longer sees the image).  A one-token forward of the same batch size (a decoding
step with the KV cache) keeps the prompt's weights.
"""
from __future__ import annotations

import functools
import logging
import os
from typing import Any, Dict, Optional, Tuple

import torch
from torch import Tensor

from ..core import DyMoEContext, attach_context, dymoe_layers
from ..core.task_selector import TaskAnchors, one_hot_weights
from .checkpoint import CheckpointError
from .task_features import batch_features

log = logging.getLogger("llava_dymoe.selector")

#: The anchors file of a ``task_selector`` "hide" or "prism" task checkpoint (hashed in the completion marker).
ANCHORS = "dymoe_anchors.safetensors"
#: environment variable: the true task (1-based) of an ``oracle_bank`` evaluation.
TASK_ID_ENV = "DYMOE_EVAL_TASK_ID"
#: environment variable (analysis): answer an anchor selector's checkpoint with the other anchor selector.
TASK_SELECTOR_ENV = "DYMOE_EVAL_TASK_SELECTOR"


# ---------------------------------------------------------------------------------------------- anchors (train)
def sample_batches(dataset, collator, batch_size: int, n_samples: int, seed: int):
    """Batches of ``min(n_samples, len(dataset))`` samples drawn with their own generator (no global RNG)."""
    if dataset is None or len(dataset) == 0:
        raise ValueError("task_selector 'hide' / 'prism' / 'shortlist' fits the task's anchors on its training set; "
                         "none was given")
    gen = torch.Generator().manual_seed(int(seed))
    order = torch.randperm(len(dataset), generator=gen)[:n_samples].tolist()
    for s in range(0, len(order), batch_size):
        yield collator([dataset[i] for i in order[s:s + batch_size]])


@torch.no_grad()
def fit_task_anchor(model, batches) -> Tuple[Dict[str, Tensor], int]:
    """``({"image": [Dv], "text": [d]}, samples)``: the mean features over ``batches`` (fp64 sums, fp32 result).
    Rank 0's result is broadcast, so every rank holds the anchors that rank 0 saves."""
    sums: Dict[str, Tensor] = {}
    n = 0
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            feats = batch_features(model, batch)
            if feats["image"] is None:
                raise ValueError("task_selector 'hide' / 'prism' needs an image per training sample (the image "
                                 "anchor); the task's batches carry no images")
            for m, f in feats.items():
                s = f.double().sum(dim=0).cpu()
                sums[m] = sums[m] + s if m in sums else s
            n += int(feats["text"].shape[0])
    finally:
        model.train(was_training)
    anchor = {m: (s / n).float() for m, s in sums.items()}
    _broadcast(anchor)
    return anchor, n


def _broadcast(anchor: Dict[str, Tensor]) -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else None
        for m in sorted(anchor):
            t = anchor[m].to(device) if device is not None else anchor[m]
            dist.broadcast(t, src=0)
            anchor[m] = t.cpu()


def read_anchors(path: str) -> Optional[TaskAnchors]:
    """The anchors saved in checkpoint ``path`` (None when it has none)."""
    from safetensors.torch import load_file

    fp = os.path.join(path, ANCHORS)
    return TaskAnchors.from_tensors(load_file(fp)) if os.path.isfile(fp) else None


def anchors_bytes(anchors: TaskAnchors) -> bytes:
    from safetensors.torch import save

    return save(anchors.to_tensors(), metadata={"tasks": str(anchors.num_tasks)})


def carry_anchors(prev_ckpt: Optional[str], new: Dict[str, Tensor], count: int, task_index: int) -> TaskAnchors:
    """The anchors of tasks 0..task_index: the previous checkpoint's rows (bit for bit) plus ``new``."""
    if task_index == 0 or not prev_ckpt:
        if task_index != 0:
            raise CheckpointError(f"task_selector 'hide' / 'prism': task {task_index + 1} needs the anchors of the "
                                  "earlier tasks, but no previous checkpoint was given")
        return TaskAnchors.first(new, count)
    prev = read_anchors(prev_ckpt)
    if prev is None or prev.num_tasks != task_index:
        raise CheckpointError(f"task_selector 'hide' / 'prism': {prev_ckpt} holds "
                              f"{0 if prev is None else prev.num_tasks} task anchor(s) in {ANCHORS}, task "
                              f"{task_index + 1} needs {task_index}; the previous task was not trained with "
                              "--dymoe_method hide_selector, prism_selector or anchored_keys")
    return prev.append(new, count)


# ---------------------------------------------------------------------------------------------- eval
def requested_task_id(num_tasks: int, model_path: str) -> int:
    """The 0-based oracle bank from ``$DYMOE_EVAL_TASK_ID`` (1-based); refuses a missing or bad value."""
    raw = os.environ.get(TASK_ID_ENV, "").strip()
    if not raw:
        raise CheckpointError(f"{model_path} was trained with --dymoe_method oracle_bank, an upper bound that is "
                              f"told the true task at evaluation: set {TASK_ID_ENV}=i (1-based, the task of the "
                              f"questions, 1..{num_tasks}); `cli run` sets it for every job of this method")
    try:
        i = int(raw)
    except ValueError:
        i = 0
    if not 1 <= i <= num_tasks:
        raise CheckpointError(f"{TASK_ID_ENV}={raw!r}: the task of the questions must be a whole number in "
                              f"1..{num_tasks} ({model_path} holds {num_tasks} task bank(s))")
    return i - 1


class TaskSelector:
    """Bank weights ``[B, T]`` for a batch: ``oracle`` (one task), ``hide``, ``prism`` or ``shortlist`` (anchors;
    ``shortlist`` is the ``shortlist`` most similar tasks, among which the layers' keys choose)."""

    def __init__(self, kind: str, num_tasks: int, temperature: float = 0.1, anchors: Optional[TaskAnchors] = None,
                 task_index: Optional[int] = None, shortlist: int = 2):
        self.kind, self.num_tasks, self.temperature = kind, num_tasks, temperature
        self.anchors, self.task_index, self.shortlist = anchors, task_index, shortlist

    def __call__(self, model, input_ids: Tensor, images: Any = None, attention_mask: Optional[Tensor] = None,
                 labels: Optional[Tensor] = None) -> Tensor:
        if self.kind == "oracle":
            return one_hot_weights(self.task_index, self.num_tasks, input_ids.shape[0], input_ids.device)
        feats = batch_features(model, {"input_ids": input_ids, "images": images, "attention_mask": attention_mask,
                                       "labels": labels})
        if self.kind == "prism":
            return self.anchors.choice(feats).to(input_ids.device)
        if self.kind == "shortlist":
            return self.anchors.shortlist(feats, self.shortlist).to(input_ids.device)
        return self.anchors.weights(feats, self.temperature).to(input_ids.device)


def override_task_selector(state: Dict[str, Any], model_path: str) -> Dict[str, Any]:
    """The task state with ``$DYMOE_EVAL_TASK_SELECTOR`` as its ``task_selector`` (unset, or the checkpoint's own:
    unchanged).  Only between the anchor selectors ('hide', 'prism'): they read the same anchors and banks, so
    ``hide_selector``'s checkpoints answered with 'prism' are ``prism_selector``'s answers (analysis,
    ``protocol.reeval --task-selector``)."""
    from ..config import ANCHOR_SELECTORS, DyMoEConfig

    kind = os.environ.get(TASK_SELECTOR_ENV, "").strip()
    cfg = state["config"]
    if not kind or kind == cfg.task_selector:
        return state
    if kind not in ANCHOR_SELECTORS or cfg.task_selector not in ANCHOR_SELECTORS:
        raise CheckpointError(f"{TASK_SELECTOR_ENV}={kind}: only the anchor selectors {list(ANCHOR_SELECTORS)} can "
                              f"be swapped at load time (they read the same anchors); {model_path} has "
                              f"task_selector={cfg.task_selector!r}. Unset {TASK_SELECTOR_ENV}")
    log.warning("TASK SELECTOR (%s): %s is evaluated with task_selector=%r instead of its own %r; this is NOT the "
                "checkpoint's normal model", TASK_SELECTOR_ENV, model_path, kind, cfg.task_selector)
    return {**state, "config": DyMoEConfig.from_dict({**cfg.to_dict(), "task_selector": kind})}


def selector_for(cfg, model_path: str) -> Optional[TaskSelector]:
    """The selector a checkpoint's config asks for (banks ``cfg.num_tasks``), or None."""
    kind = getattr(cfg, "task_selector", "none")
    if kind == "none":
        return None
    if kind == "oracle":
        idx = requested_task_id(cfg.num_tasks, model_path)
        log.warning("ORACLE BANK (%s=%d): every prompt uses task bank t%d alone; an UPPER BOUND, not a method",
                    TASK_ID_ENV, idx + 1, idx)
        return TaskSelector("oracle", cfg.num_tasks, task_index=idx)
    anchors = read_anchors(model_path)
    if anchors is None or anchors.num_tasks < cfg.num_tasks:
        raise CheckpointError(f"{model_path}: task_selector={kind!r} needs one anchor per task bank in {ANCHORS} "
                              f"({cfg.num_tasks}), found {0 if anchors is None else anchors.num_tasks}")
    return TaskSelector(kind, cfg.num_tasks, cfg.selector_temperature, anchors=anchors.head(cfg.num_tasks),
                        shortlist=cfg.selector_shortlist)


def layer_context(model) -> DyMoEContext:
    """The context the model's DyMoE layers read (a fresh one attached when they have none).  Read at every call:
    a caller may attach its own context after the selector was installed (``diagnostics/probe.py`` does)."""
    layer = next(layer for _, layer in dymoe_layers(model))
    if layer._dymoe_ctx is None:
        attach_context(model, DyMoEContext())
    return layer._dymoe_ctx


def install_task_selector(model, selector: TaskSelector) -> None:
    """Hook ``selector`` into ``model`` (module docstring)."""
    layer_context(model)

    def set_weights(ids, images, attention_mask, labels=None, cached=False):
        if ids is None or not isinstance(ids, Tensor) or ids.dim() != 2:
            return
        ctx = layer_context(model)
        kept = ctx.bank_weights
        if cached and ids.shape[1] == 1 and kept is not None and kept.shape[0] == ids.shape[0]:
            return  # a decoding step (one token on the KV cache): the prompt's weights stay
        ctx.bank_weights = selector(model, ids, images, attention_mask, labels)

    def pre_hook(module, args, kwargs):
        if kwargs.get("inputs_embeds") is not None:
            return  # generate's first forward: the wrapper below has set the prompt's weights
        ids = kwargs.get("input_ids", args[0] if args else None)
        set_weights(ids, kwargs.get("images"), kwargs.get("attention_mask"), kwargs.get("labels"),
                    cached=kwargs.get("past_key_values") is not None)

    original = model.generate

    @functools.wraps(original)
    def generate(*args, **kwargs):
        ids = args[0] if args else kwargs.get("inputs", kwargs.get("input_ids"))
        images = args[1] if len(args) > 1 else kwargs.get("images")
        layer_context(model).bank_weights = None  # a new batch: never reuse the previous prompt's weights
        set_weights(ids, images, kwargs.get("attention_mask"))
        return original(*args, **kwargs)

    model.register_forward_pre_hook(pre_hook, with_kwargs=True)
    model.generate = generate
    model._dymoe_task_selector = selector
