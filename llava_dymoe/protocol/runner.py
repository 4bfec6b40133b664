"""The continual sequence runner: after training task t, how good is the model on tasks 1..t?

For each stage ``t`` in the suite's task order, :func:`run_sequence`

1. trains task ``t`` through the integration entry (a subprocess, see :mod:`.launch`) into
   ``OUT/checkpoints/<t>_<task>_llava_<method>/``, starting from stage ``t-1``'s checkpoint;
2. evaluates every task seen so far with the suite's upstream generator (one eval process per
   stage) and scores it with the suite's scorer: ``R[t, i]`` in percent;
3. writes ``stage.json`` (the completion record, last), then rebuilds ``matrix.csv``,
   ``matrix.json``, ``metrics.json``, ``report.md`` and ``matrix.png`` from the finished stages.

Before the first stage, the data of stages 1..N (training JSON, question file, images) is checked
(:mod:`.preflight`; ``--skip-data-check`` turns it off); a problem stops the run before anything
is written.

Resume (rerun the same command): a finished stage is verified by its files and skipped; a
finished checkpoint whose evaluation is incomplete is only evaluated; a half-written stage
(checkpoint without its ``dymoe_task.json`` marker, answers without ``score.json``) is logged,
removed and redone, except that a stage trained with ``--train-arg save_strategy=steps`` resumes
its training from its last resumable ``checkpoint-N`` (LLaVA's ``train()`` does that when the
folder holds one; a half-written ``checkpoint-N`` is removed first).  Nothing finished is ever
overwritten: a finished stage whose files changed, or a run folder of another run, stops with an
error that says what to do.

``--oracle-routing`` (off by default) adds, after each stage ``t`` (also a finished one), the
evaluation of every earlier task ``i < t`` with stage ``t``'s checkpoint restricted to banks
``t0..t(i-1)`` (:mod:`.oracle`), stored under ``stages/<t>_<task>/restricted/`` next to, not in,
the stage record; a restricted evaluation of another checkpoint, or a partial one, is redone.
"""
from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from llava_dymoe.eval.matrix import AccuracyMatrix
from llava_dymoe.eval.suite import Suite, TaskSpec, load_suite
from llava_dymoe.protocol.task_order import apply_task_order
from llava_dymoe.integration import checkpoint as ckpt
from llava_dymoe.hosts import is_upstream
from llava_dymoe.protocol import launch
from llava_dymoe.protocol.layout import ANSWERS, RunLayout, write_json_atomic
from llava_dymoe.protocol.options import (RunOptions, check_options, compare_identity, missing_data, run_identity,
                                          training_overrides)
from llava_dymoe.protocol.stage import (RunStateError, load_score, marker_sha, verify_stage, write_score,
                                        write_stage)


@dataclass
class RunResult:
    """What one invocation did: ``actions[stage] in {"skipped", "evaluated", "trained"}``."""

    output_dir: str
    matrix: AccuracyMatrix
    summary: Dict[str, Any]
    records: List[Dict[str, Any]]
    actions: Dict[str, str] = field(default_factory=dict)
    #: with ``--oracle-routing``: rows = stages, task i < t restricted to i banks, diagonal = R[t, t]
    restricted: Optional[AccuracyMatrix] = None


def status(message: str) -> None:
    """A status line that does not break the progress bar (stderr)."""
    from tqdm import tqdm

    tqdm.write(f"[run] {message}", file=sys.stderr)


