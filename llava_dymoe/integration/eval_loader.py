"""Rebuild a DyMoE task checkpoint for inference, with upstream ``load_pretrained_model``'s contract.

Used by the eval patch (E1): ``load_pretrained_model(model_path, model_base, model_name, ...)``
returns ``(tokenizer, model, image_processor, context_len)``; for a DyMoE checkpoint this function
does the work, mirroring upstream's LoRA branch and tail (llava-integration.md §1.6):

1. tokenizer from ``model_base`` (slow, like upstream); LLaVA config from the checkpoint;
2. ``LlavaLlamaForCausalLM.from_pretrained(model_base, config=ckpt_config, ...)``;
3. ``non_lora_trainables.bin`` (projector) loaded, every key must land;
4. ``DyMoELinear`` injected with the saved ``DyMoEConfig`` and **every** bank loaded (strict:
   upstream's ``disable_torch_init()`` leaves new modules uninitialised, so a missing key must be an
   error, never a silent base model);
5. upstream's tail: image tokens, ``resize_token_embeddings``, vision tower load, dtype/device move.

Inference routes over all experts with no TAG and no task id (method.md §1.6).  The model comes back with a
``DyMoEContext`` attached and filled from each forward (``context_hooks.install_context_hooks``: valid tokens,
KV-cache length), which the opt-in rules read (the sequence bank pools a padded batch's valid prompt tokens;
``assign_rule="given"`` reads ``bank_weights``, which the caller sets on ``layer._dymoe_ctx``).

Oracle routing (opt-in, for analysis): with ``DYMOE_EVAL_MAX_TASKS=k`` in the environment (or
``max_tasks=k``), only banks ``t0..t{k-1}`` are loaded, so routing is restricted to the experts that
existed when task ``k`` was learned.  With the projector frozen over the sequence, this rebuilds task
``k``'s own model exactly (the frozen banks are bit-identical in every later checkpoint), so the
difference from the unrestricted evaluation is the routing drift caused by the later banks.  The
variable is read here, at load time, because upstream's eval scripts call ``load_pretrained_model``
and must stay unchanged.  Empty or unset = all banks (the default).

Task selectors (``task_selector``, methods ``oracle_bank``, ``hide_selector`` and ``prism_selector``): the
checkpoint's selector is hooked into the model (``selector.py``); ``oracle_bank`` needs ``DYMOE_EVAL_TASK_ID=i``, the
true task.  ``DYMOE_EVAL_TASK_SELECTOR=prism`` (or ``hide``) answers an anchor selector's checkpoint with the other
anchor selector (analysis; the two read the same anchors and banks).

Assignment rule (opt-in, for analysis): ``DYMOE_EVAL_ASSIGN_RULE=cascade`` (or ``assign_rule=``) evaluates
the checkpoint with TAG's decision kept at inference (``DyMoEConfig.assign_rule``, ``core.routing.
cascade_assignment``) whatever rule it was trained with; ``paper`` forces the plain router.  Unset = the
checkpoint's own rule.
"""
from __future__ import annotations

import logging
import os

import torch

# is_dymoe_checkpoint is re-exported: with load_dymoe_for_eval it is the hook pair patch E1 reads from this module
from .checkpoint import CheckpointError, is_dymoe_checkpoint, load_non_lora, load_task_state  # noqa: F401
from ..core import DyMoEContext
from .context_hooks import install_context_hooks
from .selector import install_task_selector, override_task_selector, selector_for

log = logging.getLogger("llava_dymoe.eval")

#: environment variable: evaluate a DyMoE checkpoint with only its first k task banks (see module docstring)
MAX_TASKS_ENV = "DYMOE_EVAL_MAX_TASKS"
#: environment variable: evaluate with another token-to-bank rule than the checkpoint's (see module docstring)
ASSIGN_RULE_ENV = "DYMOE_EVAL_ASSIGN_RULE"


def requested_assign_rule(assign_rule=None):
    """``assign_rule`` if given, else ``$DYMOE_EVAL_ASSIGN_RULE``, else ``None`` (the checkpoint's own rule)."""
    from ..config import ASSIGN_RULES

    source = "assign_rule"
    if assign_rule is None:
        assign_rule, source = os.environ.get(ASSIGN_RULE_ENV, "").strip() or None, ASSIGN_RULE_ENV
    if assign_rule is not None and assign_rule not in ASSIGN_RULES:
        raise CheckpointError(f"{source}={assign_rule!r} is not a token-to-bank rule; use one of "
                              f"{list(ASSIGN_RULES)}, or unset {ASSIGN_RULE_ENV} to use the checkpoint's rule")
    return assign_rule


