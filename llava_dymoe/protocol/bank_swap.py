"""What a wrong bank costs: every task's test answered with every task's bank (analysis; nothing is retrained).

    python -m llava_dymoe.cli bank-swap OUT [--tasks gqa vqav2 ...] [--threads 1]

``OUT`` is a finished `cli run` folder of a method with one bank per task that is told which bank to use at
evaluation (``task_selector="oracle"``: ``oracle_bank``).  Its last checkpoint answers task ``i``'s questions with
bank ``j`` (``DYMOE_EVAL_TASK_ID=j``) for every pair, and each answer file is scored with task ``i``'s scorer:

    S[i, j] = accuracy on task i's test when bank j answers.

Why: a task selector (``dymoe_plus``, ``hide_selector``) is judged by how often it picks the task's own bank
(``cli bank-choice``), but a wrong pick between two tasks whose banks answer each other's questions equally well
costs nothing, and a benchmark whose tasks are told apart by a cue that CoIN does not offer (the harder suite's
GQA and VQAv2 analogues differ in their image domain; CoIN's both use natural photos) matters only where the
wrong bank answers worse.  ``S[i, i] - S[i, j]`` is that cost.

Files go to ``OUT/bank_swap/``, outside the stage records:

    OUT/bank_swap/<task_i>/bank_<j>_<task_j>/answers.jsonl, score.json  (score.json records the checkpoint's
                                                                           marker hash; a stale one is redone)
    OUT/bank_swap/jobs.json, eval.log, commands.log
    OUT/bank_swap/swap.json, swap.md

Resumable: finished cells made with the same checkpoint are kept.
"""
from __future__ import annotations

import os
import shutil
from typing import Any, Dict, Optional, Sequence

from llava_dymoe.integration.selector import TASK_ID_ENV
from llava_dymoe.protocol import launch
from llava_dymoe.protocol.layout import ANSWERS, RunLayout, safe_name, write_json_atomic
from llava_dymoe.protocol.stage import load_score, marker_sha, write_score
from llava_dymoe.protocol.task_order import read_run_suite

FOLDER = "bank_swap"


def swap_matrix(run_dir: str, tasks: Optional[Sequence[str]] = None, threads: Optional[int] = 1,
                log=print) -> Dict[str, Any]:
    """Answer task ``i``'s questions with bank ``j`` for every pair of ``tasks`` (default: all of the suite) from
    the run's last checkpoint; returns and writes ``swap.json`` (``{"tasks", "score": {i: {j: S}}, ...}``)."""
    from llava_dymoe.eval.scorers import score_file
    from llava_dymoe.patches.cpu_remap import cuda_available
    from llava_dymoe.protocol.reeval import read_run_record, upstream_run_options

    record = read_run_record(run_dir)
    opts = upstream_run_options(run_dir, record, "the bank swap")
    if not launch.told_the_task(opts):
        raise ValueError(f"{run_dir}: method {record['method']!r} is not told its bank at evaluation; the bank swap "
                         "needs a run of oracle_bank (task_selector='oracle': one bank per task, chosen by "
                         f"{TASK_ID_ENV})")
    suite = read_run_suite(record)
    names = suite.task_names
    chosen = list(tasks) if tasks else list(names)
    unknown = [t for t in chosen if t not in names]
    if unknown or len(set(chosen)) < len(chosen) or len(chosen) < 2:
        raise ValueError(f"--tasks {chosen}: give two or more different tasks of the run's suite ({', '.join(names)})")
    layout = RunLayout(run_dir, record["method"])
    last, final = len(names), names[-1]
    if not os.path.isfile(layout.stage_record(last, final)):
        raise ValueError(f"{run_dir}: the run has not finished its last stage ({last} {final}); the bank swap reads "
                         "the last checkpoint, which holds every task's bank")
    checkpoint = layout.checkpoint_dir(last, final)
    marker = marker_sha(checkpoint)
    root = layout.path(FOLDER)
    score: Dict[str, Dict[str, float]] = {i: {} for i in chosen}
    pending = []
    for i in chosen:
        spec = suite.task(i)
        for j in chosen:
            d = os.path.join(root, safe_name(i), f"bank_{names.index(j) + 1}_{safe_name(j)}")
            rec = load_score(d)
            if rec is not None and rec.get("checkpoint_marker_sha256") == marker:
                score[i][j] = float(rec["score"])
                continue
            if os.path.exists(d):
                shutil.rmtree(d)
            job = launch.eval_job(opts, spec, checkpoint, os.path.join(d, ANSWERS))
            job["env"] = {**job["env"], TASK_ID_ENV: str(names.index(j) + 1)}
            job["task"] = f"{i} with bank {j}"
            pending.append((spec, j, d, job))
    if pending:
        log(f"bank swap: {len(pending)} of {len(chosen) ** 2} cells to answer from {checkpoint}")
        jobs_file = write_json_atomic(os.path.join(root, "jobs.json"), [p[3] for p in pending])
        env = launch.thread_env(threads, cuda_available())
        launch.run_logged(launch.batch_command(jobs_file), env=env, log_path=os.path.join(root, "eval.log"),
                          commands_log=os.path.join(root, "commands.log"), label="bank swap")
        for spec, j, d, _ in pending:
            result = score_file(spec.scorer, os.path.join(d, ANSWERS), spec.scoring_file,
                                reference_key=spec.reference_key)
            rec = write_score(d, spec.name, result, {"bank": j, "checkpoint_marker_sha256": marker})
            score[spec.name][j] = float(rec["score"])
    report = {"run": os.path.abspath(run_dir), "checkpoint": checkpoint, "tasks": chosen,
              "score": {i: {j: score[i][j] for j in chosen} for i in chosen}, "cost": wrong_bank_cost(score, chosen)}
    write_json_atomic(os.path.join(root, "swap.json"), report)
    with open(os.path.join(root, "swap.md"), "w", encoding="utf-8") as f:
        f.write(markdown(report))
    return report


def wrong_bank_cost(score: Dict[str, Dict[str, float]], tasks: Sequence[str]) -> Dict[str, Dict[str, Any]]:
    """Per task: its own bank's score, the best other bank and what choosing it costs (own minus best other), and
    the mean cost over the other banks."""
    out = {}
    for i in tasks:
        others = {j: score[i][j] for j in tasks if j != i}
        best = max(others, key=lambda j: (others[j], -tasks.index(j)))
        out[i] = {"own": score[i][i], "best_other": best, "best_other_score": others[best],
                  "cost_best_other": score[i][i] - others[best],
                  "mean_cost": score[i][i] - sum(others.values()) / len(others)}
    return out


def markdown(report: Dict[str, Any]) -> str:
    tasks = report["tasks"]
    lines = [f"Bank swap of {report['checkpoint']}: accuracy (%) on the row's test when the column's bank answers",
             "", "| questions \\ bank | " + " | ".join(tasks) + " | best other bank (cost) |",
             "|---|" + "---|" * (len(tasks) + 1)]
    for i in tasks:
        c = report["cost"][i]
        cells = [f"**{report['score'][i][j]:.1f}**" if j == i else f"{report['score'][i][j]:.1f}" for j in tasks]
        lines.append(f"| {i} | " + " | ".join(cells) + f" | {c['best_other']} ({c['cost_best_other']:+.1f}) |")
    return "\n".join(lines) + "\n"