class _Stages:
    """Trains and evaluates the stages of one run folder (one instance per invocation)."""

    def __init__(self, opts: RunOptions, suite: Suite, layout: RunLayout, n_stages: int,
                 train_args: Dict[str, Optional[str]]):
        from llava_dymoe.patches.cpu_remap import cuda_available

        self.opts, self.suite, self.layout, self.n, self.train_args = opts, suite, layout, n_stages, train_args
        self.threads = launch.thread_env(opts.threads, cuda_available())

    def label(self, t: int, what: str) -> str:
        return f"stage {t}/{self.n} {self.suite.tasks[t - 1].name} {what}"

    def prev_checkpoint(self, t: int) -> Optional[str]:
        return self.layout.checkpoint_dir(t - 1, self.suite.tasks[t - 2].name) if t > 1 else None

    def run(self, t: int) -> Tuple[Dict[str, Any], str]:
        """Bring stage ``t`` to finished; returns its record and what was done."""
        task = self.suite.tasks[t - 1]
        seen = self.suite.task_names[:t]
        rec = verify_stage(self.layout, t, task.name, seen, self.prev_checkpoint(t))
        if rec is not None:
            status(f"{self.label(t, 'finished earlier')}: verified, skipped")
            return rec, "skipped"
        checkpoint = self.layout.checkpoint_dir(t, task.name)
        train_seconds = self.train(t, task, checkpoint)
        scores, dirs, eval_seconds = self.evaluate(t, task, checkpoint)
        rec = write_stage(self.layout, t, task.name, scores=scores, eval_dirs=dirs,
                          prev_checkpoint=self.prev_checkpoint(t), train_seconds=train_seconds,
                          eval_seconds=eval_seconds)
        row = ", ".join(f"{k} {v:.2f}" for k, v in rec["scores"].items())
        timing = f"train {train_seconds:.1f} s" if train_seconds is not None else "checkpoint reused"
        status(f"{self.label(t, 'done')} ({timing}, eval {eval_seconds or 0:.1f} s): {row}")
        return rec, "trained" if train_seconds is not None else "evaluated"

    # ------------------------------------------------------------------ training
    def _check_no_later_stage(self, t: int) -> None:
        later = []
        for u, task in enumerate(self.suite.tasks[t:], start=t + 1):
            for path in (self.layout.stage_record(u, task.name), self.layout.checkpoint_dir(u, task.name)):
                if os.path.isfile(path) or ckpt.is_finished(path):
                    later.append(path)
        if later:
            raise RunStateError(f"stage {self.layout.stage_name(t, self.suite.tasks[t - 1].name)} must be trained "
                                "again, but later stages already finished from its previous checkpoint:\n  - " +
                                "\n  - ".join(later) + "\nRestore that checkpoint, or delete those later stages "
                                "(their checkpoints/ and stages/ folders) to redo them, or use a new --output-dir.")

    def train(self, t: int, task: TaskSpec, checkpoint: str) -> Optional[float]:
        """Train stage ``t`` unless its checkpoint is already finished; seconds, or ``None`` if reused."""
        if ckpt.is_finished(checkpoint):
            try:
                ckpt.verify(checkpoint)
            except ckpt.CheckpointError as e:
                raise RunStateError(f"{e}\n(It is stage {t}'s checkpoint; delete {checkpoint} to train it again.)") \
                    from None
            status(f"{self.label(t, 'checkpoint')} finished earlier (verified): evaluating only")
            return None
        self._check_no_later_stage(t)
        if os.path.exists(checkpoint):
            resume_from = self._resumable(t, checkpoint)
            if resume_from:
                status(f"{self.label(t, 'unfinished training')} in {checkpoint}: resuming from "
                       f"{os.path.basename(resume_from)} (LLaVA's train() resumes from the last checkpoint-N)")
            else:
                status(f"{self.label(t, 'half-written checkpoint')} {checkpoint} has no {ckpt.MARKER}: "
                       "removing it and training again")
                shutil.rmtree(checkpoint)
        prev = self.prev_checkpoint(t)
        if prev:
            ckpt.verify(prev)
        cmd, env = launch.train_command(self.opts, task, t, checkpoint, prev, self.train_args)
        status(f"{self.label(t, 'training')} ({self.opts.launcher} launcher)")
        seconds = launch.run_logged(cmd, env={**self.threads, **env}, log_path=self.layout.train_log(t, task.name),
                                    commands_log=self.layout.commands_log, label=self.label(t, "train"))
        try:
            ckpt.verify(checkpoint)
        except ckpt.CheckpointError as e:
            raise launch.StageFailed(f"{self.label(t, 'train')} exited 0 but left no finished checkpoint: {e}\n"
                                     f"See {self.layout.train_log(t, task.name)}") from None
        return seconds

    def _resumable(self, t: int, checkpoint: str) -> Optional[str]:
        """The last ``checkpoint-N`` of an unfinished stage ``t`` that this run can resume from, or ``None``.

        ``checkpoint-N`` folders are written with ``--train-arg save_strategy=steps``.  One that does not load
        (killed while saving, a cut file, no trainer state) or is of another task is named and removed, so
        that LLaVA's ``train()``, which resumes from the highest N, finds the resumable one; they belong to
        this unfinished stage only."""
        from llava_dymoe.trainer.saving import newest_loadable

        return newest_loadable(checkpoint, bool(self.opts.deepspeed), t, remove=True,
                               report=lambda text: status(f"{self.label(t, 'checkpoint')}: {text}"))

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, t: int, task: TaskSpec, checkpoint: str):
        """Evaluate every task seen so far (finished evaluations are kept): ``(scores, dirs, seconds)``."""
        scores: Dict[str, Dict[str, Any]] = {}
        dirs: Dict[str, str] = {}
        pending: List[TaskSpec] = []
        for spec in self.suite.tasks[:t]:
            d = dirs[spec.name] = self.layout.eval_dir(t, task.name, spec.name)
            rec = load_score(d)
            if rec is not None:
                scores[spec.name] = rec
                continue
            if os.path.exists(d):
                status(f"{self.label(t, 'partial evaluation')} of {spec.name} ({d}): removing it, evaluating again")
                shutil.rmtree(d)
            pending.append(spec)
        if not pending:
            return scores, dirs, None
        status(f"{self.label(t, 'evaluating')} {', '.join(s.name for s in pending)}")
        seconds = self._answer(t, task, checkpoint, pending, dirs)
        from llava_dymoe.eval.scorers import score_file

        for spec in pending:
            answers = os.path.join(dirs[spec.name], ANSWERS)
            try:
                result = score_file(spec.scorer, answers, spec.scoring_file, reference_key=spec.reference_key)
            except (ValueError, FileNotFoundError) as e:
                raise ValueError(f"{self.label(t, 'scoring')} of task {spec.name!r}: {e}") from None
            scores[spec.name] = write_score(dirs[spec.name], spec.name, result)
        return scores, dirs, seconds


    def _answer(self, t: int, task: TaskSpec, checkpoint: str, pending: List[TaskSpec], dirs: Dict[str, str]) -> float:
        """Write ``pending`` tasks' answers with ``checkpoint``: upstream, one eval batch process; an HF host
        (docs/hosts.md), one ``llava_dymoe.eval_hf`` process per task.  Returns the wall time in seconds."""
        log_path = self.layout.eval_log(t, task.name)
        if not is_upstream(self.opts.host):
            return sum(launch.run_logged(launch.hf_eval_command(self.opts, spec, checkpoint,
                                                                os.path.join(dirs[spec.name], ANSWERS)),
                                         env=self.threads, log_path=log_path, commands_log=self.layout.commands_log,
                                         label=self.label(t, f"eval {spec.name}")) for spec in pending)
        number = {spec.name: i for i, spec in enumerate(self.suite.tasks, start=1)}
        jobs = [launch.eval_job(self.opts, spec, checkpoint, os.path.join(dirs[spec.name], ANSWERS),
                                task_number=number[spec.name]) for spec in pending]
        jobs_file = write_json_atomic(os.path.join(self.layout.eval_root(t, task.name), "jobs.json"), jobs)
        for job in jobs:
            launch.log_command(self.layout.commands_log, self.label(t, f"eval {job['task']} (in the batch below)"),
                               launch.shim_command(job), {**self.threads, **job["env"]})
        return launch.run_logged(launch.batch_command(jobs_file), env=self.threads, log_path=log_path,
                                 commands_log=self.layout.commands_log, label=self.label(t, "eval"))

    # ------------------------------------------------------------------ --oracle-routing
    def oracle(self, t: int, *, evaluate: bool = True) -> Tuple[Dict[str, Dict[str, Any]], bool]:
        """Tasks ``i < t`` with stage ``t``'s checkpoint restricted to banks ``t0..t(i-1)``.

        Returns ``({task: score record}, whether anything was evaluated)``.  A finished restricted
        evaluation is kept when it was made with this checkpoint and ``i`` banks; anything else
        (partial, stale) is removed and redone, unless ``evaluate`` is False (then it is left out).
        """
        from llava_dymoe.protocol import oracle as orc

        task = self.suite.tasks[t - 1]
        checkpoint = self.layout.checkpoint_dir(t, task.name)
        marker = marker_sha(checkpoint)
        done: Dict[str, Dict[str, Any]] = {}
        pending: List[Tuple[int, TaskSpec, str]] = []
        for i, spec in enumerate(self.suite.tasks[:t - 1], start=1):
            d = self.layout.restricted_dir(t, task.name, spec.name)
            rec = load_score(d)
            if rec is not None and rec.get("max_tasks") == i and rec.get("checkpoint_marker_sha256") == marker:
                done[spec.name] = rec
                continue
            if not evaluate:
                continue
            if os.path.exists(d):
                why = "partial" if rec is None else "made with another checkpoint or bank count"
                status(f"{self.label(t, 'restricted evaluation')} of {spec.name} ({d}) is {why}: redoing it")
                shutil.rmtree(d)
            pending.append((i, spec, d))
        if not pending:
            return done, False
        jobs = [launch.eval_job(self.opts, spec, checkpoint, os.path.join(d, ANSWERS), max_tasks=i, task_number=i)
                for i, spec, d in pending]
        jobs_file = write_json_atomic(os.path.join(self.layout.restricted_root(t, task.name), "jobs.json"), jobs)
        for job in jobs:
            launch.log_command(self.layout.commands_log, self.label(t, f"restricted eval {job['task']} (in the "
                               "batch below)"), launch.shim_command(job), {**self.threads, **job["env"]})
        status(f"{self.label(t, 'oracle routing')}: evaluating " +
               ", ".join(f"{spec.name} with {i} bank(s)" for i, spec, _ in pending))
        launch.run_logged(launch.batch_command(jobs_file), env=self.threads,
                          log_path=self.layout.restricted_log(t, task.name), commands_log=self.layout.commands_log,
                          label=self.label(t, "restricted eval"))
        from llava_dymoe.eval.scorers import score_file

        for i, spec, d in pending:
            try:
                result = score_file(spec.scorer, os.path.join(d, ANSWERS), spec.scoring_file,
                                    reference_key=spec.reference_key)
            except (ValueError, FileNotFoundError) as e:
                raise ValueError(f"{self.label(t, 'scoring')} of task {spec.name!r} (restricted): {e}") from None
            own = self.layout.checkpoint_dir(i, spec.name)
            extra = {"max_tasks": i, "checkpoint_marker_sha256": marker,
                     "projector_unchanged": orc.projector_unchanged(checkpoint, own) if ckpt.is_finished(own)
                     else None}
            done[spec.name] = write_score(d, spec.name, result, extra)
        return done, True


