"""Re-evaluate a finished continual run with another token-to-bank rule or task selector (analysis; nothing is
retrained).

    python -m llava_dymoe.protocol.reeval OUT --assign-rule cascade [--threads 1]
    python -m llava_dymoe.protocol.reeval OUT --task-selector prism [--threads 1]

Every finished stage ``t`` of the run folder ``OUT`` answers every task ``i <= t`` again, with the
checkpoint loaded under ``DYMOE_EVAL_ASSIGN_RULE=<rule>`` (``integration.eval_loader``): e.g. a ``dymoe``
checkpoint with TAG's decision kept at inference (``cascade``).  Files go to ``OUT/reeval/<rule>/``, outside
the stage records, so the run itself is untouched.  With ``--task-selector prism`` a ``hide_selector`` run is
answered with Prism's argmax over the same anchors (``DYMOE_EVAL_TASK_SELECTOR``), which is what a
``prism_selector`` run of the same seed answers (its banks and anchors are bit-identical: tested); files then go to
``OUT/reeval/selector-<kind>/``:

    OUT/reeval/<rule>/<t>_<task>/<task_i>/answers.jsonl, score.json   (score.json records the checkpoint's
                                                                       marker hash; a stale one is redone)
    OUT/reeval/<rule>/jobs_<t>.json, eval_<t>.log
    OUT/reeval/<rule>/matrix.csv, matrix.json, metrics.json

Resumable: finished cells made with the same checkpoint are kept.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from typing import List, Optional

from llava_dymoe.eval.matrix import AccuracyMatrix
from llava_dymoe.integration.eval_loader import ASSIGN_RULE_ENV
from llava_dymoe.integration.selector import TASK_SELECTOR_ENV
from llava_dymoe.protocol import launch
from llava_dymoe.protocol.layout import ANSWERS, RUN_JSON, RunLayout, safe_name, write_json_atomic
from llava_dymoe.protocol.options import RunOptions
from llava_dymoe.protocol.stage import load_score, marker_sha, write_score
from llava_dymoe.protocol.task_order import read_run_suite


def read_run_record(run_dir: str) -> dict:
    """The ``run.json`` of a run folder written by ``cli run`` (refused when there is none)."""
    path = os.path.join(run_dir, RUN_JSON)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{run_dir} is not a run folder of `cli run` (no {RUN_JSON})")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def upstream_run_options(run_dir: str, record: dict, what: str) -> RunOptions:
    """The options to answer again with a finished run's checkpoints (``what`` names the analysis in the refusal)."""
    if record.get("host", "llava") != "llava":
        raise ValueError(f"{run_dir} ran on host {record['host']!r}: {what} goes "
                         "through upstream LLaVA's eval loader only (docs/hosts.md)")
    return RunOptions(suite=record["suite_file"], data_root=record["data_root"], method=record["method"],
                      output_dir=run_dir, base=record["base"], vision_tower=record["vision_tower"],
                      eval_max_new_tokens=record.get("eval_max_new_tokens"))


