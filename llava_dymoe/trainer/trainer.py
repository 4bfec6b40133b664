"""``DyMoETrainer``: LLaVA's trainer plus DyMoE model preparation, the RSR schedule, logging and saving.

``DyMoETrainerMixin`` holds the logic and imports nothing from LLaVA; ``make_dymoe_trainer(base)``
builds ``class DyMoETrainer(DyMoETrainerMixin, base)`` at patch time (patch T2), with ``base`` the
original ``llava.train.llava_trainer.LLaVATrainer``.

* ``__init__``: ``prepare_model`` (inject, load previous banks, add this task's bank, freeze) runs
  *before* ``Trainer.__init__``, i.e. before DeepSpeed wraps the model (style.md §6.7).
* ``compute_loss``: sets the RSR factor rho = ``rsr_schedule(global_step / max_steps, rsr_start)``
  (method.md §3.3), opens the aux collector's window around the forward, checks that every DyMoE
  layer reported once, and keeps the detached terms for ``log``.  The aux *gradient* flows through
  the layers' injection (``core/transport.py``), so the returned loss is the next-token loss only.
* ``create_optimizer``: drops empty parameter groups (stack.md fix A; LLaVA's four groups with
  ``--mm_projector_lr`` leave one empty and DeepSpeed + torch 2.13's strict LR-scheduler zip fail).
* ``log``: adds ``dymoe/rho``, ``dymoe/rsr_exc``, ``dymoe/rsr_spe``, ``dymoe/tag_new_frac`` (and
  ``dymoe/balance``) averaged over the steps since the last log; with ``--dymoe_log_routing True``
  also ``dymoe/frac_new``, ``frac_old``, ``frac_ambiguous`` (token types at tau on the raw logits,
  task >= 2) and ``dymoe/g_new`` (gate mass on the new bank), each the mean over layers, and a
  per-layer ``routing_stats.json`` in the checkpoint (``saving.py``).
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
from typing import Any, Callable, Dict, Optional

from ..config import FITS_ANCHORS
from ..core import RoutingStats, attach_stats, dymoe_layers, rsr_schedule
from .arguments import NO_METHOD
from .prepare import DyMoERun, prepare_model
from .saving import PHASES
from ..hosts import host_of

log = logging.getLogger("llava_dymoe.trainer")

#: ``RoutingStats.layer_mean`` keys -> trainer log keys (``dymoe/<key>``).
_ROUTING_KEYS = {"frac_new": "frac_new", "frac_old": "frac_old", "frac_ambiguous": "frac_ambiguous",
                 "mean_g_new": "g_new"}


class DyMoETrainerMixin:
    dymoe: Optional[DyMoERun]

    @staticmethod
    def _dymoe_pretrain_adapter_given() -> bool:
        """Whether the user passed --pretrain_mm_mlp_adapter (set by the patch that builds the class)."""
        return False

    @staticmethod
    def _dymoe_watch_dataset(dataset: Any) -> None:
        """Set by the patch that builds the class: names the file and sample of an image that fails mid-run."""

    def __init__(self, model=None, args=None, *pos, **kwargs):
        if kwargs.get("train_dataset") is not None:
            self._dymoe_watch_dataset(kwargs["train_dataset"])
        self.dymoe = None
        if getattr(args, "dymoe_method", NO_METHOD) != NO_METHOD:
            self.dymoe = prepare_model(model, args, pretrain_adapter_given=self._dymoe_pretrain_adapter_given())
        self._dymoe_step_stats = self._dymoe_task_stats = None
        self._dymoe_phase_stats = []
        self.dymoe_router_init = self.dymoe_router_refresh = self.dymoe_anchors = None
        self._dymoe_data = {k: kwargs.get(k) for k in ("train_dataset", "data_collator")}
        if self.dymoe is not None and self.dymoe.cfg.router_init == "centroids" and self.dymoe.cfg.expand:
            self.dymoe_router_init = _centroid_init(model, args, self.dymoe, kwargs)
            if self.dymoe.cfg.bank_keys == "fitted":  # keys fitted through the model that trains (new bank, B = 0)
                self.dymoe_router_init["keys"] = _centroid_init(model, args, self.dymoe, kwargs, refresh="dymoe_key")
            if not self.dymoe.cfg.router_train:  # the rows stay the centroids (before the optimizer exists)
                for _, layer in dymoe_layers(model):
                    layer.dymoe_router[self.dymoe.task_key].requires_grad_(False)
        if self.dymoe is not None and getattr(args, "dymoe_log_routing", False):
            self._dymoe_step_stats = RoutingStats(active=False)  # recorded only inside the forward window
            self._dymoe_task_stats = RoutingStats()
            self._dymoe_phase_stats = [RoutingStats() for _ in PHASES]
            attach_stats(model, self._dymoe_step_stats)
        self._dymoe_sums: Dict[str, float] = {}
        self._dymoe_n = 0
        self.dymoe_steps = self.dymoe_supervised = 0  # training steps of this process, their supervised tokens
        super().__init__(model, args, *pos, **kwargs)

    # ------------------------------------------------------------------ loss
    def _dymoe_loss_scale(self) -> float:
        """The fp16 loss scale multiplying the main loss in backward (1.0 for bf16/fp32)."""
        if not getattr(self.args, "fp16", False):
            return 1.0
        opt = getattr(getattr(self, "model_wrapped", None), "optimizer", None)
        for attr in ("cur_scale", "loss_scale"):
            value = getattr(opt, attr, None)
            if isinstance(value, (int, float)):
                return float(value)
        scaler = getattr(getattr(self, "accelerator", None), "scaler", None)
        return float(scaler.get_scale()) if scaler is not None else 1.0

    def compute_loss(self, model, inputs, return_outputs=False, **kwargs):
        run = self.dymoe
        if run is None:  # --dymoe_method none: upstream behaviour
            return super().compute_loss(model, inputs, return_outputs=return_outputs, **kwargs)
        max_steps = max(1, int(self.state.max_steps or 1))
        run.ctx.rho = rsr_schedule(self.state.global_step / max_steps, run.cfg.rsr_start)
        run.ctx.grad_scale = self._dymoe_loss_scale()
        collector = run.ctx.collector
        collector.reset()
        routing = self._dymoe_step_stats
        with collector.window(), (routing.window() if routing is not None else contextlib.nullcontext()):
            if routing is not None:
                routing.reset()
                run.ctx.token_kind = host_of(self.model).token_kinds(inputs, self.model)
            try:
                result = super().compute_loss(model, inputs, return_outputs=return_outputs, **kwargs)
            finally:
                run.ctx.token_kind = None
        if model.training:
            labels = inputs.get("labels") if isinstance(inputs, dict) else None
            if labels is not None:  # upstream's IGNORE_INDEX (-100) marks what is not supervised
                self.dymoe_steps += 1
                self.dymoe_supervised += int((labels != -100).sum())
            stats = collector.summary(expected=run.num_modules)
            stats["rho"] = run.ctx.rho
            if routing is not None:
                stats.update({_ROUTING_KEYS[k]: v for k, v in routing.layer_mean().items()})
                self._dymoe_task_stats.merge(routing)
                phase = min(len(PHASES) - 1, int(len(PHASES) * self.state.global_step / max_steps))
                self._dymoe_phase_stats[phase].merge(routing)
            for key, value in stats.items():
                self._dymoe_sums[key] = self._dymoe_sums.get(key, 0.0) + value
            self._dymoe_n += 1
        return result

    def log(self, logs: Dict[str, float], *args: Any, **kwargs: Any) -> None:
        if self._dymoe_n and "loss" in logs:
            for key, total in sorted(self._dymoe_sums.items()):
                logs[f"dymoe/{key}"] = round(total / self._dymoe_n, 8)
            self._dymoe_sums.clear()
            self._dymoe_n = 0
        super().log(logs, *args, **kwargs)

    # ------------------------------------------------------------------ optimizer (fix A)
    def create_optimizer(self):
        optimizer = super().create_optimizer()
        if optimizer is not None and hasattr(optimizer, "param_groups"):
            optimizer.param_groups[:] = [g for g in optimizer.param_groups if len(g["params"]) > 0]
        return optimizer

    # ------------------------------------------------------------------ checkpoint-N and resume (issue 17)
    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        """LLaVA's ``train()`` passes ``True`` when ``checkpoint-*`` folders exist and ignores
        ``--resume_from_checkpoint``; a DyMoE run honours the flag (a path, or ``True`` for the last
        ``checkpoint-N`` of ``--output_dir``)."""
        if self.dymoe is None:
            return super().train(resume_from_checkpoint, *args, **kwargs)
        resume_from_checkpoint = self._dymoe_checked_resume(resume_target(self.args, resume_from_checkpoint))
        with _deepspeed_resume(self.is_deepspeed_enabled, self.dymoe.task_id):
            out = super().train(resume_from_checkpoint, *args, **kwargs)
        cfg = self.dymoe.cfg
        if cfg.expand and (cfg.router_refresh or cfg.bank_keys != "router"):  # before LLaVA's train() saves
            self.dymoe_router_refresh = {}
            if cfg.router_refresh:
                self.dymoe_router_refresh["router"] = _centroid_init(self.model, self.args, self.dymoe,
                                                                     self._dymoe_data, refresh="dymoe_router")
            if cfg.bank_keys != "router":
                self.dymoe_router_refresh["keys"] = _centroid_init(self.model, self.args, self.dymoe,
                                                                   self._dymoe_data, refresh="dymoe_key")
        if cfg.task_selector in FITS_ANCHORS:  # the task's anchors, after its training (the banks are not read)
            self.dymoe_anchors = _fit_anchors(self.model, self.args, self.dymoe, self._dymoe_data)
        return out

    def _dymoe_checked_resume(self, target: Any) -> Any:
        """Load-check what ``train`` would resume from.  ``True`` (LLaVA's, when ``checkpoint-*`` folders exist,
        or ``--resume_from_checkpoint True``): the newest ``checkpoint-N`` that loads, each newer one named
        and skipped (none: from the start).  A path the user gave must load, else the run is refused."""
        from .saving import check_loadable, newest_loadable

        deepspeed, task = bool(self.is_deepspeed_enabled), self.dymoe.task_id
        if isinstance(target, str):
            check_loadable(target, deepspeed, task, flag="--resume_from_checkpoint")
            return target
        if target is not True:
            return target
        found = newest_loadable(self.args.output_dir, deepspeed, task, report=log.warning)
        if found is None:
            log.warning("no checkpoint-N of %s can be resumed from: training this task from the start",
                        self.args.output_dir)
        else:
            log.info("resuming from %s", found)
        return found

    def save_model(self, output_dir: Optional[str] = None, _internal_call: bool = False) -> None:
        """``checkpoint-N``: the task checkpoint's files without the completion marker (every bank and router,
        the projector), never the frozen base model; every rank calls it (a ZeRO-3 gather)."""
        if self.dymoe is None:
            return super().save_model(output_dir, _internal_call)
        import torch
        from transformers.trainer import TRAINING_ARGS_NAME

        from .saving import save_dymoe_task

        output_dir = output_dir or self.args.output_dir
        save_dymoe_task(self, output_dir, host_of(self.model).gather(), finished=False)
        if self.args.should_save:
            torch.save(self.args, os.path.join(output_dir, TRAINING_ARGS_NAME))

    def save_trained_model(self, training_args=None, *args, **kwargs):
        """CoIN's save call site (its ``train()`` ends with ``trainer.save_trained_model(training_args)``, and its
        trainer's method writes the LoRA files or the whole model): the finished DyMoE task instead, in
        ``training_args.output_dir``.  Without DyMoE the fork's own method runs."""
        if self.dymoe is None:
            return super().save_trained_model(training_args, *args, **kwargs)
        from .saving import fork_gather, save_dymoe_task

        save_dymoe_task(self, getattr(training_args, "output_dir", None) or self.args.output_dir, fork_gather(self))

    def _save_optimizer_and_scheduler(self, output_dir):
        engine = self.model_wrapped if self.dymoe is not None and self.is_deepspeed_enabled else None
        if engine is None:
            return super()._save_optimizer_and_scheduler(output_dir)
        # DeepSpeed's checkpoint without the frozen weights (upstream does this for peft models only):
        # a 7B base model would otherwise be written into every checkpoint-N
        engine.save_checkpoint = functools.partial(type(engine).save_checkpoint, engine,
                                                   exclude_frozen_parameters=True)
        try:
            return super()._save_optimizer_and_scheduler(output_dir)
        finally:
            del engine.save_checkpoint

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        """Resume without DeepSpeed: the trainable weights of ``checkpoint-N``, bit for bit."""
        if self.dymoe is None:
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        from .preflight import check_resumable
        from .saving import load_intermediate_state

        given = str(getattr(self.args, "resume_from_checkpoint", None) or "").lower() not in ("", "true", "1", "yes")
        check_resumable(resume_from_checkpoint, deepspeed=False, task_id=self.dymoe.task_id,
                        flag="--resume_from_checkpoint" if given else "")
        n = load_intermediate_state(self, resume_from_checkpoint)
        log.info("resumed %d trainable tensors from %s", n, resume_from_checkpoint)

    def _load_rng_state(self, checkpoint):
        # rng_state.pth holds numpy's state, which torch.load's weights_only default refuses: the file is
        # this run's own (written by Trainer._save_rng_state), so it is read in full
        with _torch_load_full():
            return super()._load_rng_state(checkpoint)


