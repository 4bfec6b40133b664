"""Run a results plan: base models per width, the synthetic suite, then every (experiment, seed) as a
``cli run`` subprocess, ``jobs`` at a time, each with one thread (the tiny model is fastest that way).

Everything is resumable: base models and the suite are cached by their requests, and ``cli run``
resumes a run folder (finished stages are verified and skipped).  A failed run is reported with its
log file; the others go on.
"""
from __future__ import annotations

import glob
import os
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

from .plan import DEFAULT_SUITE, DEFAULT_WIDTH, Experiment, Profile, orders_for, plan_suite, widths_needed


@dataclass
class RunJob:
    experiment: Experiment
    seed: int
    out_dir: str
    command: List[str]
    log: str


def run_dir(root: str, experiment: Experiment, seed: int) -> str:
    return os.path.join(root, "runs", experiment.key, f"seed{seed}")


def _suite_suffix(suite: str) -> str:
    return "" if suite == DEFAULT_SUITE else f"_{suite}"


def base_folder(root: str, width: int, suite: str = DEFAULT_SUITE) -> str:
    """The base model of ``width`` for ``suite`` (another suite's CLIP geometry and mixture: its own folder)."""
    return os.path.join(root, ("base" if width == DEFAULT_WIDTH else f"base_d{width}") + _suite_suffix(suite))


def suite_folder(root: str, suite: str = DEFAULT_SUITE) -> str:
    return os.path.join(root, "suite" + _suite_suffix(suite))


def finished_bases(root: str, plan: Sequence[Experiment]):
    """``{width: BaseModel}`` of the plan's base models already built under ``root`` (nothing is built)."""
    from llava_dymoe.synthetic.base import load_base_model

    suite = plan_suite(plan)
    found = {w: load_base_model(base_folder(root, w, suite)) for w in widths_needed(plan)}
    return {w: b for w, b in found.items() if b is not None}


#: A study's base model saves a checkpoint this often, so an interrupted study resumes its base mid-training
#: (the CoIN-shaped base takes hours on the 2-core machine).
BASE_CHECKPOINT_EVERY = 200


def prepare(root: str, profile: Profile, plan: Sequence[Experiment], log: Callable[[str], None] = print,
            n_parallel: int = 1, base_threads: Optional[int] = None):
    """Build (or reuse) one base model per width of the plan and the suite; returns ``(bases, suite)``.

    With ``n_parallel`` > 1 up to that many base models train at once (one thread each, no progress
    bars: they would overwrite each other); the suite is written meanwhile.  ``base_threads`` is each
    base training's thread count; by default 1 when bases train in parallel, else up to 2 (the base
    trains alone).  Measured on the 2-core machine at d=128, 200 steps of batch 32, quiet (2026-12-03):
    2 threads 49.3 s, 1 thread + 1 data-loading worker 58.1 s, 2 threads + 1 worker 60.1 s, with the
    once-per-process Pillow check (patches/vision_check.py, D1); without it 87.0 s, 61.3 s and 82.7 s
    (1 thread: 90.9 s), when preparing the images of a batch took 148 ms in the training process."""
    from llava_dymoe.synthetic import generate_suite
    from llava_dymoe.synthetic.base import BaseConfig, base_learning_rate, build_base_model, default_sizes
    from llava_dymoe.synthetic.suites import get_suite

    name = plan_suite(plan)
    spec = get_suite(name)
    widths = widths_needed(plan)
    parallel = n_parallel > 1 and len(widths) > 1
    if base_threads is None:
        base_threads = 1 if parallel else min(2, os.cpu_count() or 1)
    if base_threads < 1:
        raise ValueError(f"base_threads must be >= 1, got {base_threads}")

    def build(width: int):
        folder = base_folder(root, width, name)
        log(f"base model d={width}: {folder}")
        config = BaseConfig(seed=0, steps=profile.base_steps, learning_rate=base_learning_rate(width),
                            image_size=spec.image_size, mixture=name)
        sizes = default_sizes(spec.image_size, spec.patches, hidden_size=width, intermediate_size=2 * width)
        return build_base_model(folder, config, sizes=sizes,
                                evaluate=profile.name != "quick", log=log, progress=not parallel,
                                threads=base_threads,
                                checkpoint_every=BASE_CHECKPOINT_EVERY if profile.base_steps > BASE_CHECKPOINT_EVERY else 0)

    with ThreadPoolExecutor(max_workers=min(n_parallel, len(widths)) if parallel else 1) as pool:
        futures = {w: pool.submit(build, w) for w in widths}
        suite = generate_suite(suite_folder(root, name), seed=0, n_train=profile.n_train, n_test=profile.n_test,
                               tasks=profile.tasks, suite=name)
        bases = {w: f.result() for w, f in futures.items()}
    return bases, suite


