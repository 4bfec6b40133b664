"""``bank-swap``: every task's test answered by every task's bank of a finished ``oracle_bank`` run, i.e. what a
wrong bank choice costs (``protocol/bank_swap.py``)."""
from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="a finished run folder of oracle_bank written by `cli run`")
    parser.add_argument("--tasks", nargs="+", default=None, help="the tasks to cross (default: every task of the suite)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of the eval process (default 1)")


def run(args: argparse.Namespace) -> int:
    from llava_dymoe.protocol import launch
    from llava_dymoe.protocol.bank_swap import markdown, swap_matrix

    try:
        report = swap_matrix(args.run_dir, args.tasks, args.threads)
    except (ValueError, FileNotFoundError, launch.StageFailed) as e:
        print(f"bank-swap: {e}", file=sys.stderr)
        return 2
    print(markdown(report))
    return 0