def build_matrix(suite: Suite, records: List[Dict[str, Any]]) -> AccuracyMatrix:
    """Rows = finished stages (in order), columns = all suite tasks; unevaluated cells NaN."""
    matrix = AccuracyMatrix(suite.task_names)
    for rec in records:
        row = matrix.add_stage(rec["name"])
        for task, score in rec["scores"].items():
            matrix.set(row, task, score)
    return matrix


def write_outputs(layout: RunLayout, suite: Suite, records: List[Dict[str, Any]], *, plot: bool,
                  oracle: Optional[Dict[str, Dict[str, Dict[str, Any]]]] = None) -> Dict[str, Any]:
    """Rebuild matrix.csv/json, metrics.json, report.md (+ matrix.png) from the stage records; with
    ``oracle`` (``--oracle-routing``) also the restricted matrix and its report section."""
    from llava_dymoe.eval.report import write_metrics_json, write_run_report
    from llava_dymoe.methods import report_name

    matrix = build_matrix(suite, records)
    matrix.to_csv(layout.path("matrix.csv"))
    matrix.to_json(layout.path("matrix.json"))
    summary = write_metrics_json(matrix, layout.path("metrics.json"))
    write_run_report(matrix, layout.root, title=f"{report_name(layout.method)} on {suite.name}", plot=plot)
    # a suite whose tasks name a clean_scorer (CoIN: matrix.csv in CoIN's profile) also gets matrix_clean.csv
    from llava_dymoe.eval.profiles import write_clean_outputs

    write_clean_outputs(layout, suite, records)
    if oracle is not None:
        from llava_dymoe.protocol.oracle import write_oracle_outputs

        write_oracle_outputs(layout, suite, records, oracle)
    return summary