def make_jobs(root: str, profile: Profile, plan: Sequence[Experiment], bases, suite,
              folder: Optional[Callable[[Experiment, int], str]] = None) -> List[RunJob]:
    """One ``cli run`` command per (experiment, seed); ``folder(exp, seed)`` overrides ``run_dir``."""
    jobs, seen = [], set()
    for exp in plan:
        for seed in profile.seeds:
            out = folder(exp, seed) if folder else run_dir(root, exp, seed)
            if out in seen:  # the same configuration listed in two groups runs once
                continue
            seen.add(out)
            base = bases[exp.width]
            cmd = [sys.executable, "-m", "llava_dymoe.cli", "run", "--suite", suite_file(suite, exp.order),
                   "--data-root", suite.root, "--method", exp.method, "--output-dir", out, "--base", base.llm,
                   "--vision-tower", base.clip, "--pretrain-mm-mlp-adapter", base.projector, "--threads", "1",
                   "--train-arg", f"max_steps={profile.task_steps}", "--train-arg", f"seed={seed}"]
            for k, v in profile.train_args.items():
                cmd += ["--train-arg", f"{k}={v}"]
            dymoe_args = {**profile.dymoe_args, **dict(exp.dymoe_args)}
            for k, v in dymoe_args.items():
                cmd += ["--dymoe-arg", f"{k}={v}"]
            if profile.oracle_routing and _expands(exp.method):
                cmd += ["--oracle-routing"]
            if profile.log_routing and _routes_per_task(exp.method):
                cmd += ["--dymoe-arg", "log_routing=True"]
            jobs.append(RunJob(exp, seed, out, cmd, out + ".log"))
    return jobs


def suite_file(suite, order: str) -> str:
    """The suite YAML of task order ``order`` (``plan.orders_for`` the suite); the default order is the suite's own
    file."""
    from llava_dymoe.synthetic.generate import ordered_suite_yaml

    orders = orders_for(getattr(suite, "manifest", {}).get("name", DEFAULT_SUITE))
    if order not in orders:
        raise ValueError(f"unknown task order {order!r}; known: {sorted(orders)}")
    if order == "default":
        return suite.suite_yaml
    return ordered_suite_yaml(suite, orders[order], order)


def _recipe(method: str):
    from llava_dymoe.methods import get_method

    return get_method(method).build_config()


def _expands(method: str) -> bool:
    return _recipe(method).expand


def _routes_per_task(method: str) -> bool:
    """One bank per task behind a router: the methods whose routing statistics say what TAG sees."""
    cfg = _recipe(method)
    return cfg.expand and cfg.router != "none"


def finished_stages(out_dir: str) -> int:
    """How many stages of the run in ``out_dir`` have their completion record (``stage.json``)."""
    from llava_dymoe.protocol.layout import STAGE_JSON

    return len(glob.glob(os.path.join(glob.escape(out_dir), "stages", "*", STAGE_JSON)))


def finished_under_former_name(out_dir: str, method: str, n_stages: int) -> bool:
    """True for a finished run folder (``n_stages`` stage records and ``matrix.csv``) whose ``run.json`` names another
    method than ``method`` for the same recipe: a name that moved (``methods.FORMER_ALIASES``; the harder study's
    ``dymoe_seqbank`` folders were started as ``dymoe_plus``)."""
    from llava_dymoe.methods import get_method
    from llava_dymoe.protocol.layout import RUN_JSON
    from llava_dymoe.protocol.options import saved_recipe
    from llava_dymoe.protocol.reeval import read_run_record

    if finished_stages(out_dir) < n_stages or not os.path.isfile(os.path.join(out_dir, "matrix.csv")) \
            or not os.path.isfile(os.path.join(out_dir, RUN_JSON)):
        return False
    saved = read_run_record(out_dir)
    return saved.get("method") != method and saved_recipe(saved) == get_method(method).name