def override_assign_rule(state, assign_rule):
    """The task state with its config's ``assign_rule`` replaced (``use_tag`` set, as the cascade needs it)."""
    from ..config import DyMoEConfig

    cfg = state["config"]
    if cfg.router == "none":
        raise CheckpointError(f"{ASSIGN_RULE_ENV}={assign_rule}: method {state['dymoe'].get('method')!r} has no "
                              f"router (router='none'), so there is no token-to-bank rule to change; unset it")
    if cfg.task_selector != "none" or assign_rule == "given":
        raise CheckpointError(f"{ASSIGN_RULE_ENV}={assign_rule}: the 'given' rule weighs one bank per task by a task "
                              f"selector fixed at training (method {state['dymoe'].get('method')!r}, task_selector="
                              f"{cfg.task_selector!r}); it cannot be swapped with another rule at load time. Unset "
                              f"{ASSIGN_RULE_ENV}, or train with --dymoe_method oracle_bank / hide_selector")
    extra = {"use_tag": True} if assign_rule == "cascade" else {}
    return {**state, "config": DyMoEConfig.from_dict({**cfg.to_dict(), "assign_rule": assign_rule, **extra})}


def requested_max_tasks(max_tasks=None):
    """``(k, source)``: ``max_tasks`` if given, else ``$DYMOE_EVAL_MAX_TASKS``; ``(None, None)`` = all banks.

    ``source`` names where k came from, for messages.  Raises :class:`CheckpointError` for a value
    that is not a whole number.
    """
    if max_tasks is not None:
        source, raw = "max_tasks", max_tasks
    else:
        raw = os.environ.get(MAX_TASKS_ENV, "").strip()
        if not raw:
            return None, None
        source = MAX_TASKS_ENV
    try:
        if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
            raise ValueError
        k = int(raw)
    except (TypeError, ValueError):
        raise CheckpointError(f"{source}={raw!r} is not a whole number of task banks. Set it to k in 1..(tasks "
                              f"in the checkpoint) to evaluate with the banks of the first k tasks only, or "
                              f"unset it (`unset {MAX_TASKS_ENV}`) to evaluate with all banks.") from None
    return k, source


def restrict_to_tasks(state, model_path, k, source=MAX_TASKS_ENV):
    """Keep banks ``t0..t{k-1}`` of a loaded task state (``load_task_state``); returns a new state dict.

    Checks that the method adds one bank per task (``expand``) and that ``1 <= k <= saved banks``.
    """
    from ..config import DyMoEConfig

    cfg = state["config"]
    saved = cfg.num_tasks
    if not cfg.expand:
        raise CheckpointError(f"{source}={k}: {model_path} was trained by a method that keeps one bank for the "
                              f"whole sequence (method {state['dymoe'].get('method')!r}, expand=False), so there are "
                              f"no banks of earlier tasks to restrict routing to. Unset {MAX_TASKS_ENV} (or drop "
                              "--oracle-routing) for this checkpoint.")
    if not 1 <= k <= saved:
        raise CheckpointError(f"{source}={k} is out of range: {model_path} holds {saved} task bank(s) "
                              f"(t0..t{saved - 1}), so k must be in 1..{saved}. Set {source} to a value in that "
                              f"range, or unset {MAX_TASKS_ENV} to evaluate with all banks.")
    keep = {f"t{i}" for i in range(k)}
    experts = {key: t for key, t in state["experts"].items() if key.rsplit(".", 1)[-1] in keep}
    config = DyMoEConfig.from_dict({**cfg.to_dict(), "num_tasks": k})
    return {**state, "config": config, "experts": experts}