def resume_target(args: Any, requested: Any) -> Any:
    """What to resume from: ``--resume_from_checkpoint`` (a path, or True/true = the last ``checkpoint-N`` of
    ``--output_dir``) wins over LLaVA's ``True``; else ``requested``."""
    flag = getattr(args, "resume_from_checkpoint", None)
    if flag in (None, "") or requested not in (None, True):
        return requested
    if str(flag).strip().lower() in ("true", "1", "yes"):
        return True
    return None if str(flag).strip().lower() in ("false", "0", "no") else str(flag)


@contextlib.contextmanager
def _torch_load_full():
    import torch

    original = torch.load

    def load(*a, **kw):
        kw.setdefault("weights_only", False)
        return original(*a, **kw)

    torch.load = load
    try:
        yield
    finally:
        torch.load = original


@contextlib.contextmanager
def _deepspeed_resume(enabled: bool, task_id: int):
    """During ``Trainer.train`` under DeepSpeed: resume from a ``checkpoint-N`` whose DeepSpeed state holds the
    trainable weights only (``_save_optimizer_and_scheduler``), so the module loads non-strictly."""
    if not enabled:
        yield
        return
    import transformers.trainer as hf_trainer

    from .preflight import check_resumable

    original = hf_trainer.deepspeed_load_checkpoint

    def deepspeed_load_checkpoint(engine, checkpoint_path):
        check_resumable(checkpoint_path, deepspeed=True, task_id=task_id, flag="")
        load_path, _ = engine.load_checkpoint(checkpoint_path, load_optimizer_states=True,
                                              load_lr_scheduler_states=True, load_module_strict=False)
        if load_path is None:
            raise ValueError(f"[deepspeed] failed to resume from checkpoint {checkpoint_path}")
        log.info("resumed DeepSpeed state (trainable weights, optimizer) from %s", checkpoint_path)

    hf_trainer.deepspeed_load_checkpoint = deepspeed_load_checkpoint
    try:
        yield
    finally:
        hf_trainer.deepspeed_load_checkpoint = original


