"""``make results``: every method, the ablation ladder, the tau sweep, the width study and the beyond-the-paper
variants (plasticity issue) over seeds.

    python -m llava_dymoe.study [--output-dir results_out] [--doc docs/results.md] [--profile full]
                                [--groups methods ladder tau width variants variants_width order causes
                                          routers third_order | harder harder_candidates]
                                [--seeds 0 1 2] [--jobs 2]
                                [--widths 64 256 512] [--aggregate-only]

Resumable: rerun the same command after an interruption; finished runs are skipped.  The doc
(Markdown + PNG plots in ``<doc dir>/results/``) is rewritten from whatever runs have finished.
"""
from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys

from .aggregate import write_results_doc
from .bank_choice import run_bank_choice
from .bank_swap import run_bank_swap
from .diagnose import run_drift
from .execute import finished_bases, run_plan
from .plan import DEFAULT_GROUPS, DEFAULT_SUITE, GROUPS, PROFILES, TAU_SWEEP, WIDTHS, build_plan, plan_suite
from .variants import run_reeval


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m llava_dymoe.study", description=__doc__.split("\n")[0])
    p.add_argument("--output-dir", default="results_out", help="runs, base models and suite (default results_out)")
    p.add_argument("--doc", help="Markdown file to write (plots go next to it); default docs/results.md, "
                                 "docs/results-harder.md for the groups harder and harder_candidates (the coin_shaped "
                                 "suite)")
    p.add_argument("--profile", default="full", choices=sorted(PROFILES), help="sizes (quick = CI-sized check)")
    p.add_argument("--groups", nargs="+", default=list(DEFAULT_GROUPS), choices=GROUPS,
                   help="default: every group but 'harder' and 'harder_candidates' (changes to dymoe_plus, issue "
                        "26 item 5), which run on the coin_shaped suite and are studied on their own (make "
                        "results-harder)")
    p.add_argument("--seeds", nargs="+", type=int, help="training seeds (default: the profile's, 0 1 2)")
    p.add_argument("--widths", nargs="+", type=int, default=list(WIDTHS), help="LLM widths of the width study")
    p.add_argument("--taus", nargs="+", type=float, default=list(TAU_SWEEP), help="tau values of the sweep")
    p.add_argument("--task-steps", type=int, help="override the profile's steps per task")
    p.add_argument("--train-projector", action="store_true",
                   help="train the projector in every stage (LLaVA/CoIN style) instead of keeping the base's")
    p.add_argument("--jobs", type=int, default=2, help="runs at a time, one thread each (default 2)")
    p.add_argument("--base-threads", type=int, default=None,
                   help="threads of a base model's training (default 2 when it trains alone; on a machine shared "
                        "with other work 1 is faster: two threads competing made steps about 3x slower, measured)")
    p.add_argument("--no-diagnostics", action="store_true",
                   help="skip the routing diagnostics (cli drift on seed 0 of incmoelora, dymoe and dymoe_plus; "
                        "dymoe and incmoelora answered again with TAG kept at inference; cli bank-choice on the "
                        "last checkpoints of dymoe, the first round's recipe and dymoe_plus; on the harder suite also "
                        "cli bank-swap on oracle_bank's seed 0)")
    p.add_argument("--aggregate-only", action="store_true", help="only rewrite the doc from finished runs")
    args = p.parse_args(argv)
    for w in args.widths:
        if w < 8 or w % 4:
            p.error(f"--widths: {w} must be a multiple of 4 (4 attention heads) and >= 8")
    profile = PROFILES[args.profile]
    if args.seeds:
        profile = dataclasses.replace(profile, seeds=tuple(args.seeds))
    if args.train_projector:
        profile = dataclasses.replace(profile, dymoe_args={**profile.dymoe_args, "train_projector": "True"})
    if args.task_steps:
        profile = dataclasses.replace(profile, task_steps=args.task_steps)
    plan = build_plan(args.groups, widths=args.widths, taus=args.taus)
    try:
        suite = plan_suite(plan)
    except ValueError as e:
        p.error(str(e))
    if args.doc is None:
        args.doc = "docs/results.md" if suite == DEFAULT_SUITE else "docs/results-harder.md"
    command = "python -m llava_dymoe.study " + shlex.join(sys.argv[1:] if argv is None else list(argv))
    bases, total = finished_bases(args.output_dir, plan), None
    if not args.aggregate_only:
        try:
            done = run_plan(args.output_dir, profile, plan, n_parallel=args.jobs, base_threads=args.base_threads)
        except RuntimeError as e:
            print(str(e), file=sys.stderr)
            return 1
        bases, total = done["bases"], done["total_s"]
        if not args.no_diagnostics:
            run_drift(args.output_dir, plan, bases, done["suite"])
            run_reeval(args.output_dir, plan, profile.seeds)
            run_bank_choice(args.output_dir, plan, bases, done["suite"], profile.seeds)
            run_bank_swap(args.output_dir, plan)
    result = write_results_doc(args.output_dir, args.doc, plan, profile, command=command.strip(), bases=bases,
                               total_s=total, widths=args.widths if "width" in args.groups else ())
    print(open(result["doc"]).read())
    print(f"wrote {result['doc']} and plots in {result['plot_dir']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