def load_dymoe_for_eval(model_path, model_base, model_name, load_8bit=False, load_4bit=False,
                        device_map="auto", device="cuda", use_flash_attn=False, max_tasks=None, assign_rule=None,
                        allow_base_mismatch=None, builder_globals=None, **kwargs):
    """Upstream's loader contract; ``max_tasks`` (or ``$DYMOE_EVAL_MAX_TASKS``) keeps the first k banks,
    ``assign_rule`` (or ``$DYMOE_EVAL_ASSIGN_RULE``) replaces the checkpoint's token-to-bank rule.
    ``model_base`` must be the base the checkpoint records (``base_model.py``); ``allow_base_mismatch``
    (or ``$DYMOE_EVAL_ALLOW_BASE_MISMATCH=1``) accepts another one with a warning.  ``builder_globals``: the
    globals of a fork's own builder (CoIN's ``ETrain.Models.LLaVA.builder``), whose model class and image-token
    names are used instead of ``llava``'s (which a fork without a ``llava`` package may not even have)."""
    from transformers import AutoConfig, AutoTokenizer
    from ..patches.lines import load_vision_tower

    if builder_globals is not None:
        names = ("LlavaLlamaForCausalLM", "DEFAULT_IMAGE_PATCH_TOKEN", "DEFAULT_IM_START_TOKEN", "DEFAULT_IM_END_TOKEN")
        missing = [n for n in names if n not in builder_globals]
        if missing:
            raise CheckpointError(f"the fork's builder ({builder_globals.get('__name__')}) has no module-level "
                                  f"{', '.join(missing)}, which the DyMoE loader builds the model with")
        LlavaLlamaForCausalLM, DEFAULT_IMAGE_PATCH_TOKEN, DEFAULT_IM_START_TOKEN, DEFAULT_IM_END_TOKEN = (
            builder_globals[n] for n in names)
    else:
        from llava.constants import DEFAULT_IM_END_TOKEN, DEFAULT_IM_START_TOKEN, DEFAULT_IMAGE_PATCH_TOKEN
        from llava.model.language_model.llava_llama import LlavaLlamaForCausalLM

    if model_base is None:
        raise CheckpointError(f"{model_path} is a DyMoE checkpoint: it stores the experts and the projector, "
                              "not the LLM. Pass --model-base with the base LLM the sequence was trained from "
                              "(the --model_name_or_path of training, e.g. lmsys/vicuna-7b-v1.5).")
    if load_8bit or load_4bit:
        raise CheckpointError("8/4-bit loading is not supported for DyMoE checkpoints (the routed experts "
                              "need fp16/bf16/fp32 base weights); drop --load-8bit/--load-4bit")
    k, source = requested_max_tasks(max_tasks)
    state = load_task_state(model_path)
    from ..hosts import check_host
    from ..hosts.loader import restore_task_banks
    from .base_model import EVAL_ALLOW_ENV, check_same_base

    check_host(state["dymoe"], "llava", model_path)  # this loader builds upstream LlavaLlamaForCausalLM

    if allow_base_mismatch is None:
        allow_base_mismatch = os.environ.get(EVAL_ALLOW_ENV, "").strip() not in ("", "0")
    check_same_base(model_path, model_base, allow=bool(allow_base_mismatch), what="--model-base",
                    override=f"{EVAL_ALLOW_ENV}=1", error=CheckpointError)
    if k is not None:
        saved = state["config"].num_tasks
        state = restrict_to_tasks(state, model_path, k, source)
        banner = "!" * 72
        for line in (banner, f"ORACLE ROUTING ({source}={k}): {model_path} is loaded with task banks "
                     f"t0..t{k - 1} only ({k} of {saved})", f"routing is restricted to the experts that existed "
                     f"when task {k} was learned; this is NOT the checkpoint's normal model", banner):
            log.warning(line)
    rule = requested_assign_rule(assign_rule)
    if rule is not None and rule != state["config"].assign_rule:
        own = state["config"].assign_rule
        state = override_assign_rule(state, rule)
        log.warning("ASSIGN RULE (%s): %s is evaluated with assign_rule=%r instead of its own %r; this is NOT "
                    "the checkpoint's normal model", ASSIGN_RULE_ENV, model_path, rule, own)
    state = override_task_selector(state, model_path)  # $DYMOE_EVAL_TASK_SELECTOR (analysis), else unchanged
    selector = selector_for(state["config"], model_path)  # task_selector: oracle_bank / hide_selector / prism
    kw = {"device_map": device_map, **kwargs}
    if device != "cuda":
        kw["device_map"] = {"": device}
    kw.setdefault("torch_dtype", torch.float16)
    if use_flash_attn:
        kw["attn_implementation"] = "flash_attention_2"

    tokenizer = AutoTokenizer.from_pretrained(model_base, use_fast=False)
    cfg = AutoConfig.from_pretrained(model_path)
    log.info("DyMoE checkpoint %s: %d task bank(s), method %s; base %s", model_path,
             state["config"].num_tasks, state["dymoe"].get("method"), model_base)
    model = LlavaLlamaForCausalLM.from_pretrained(model_base, low_cpu_mem_usage=True, config=cfg, **kw)
    load_non_lora(model, state["non_lora"], model_path)
    restore_task_banks(model, state, model_path)

    if getattr(model.config, "mm_use_im_patch_token", True):
        tokenizer.add_tokens([DEFAULT_IMAGE_PATCH_TOKEN], special_tokens=True)
    if getattr(model.config, "mm_use_im_start_end", False):
        tokenizer.add_tokens([DEFAULT_IM_START_TOKEN, DEFAULT_IM_END_TOKEN], special_tokens=True)
    model.resize_token_embeddings(len(tokenizer))
    vision_tower = model.get_vision_tower()
    if not vision_tower.is_loaded:
        load_vision_tower(vision_tower, device_map)  # the line's load_model signature
    if device_map != "auto":
        vision_tower.to(device=device_map, dtype=torch.float16)
    context_len = getattr(model.config, "max_sequence_length", 2048)
    if selector is not None:
        install_task_selector(model, selector)
    model.eval()
    # valid tokens (a padded batch of prompts), KV-cache length, bank weights: the routing rules read them here
    install_context_hooks(model, DyMoEContext())
    return tokenizer, model, vision_tower.image_processor, context_len