def _centroid_init(model, args, run: DyMoERun, kwargs, refresh: Optional[str] = None) -> Dict[str, float]:
    """``router_init="centroids"``: the new bank's router rows from the task's own inputs (router_init.py);
    ``refresh``: at the end of the task, re-centre the new bank's ``"dymoe_router"`` rows (``router_refresh``)
    or its ``"dymoe_key"`` rows (``bank_keys="refreshed"``/``"fitted"``) through the trained model (``"fitted"``: also
    before the first step, through the model that trains)."""
    from .prepare import zero3_enabled
    from .router_init import init_router_from_data, refresh_keys_from_data, refresh_router_from_data

    if zero3_enabled():
        raise ValueError("--dymoe_router_init centroids runs a calibration forward before DeepSpeed starts, which "
                         "ZeRO-3's partitioned weights do not allow; use a ZeRO-2 config (scripts/zero2.json) or "
                         "--dymoe_router_init kaiming")
    device = getattr(args, "device", None)
    if device is not None and getattr(device, "type", "cpu") != "cpu":
        model.to(device)
    fit = {None: init_router_from_data, "dymoe_router": refresh_router_from_data,
           "dymoe_key": refresh_keys_from_data}[refresh]
    # keys that a per-sequence decision compares with its prompt's pooled scores are fitted on prompt tokens
    extra = {"prompt_only": run.cfg.bank_scope == "sequence"} if refresh == "dymoe_key" else {}
    return fit(model, run.task_key, kwargs.get("train_dataset"), kwargs.get("data_collator"),
               batch_size=max(1, int(args.per_device_train_batch_size)), n_batches=run.cfg.router_init_batches,
               seed=int(getattr(args, "seed", 0)) * 1009 + run.task_id + 7919, ctx=run.ctx, **extra)