def reevaluate(run_dir: str, assign_rule: Optional[str] = None, threads: Optional[int] = 1,
               task_selector: Optional[str] = None) -> AccuracyMatrix:
    """Answer every (finished stage, seen task) cell of ``run_dir`` with ``assign_rule`` or, instead,
    ``task_selector``; returns the matrix."""
    from llava_dymoe.eval.report import write_metrics_json
    from llava_dymoe.eval.scorers import score_file
    from llava_dymoe.patches.cpu_remap import cuda_available

    record = read_run_record(run_dir)
    override, folder = _override(record, assign_rule, task_selector)
    what = "another assign rule" if assign_rule is not None else "another task selector"
    opts = upstream_run_options(run_dir, record, f"re-evaluation with {what}")
    suite = read_run_suite(record)
    layout = RunLayout(run_dir, record["method"])
    root = layout.path("reeval", folder)
    label = next(iter(override.values()))
    how = {"assign_rule": assign_rule} if assign_rule is not None else {"task_selector": task_selector}
    env = {**launch.thread_env(threads, cuda_available())}
    matrix = AccuracyMatrix(suite.task_names)
    for t, task in enumerate(suite.tasks, start=1):
        if not os.path.isfile(layout.stage_record(t, task.name)):
            break
        checkpoint = layout.checkpoint_dir(t, task.name)
        marker = marker_sha(checkpoint)
        stage = layout.stage_name(t, task.name)
        row = matrix.add_stage(stage)
        pending = []
        for spec in suite.tasks[:t]:
            d = os.path.join(root, stage, safe_name(spec.name))
            rec = load_score(d)
            if rec is not None and rec.get("checkpoint_marker_sha256") == marker:
                matrix.set(row, spec.name, float(rec["score"]))
                continue
            if os.path.exists(d):
                shutil.rmtree(d)
            pending.append((spec, d))
        if not pending:
            continue
        jobs = []
        for spec, d in pending:
            job = launch.eval_job(opts, spec, checkpoint, os.path.join(d, ANSWERS))
            job["env"] = {**job["env"], **override}
            jobs.append(job)
        jobs_file = write_json_atomic(os.path.join(root, f"jobs_{t}.json"), jobs)
        launch.run_logged(launch.batch_command(jobs_file), env=env, log_path=os.path.join(root, f"eval_{t}.log"),
                          commands_log=os.path.join(root, "commands.log"), label=f"reeval {label} {stage}")
        for spec, d in pending:
            result = score_file(spec.scorer, os.path.join(d, ANSWERS), spec.scoring_file,
                                reference_key=spec.reference_key)
            rec = write_score(d, spec.name, result, {**how, "checkpoint_marker_sha256": marker})
            matrix.set(row, spec.name, float(rec["score"]))
    matrix.to_csv(os.path.join(root, "matrix.csv"))
    matrix.to_json(os.path.join(root, "matrix.json"))
    if len(matrix.stages):
        write_metrics_json(matrix, os.path.join(root, "metrics.json"))
    return matrix


def _override(record: dict, assign_rule: Optional[str], task_selector: Optional[str]):
    """``({env var: value}, folder under reeval/)`` for exactly one of ``assign_rule`` and ``task_selector``."""
    from llava_dymoe.config import ANCHOR_SELECTORS, ASSIGN_RULES
    from llava_dymoe.methods import get_method

    if (assign_rule is None) == (task_selector is None):
        raise ValueError("re-evaluation: give exactly one of --assign-rule and --task-selector")
    if assign_rule is not None:
        if assign_rule not in ASSIGN_RULES:
            raise ValueError(f"--assign-rule {assign_rule!r}: choose one of {list(ASSIGN_RULES)}")
        return {ASSIGN_RULE_ENV: assign_rule}, safe_name(assign_rule)
    own = get_method(record["method"]).build_config().task_selector
    if task_selector not in ANCHOR_SELECTORS or own not in ANCHOR_SELECTORS:
        raise ValueError(f"--task-selector {task_selector!r}: a run of an anchor selector (hide_selector, "
                         f"prism_selector) can be answered with another of {list(ANCHOR_SELECTORS)}; this run's method "
                         f"{record['method']!r} has task_selector={own!r}")
    return {TASK_SELECTOR_ENV: task_selector}, f"selector-{safe_name(task_selector)}"


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m llava_dymoe.protocol.reeval", description=__doc__.split("\n")[0])
    p.add_argument("run_dir", help="a run folder written by `cli run`")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--assign-rule", help="token-to-bank rule to evaluate with (paper, cascade)")
    how.add_argument("--task-selector", help="anchor selector to evaluate a hide_selector / prism_selector run with "
                                             "(hide, prism)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads of the eval process (default 1)")
    args = p.parse_args(argv)
    try:
        matrix = reevaluate(args.run_dir, args.assign_rule, args.threads, task_selector=args.task_selector)
    except (ValueError, KeyError, FileNotFoundError, launch.StageFailed) as e:
        print(f"reeval: {e}", file=sys.stderr)
        return 2
    print(matrix.to_csv_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