def _finished_after(stages: "_Stages", n: int) -> List[Dict[str, Any]]:
    """Verified records of the finished stages right after stage ``n`` (none are run)."""
    records = []
    for t in range(n + 1, len(stages.suite.tasks) + 1):
        rec = verify_stage(stages.layout, t, stages.suite.tasks[t - 1].name, stages.suite.task_names[:t],
                           stages.prev_checkpoint(t))
        if rec is None:
            break
        records.append(rec)
    return records


def _plot_available(wanted: bool) -> bool:
    import importlib.util

    if wanted and importlib.util.find_spec("matplotlib") is None:
        status("matplotlib is not installed: no matrix.png (pip install 'llava-dymoe[plots]')")
        return False
    return wanted


def run_sequence(opts: RunOptions) -> RunResult:
    """Run (or resume) the suite's stages into ``opts.output_dir``; see the module docstring."""
    suite = apply_task_order(load_suite(opts.suite, data_root=opts.data_root), opts.task_order)
    opts = check_options(opts, suite)
    from llava_dymoe.trainer.preflight import check_writable

    check_writable(opts.output_dir, flag="--output-dir")  # a file on its path, or no permission: refused now
    n = opts.stages or len(suite.tasks)
    missing = missing_data(suite, n)
    if missing:
        raise FileNotFoundError(f"data files of suite {suite.name!r} under --data-root {suite.data_root} are missing:"
                                "\n  " + "\n  ".join(missing) + "\nCheck --data-root (suite paths are relative to "
                                "it); CoIN question/reference files are written by `llava_dymoe.cli convert-coin`.")
    if not opts.skip_data_check:  # before the run folder is claimed: a refusal leaves nothing behind
        from llava_dymoe.protocol.preflight import check_suite_data

        report = check_suite_data(suite, n, decode_images=None)  # images decoded when cheap
        report.raise_if_failed("--skip-data-check")
        status(report.summary())
    train_args = training_overrides(suite, opts)
    if not opts.skip_data_check and is_upstream(opts.host):  # samples that keep no supervised token (upstream)
        from llava_dymoe.integration.llava_args import llava_train_argv
        from llava_dymoe.protocol.preflight import check_suite_supervision

        check_suite_supervision(suite, n, lambda task: llava_train_argv(
            opts.base, opts.vision_tower, task.train_json, task.image_root, opts.output_dir, lora=False,
            max_steps=None, overrides=train_args))
    layout = RunLayout(opts.output_dir, opts.method)
    created = layout.claim(run_identity(opts, suite, train_args), compare_identity)
    with layout.locked():
        return _run_stages(opts, suite, layout, n, train_args, created)