def _fit_anchors(model, args, run: DyMoERun, data):
    """``task_selector`` "hide", "prism" or "shortlist": this task's image and text anchors appended to the previous
    checkpoint's (``integration/selector.py``); the samples are a draw seeded by (seed, task), the same on every
    rank."""
    from ..integration.selector import carry_anchors, fit_task_anchor, sample_batches

    batches = sample_batches(data.get("train_dataset"), data.get("data_collator"),
                             max(1, int(args.per_device_train_batch_size)), run.cfg.selector_samples,
                             int(getattr(args, "seed", 0)) * 1009 + run.task_id + 104729)
    anchor, n = fit_task_anchor(model, batches)
    anchors = carry_anchors(run.prev_ckpt, anchor, n, int(run.task_key[1:]))
    log.info("task_selector=%s: anchors of task %d from %d training samples (%s)", run.cfg.task_selector,
             run.task_id, n,
             ", ".join(f"{m} {tuple(v.shape)}" for m, v in sorted(anchors.anchors.items())))
    return anchors


def make_dymoe_trainer(base: type, pretrain_adapter_given: Callable[[], bool] = lambda: False,
                       watch_dataset: Callable[[Any], None] = lambda dataset: None) -> type:
    """``class DyMoETrainer(DyMoETrainerMixin, base)``; ``pretrain_adapter_given()`` tells whether the
    run passed ``--pretrain_mm_mlp_adapter`` (then the previous task's projector is not loaded);
    ``watch_dataset(train_dataset)`` is called once, before anything reads the dataset."""
    return type("DyMoETrainer", (DyMoETrainerMixin, base), {
        "__module__": __name__, "__doc__": __doc__.split("\n")[0],
        "_dymoe_pretrain_adapter_given": staticmethod(pretrain_adapter_given),
        "_dymoe_watch_dataset": staticmethod(watch_dataset)})
