"""``report OUT_A OUT_B ...``: compare runs side by side (MFN, MAA, BWT, final row).

Each OUT folder needs ``matrix.csv`` (or at least ``metrics.json``); its name comes from
``OUT/run.json`` ``{"method": ...}`` or else the folder name.  The Markdown goes to stdout
and to ``--output-dir/report.md``; the bar chart to ``--output-dir/comparison.png``.
"""
from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="OUT", help="run output folders to compare")
    parser.add_argument("--output-dir", default=".", help="where report.md and comparison.png go (default: .)")
    parser.add_argument("--no-plot", action="store_true", help="skip comparison.png (no matplotlib needed)")
    parser.add_argument("--digits", type=int, default=2, help="decimals in the tables (default: 2)")


def run(args: argparse.Namespace) -> int:
    from llava_dymoe.eval.report import write_comparison_report

    result = write_comparison_report(args.runs, args.output_dir, plot=not args.no_plot, digits=args.digits)
    sys.stdout.write(result["markdown"])
    print(f"wrote {result['report']}" + (f" and {result['plot']}" if result["plot"] else ""), file=sys.stderr)
    return 0
