"""Command line entry point: ``python -m llava_dymoe.cli <command> [options]``.

This module only wires commands; each lives in its own module that defines

* ``add_arguments(parser)`` — add the command's options to its ``argparse`` sub-parser;
* ``run(args) -> int`` — do the work and return the exit status.

To add a command, write ``llava_dymoe/commands/<name>.py`` with those two functions and add
one line to :data:`SUBCOMMANDS`.  Only the module of the command being run is imported,
so a command with heavy imports (torch, llava) does not slow down or break the others.
A ``ValueError``, ``KeyError``, ``FileNotFoundError`` or ``ImportError`` escaping ``run`` is
printed as ``error: ...`` and exits with status 2 (a ``llava_dymoe.errors.DyMoEError`` with its
details first); ``LLAVA_DYMOE_DEBUG=1`` shows the traceback instead.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Dict, List, Optional, Sequence, Tuple

# command name -> (implementing module, one-line help)
SUBCOMMANDS: Dict[str, Tuple[str, str]] = {
    "metrics": ("llava_dymoe.commands.metrics",
                "print MFN, MAA, BWT, forgetting and MFT of a matrix.csv as one JSON object"),
    "report": ("llava_dymoe.commands.report",
               "compare run output folders: Markdown table to stdout, report.md and comparison.png"),
    "score": ("llava_dymoe.commands.score",
              "score a merged answers JSONL against references with a registered scorer"),
    "run": ("llava_dymoe.commands.run",
            "train a suite's tasks in order, evaluate all tasks seen so far after each; resumable"),
    "drift": ("llava_dymoe.commands.drift",
              "routing drift of old-task inputs between checkpoints, per layer and projection (JSON, MD, PNG)"),
    "tokens": ("llava_dymoe.commands.tokens",
               "new/old/ambiguous token fractions of a new task's data against a checkpoint's experts"),
    "bank-choice": ("llava_dymoe.commands.bank_choice",
                    "which cue (image or question text) routes each task's inputs to its own bank"),
    "bank-swap": ("llava_dymoe.commands.bank_swap",
                  "what a wrong bank costs: every task's test answered by every bank of a finished oracle_bank run"),
    "convert-coin": ("llava_dymoe.commands.convert_coin",
                     "convert CoIN's test JSON into upstream question files and reference JSONL"),
    "convert-ucit": ("llava_dymoe.commands.convert_ucit",
                     "convert UCIT's test files (and caption references) into question files and reference JSONL"),
    "check-data": ("llava_dymoe.commands.check_data", "check training/question data (or a suite's) before training"),
}


def _chosen(argv: Sequence[str]) -> Optional[str]:
    for token in argv:
        if not token.startswith("-"):
            return token if token in SUBCOMMANDS else None
    return None


#: The program name in usage lines (``llava_dymoe.console`` passes ``llava-dymoe``).
PROG = "python -m llava_dymoe.cli"


def build_parser(argv: Sequence[str] = (), prog: str = PROG) -> argparse.ArgumentParser:
    """The top-level parser; the chosen command's module adds its own arguments."""
    parser = argparse.ArgumentParser(prog=prog,
                                     description="LLaVA-DyMoE continual-learning tools.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = _chosen(argv)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            module = importlib.import_module(module_name)
            module.add_arguments(p)
            p.set_defaults(_run=module.run)
    return parser


def main(argv: Optional[List[str]] = None, prog: str = PROG) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv, prog)
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help(sys.stderr)
        return 2
    from llava_dymoe.errors import DyMoEError, debug_enabled, print_refusal

    try:
        return int(args._run(args) or 0)
    except DyMoEError as e:  # a known refusal: one line (plus its details), no traceback
        if debug_enabled():
            raise
        return print_refusal(e)
    except (ValueError, KeyError, FileNotFoundError, ImportError) as e:
        if debug_enabled():
            raise
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