def _run_stages(opts: RunOptions, suite: Suite, layout: RunLayout, n: int, train_args: Dict[str, Optional[str]],
                created: bool) -> RunResult:
    from tqdm import tqdm

    status(f"{'new run' if created else 'resuming run'} {layout.root}: method {opts.method}, suite {suite.name}, "
           f"{n} of {len(suite.tasks)} stages")
    if opts.task_order is not None:
        status(f"task order (--task-order {opts.task_order}): {', '.join(suite.task_names)}")
    plot = _plot_available(opts.plot)
    stages = _Stages(opts, suite, layout, n, train_args)
    records: List[Dict[str, Any]] = []
    actions: Dict[str, str] = {}
    summary: Dict[str, Any] = {}
    oracle: Optional[Dict[str, Dict[str, Dict[str, Any]]]] = {} if opts.oracle_routing else None
    with tqdm(total=n, desc=f"{opts.method} on {suite.name}", unit="stage", file=sys.stderr) as bar:
        for t in range(1, n + 1):
            bar.set_postfix_str(suite.tasks[t - 1].name)
            rec, action = stages.run(t)
            records.append(rec)
            actions[rec["name"]] = action
            changed = action != "skipped"
            if oracle is not None:
                oracle[rec["name"]], evaluated = stages.oracle(t)
                changed = changed or evaluated
            if changed or t == n:  # the outputs are derived: rebuild them when they change
                summary = write_outputs(layout, suite, records, plot=plot, oracle=oracle)
            bar.update(1)
    later = _finished_after(stages, n)
    if later:  # --stages N below what finished earlier: report every finished stage, touch none
        records += later
        if oracle is not None:
            for rec in later:
                oracle[rec["name"]] = stages.oracle(rec["stage"], evaluate=False)[0]
        summary = write_outputs(layout, suite, records, plot=plot, oracle=oracle)
    status(f"wrote {layout.path('matrix.csv')}, metrics.json, report.md" + (", matrix.png" if plot else "") +
           (", matrix_restricted.csv, oracle_routing.json" if oracle is not None else ""))
    restricted = None
    if oracle is not None:
        from llava_dymoe.protocol.oracle import build_restricted

        restricted = build_restricted(layout, suite, records, oracle)[0]
    return RunResult(layout.root, build_matrix(suite, records), summary, records, actions, restricted)