def run_jobs(jobs: Sequence[RunJob], n_parallel: int = 2, progress: bool = True, stages_per_run: int = 0,
             desc: str = "results") -> Dict[str, float]:
    """Run the jobs; returns ``{out_dir: wall seconds}``; raises ``RuntimeError`` listing failures.

    The bar counts finished runs, or with ``stages_per_run`` the finished stages of all runs (polled
    from their ``stage.json`` files every 2 s, so a resumed run starts with its stages counted).  Every other run is
    launched, and ``cli run`` checks its folder's identity, except a finished one recorded under a former name of the
    very recipe the job asks for (``finished_under_former_name``), which ``cli run`` cannot resume by design: it is
    read as it is (wall 0)."""
    from tqdm import tqdm

    def one(job: RunJob):
        if stages_per_run and finished_under_former_name(job.out_dir, job.experiment.method, stages_per_run):
            return job, 0, 0.0
        os.makedirs(os.path.dirname(job.out_dir), exist_ok=True)
        t0 = time.time()
        env = dict(os.environ, OMP_NUM_THREADS="1")
        with open(job.log, "a", encoding="utf-8") as f:
            f.write(f"$ {' '.join(job.command)}\n")
            f.flush()
            rc = subprocess.call(job.command, stdout=f, stderr=subprocess.STDOUT, env=env)
        return job, rc, time.time() - t0

    def stages_done() -> int:
        return sum(min(stages_per_run, finished_stages(j.out_dir)) for j in jobs)

    walls: Dict[str, float] = {}
    failed: List[str] = []
    bar = tqdm(total=len(jobs) * (stages_per_run or 1), desc=desc, unit="stage" if stages_per_run else "run",
               disable=not progress)
    with ThreadPoolExecutor(max_workers=max(1, n_parallel)) as pool:
        running = {pool.submit(one, j) for j in jobs}
        while running:
            done, running = wait(running, timeout=2.0 if stages_per_run else None, return_when=FIRST_COMPLETED)
            for fut in done:
                job, rc, wall = fut.result()
                walls[job.out_dir] = wall
                if rc:
                    failed.append(f"{job.experiment.key} seed {job.seed}: exit {rc}, log {job.log}")
                bar.set_postfix_str(f"{job.experiment.key} s{job.seed} {wall:.0f}s")
                if not stages_per_run:
                    bar.update()
            finished = stages_done() if stages_per_run else bar.n
            if finished != bar.n:
                bar.n = finished
                bar.refresh()
    bar.close()
    if failed:
        raise RuntimeError("results: some runs failed (rerun the same command to resume them):\n  "
                           + "\n  ".join(failed))
    return walls


def run_plan(root: str, profile: Profile, plan: Sequence[Experiment], n_parallel: int = 2,
             log: Callable[[str], None] = print, progress: bool = True,
             base_threads: Optional[int] = None) -> Dict[str, object]:
    t0 = time.time()
    bases, suite = prepare(root, profile, plan, log=log, n_parallel=n_parallel, base_threads=base_threads)
    t_prep = time.time() - t0
    jobs = make_jobs(root, profile, plan, bases, suite)
    log(f"results: {len(jobs)} runs ({len(plan)} configurations x {len(profile.seeds)} seeds), {n_parallel} at a time")
    walls = run_jobs(jobs, n_parallel, progress=progress, stages_per_run=len(suite.tasks))
    return {"bases": bases, "suite": suite, "jobs": jobs, "walls": walls, "prepare_s": t_prep,
            "total_s": time.time() - t0}


def base_summary(bases) -> Dict[int, Optional[Dict[str, float]]]:
    return {w: (b.accuracy or None) for w, b in bases.items()}
