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
from typing import Any, Callable, Dict, Optional

from ..core import RoutingStats, attach_stats, rsr_schedule
from .arguments import NO_METHOD
from .prepare import DyMoERun, prepare_model
from ..integration.token_kinds import training_token_kinds

#: Thirds of a task's steps over which ``routing_stats.json`` also sums the routing statistics.
PHASES = ("start", "middle", "end")
#: ``RoutingStats.layer_mean`` keys -> trainer log keys (``dymoe/<key>``).
_ROUTING_KEYS = {"frac_new": "frac_new", "frac_old": "frac_old", "frac_ambiguous": "frac_ambiguous",
                 "mean_g_new": "g_new"}


class DyMoETrainerMixin:
    dymoe: Optional[DyMoERun]

    @staticmethod
    def _dymoe_pretrain_adapter_given() -> bool:
        """Whether the user passed --pretrain_mm_mlp_adapter (set by the patch that builds the class)."""
        return False

    def __init__(self, model=None, args=None, *pos, **kwargs):
        self.dymoe = None
        if getattr(args, "dymoe_method", NO_METHOD) != NO_METHOD:
            self.dymoe = prepare_model(model, args, pretrain_adapter_given=self._dymoe_pretrain_adapter_given())
        self._dymoe_step_stats = self._dymoe_task_stats = None
        self._dymoe_phase_stats = []
        self.dymoe_router_init = None
        if self.dymoe is not None and self.dymoe.cfg.router_init == "centroids" and self.dymoe.cfg.expand:
            self.dymoe_router_init = _centroid_init(model, args, self.dymoe, kwargs)
        if self.dymoe is not None and getattr(args, "dymoe_log_routing", False):
            self._dymoe_step_stats = RoutingStats(active=False)  # recorded only inside the forward window
            self._dymoe_task_stats = RoutingStats()
            self._dymoe_phase_stats = [RoutingStats() for _ in PHASES]
            attach_stats(model, self._dymoe_step_stats)
        self._dymoe_sums: Dict[str, float] = {}
        self._dymoe_n = 0
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
                run.ctx.token_kind = training_token_kinds(inputs, self.model)
            try:
                result = super().compute_loss(model, inputs, return_outputs=return_outputs, **kwargs)
            finally:
                run.ctx.token_kind = None
        if model.training:
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


def _centroid_init(model, args, run: DyMoERun, kwargs) -> Dict[str, float]:
    """``router_init="centroids"``: the new bank's router rows from the task's own inputs (router_init.py)."""
    from .prepare import zero3_enabled
    from .router_init import init_router_from_data

    if zero3_enabled():
        raise ValueError("--dymoe_router_init centroids runs a calibration forward before DeepSpeed starts, which "
                         "ZeRO-3's partitioned weights do not allow; use a ZeRO-2 config (scripts/zero2.json) or "
                         "--dymoe_router_init kaiming")
    device = getattr(args, "device", None)
    if device is not None and getattr(device, "type", "cpu") != "cpu":
        model.to(device)
    return init_router_from_data(model, run.task_key, kwargs.get("train_dataset"), kwargs.get("data_collator"),
                                 batch_size=max(1, int(args.per_device_train_batch_size)),
                                 n_batches=run.cfg.router_init_batches,
                                 seed=int(getattr(args, "seed", 0)) * 1009 + run.task_id + 7919, ctx=run.ctx)


def make_dymoe_trainer(base: type, pretrain_adapter_given: Callable[[], bool] = lambda: False) -> type:
    """``class DyMoETrainer(DyMoETrainerMixin, base)``; ``pretrain_adapter_given()`` tells whether the
    run passed ``--pretrain_mm_mlp_adapter`` (then the previous task's projector is not loaded)."""
    return type("DyMoETrainer", (DyMoETrainerMixin, base), {
        "__module__": __name__, "__doc__": __doc__.split("\n")[0],
        "_dymoe_pretrain_adapter_given": staticmethod(pretrain_adapter_given)})
