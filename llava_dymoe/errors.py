"""Refusals the user can fix: the ``DyMoEError`` family and how the entry points print it.

A ``DyMoEError`` says what is wrong and what to do, in one line (``str(e)``).  Longer material
that helps (every bad sample of a data check, say) goes into ``details`` and is printed before
that line.  The entry points (``python -m llava_dymoe.train``, ``python -m llava_dymoe.cli``)
print a refusal as::

    <details, if any>
    error: <message>

and exit with status 2, without a traceback.  ``LLAVA_DYMOE_DEBUG=1`` re-raises instead, so
the traceback shows where the refusal came from.  Stdlib only: every layer may import it.
"""
from __future__ import annotations

import os
import sys
from typing import Callable, Optional, TextIO

#: Exit status of a refusal (argparse's status for bad usage).
EXIT_REFUSED = 2
#: Set to 1 to see the traceback of a refusal.
DEBUG_ENV = "LLAVA_DYMOE_DEBUG"


class DyMoEError(ValueError):
    """A known refusal: bad input or a run that would lose data.  ``str(e)`` is one line.

    A ``ValueError`` so that callers written before the family existed still catch it."""

    def __init__(self, message: str, details: Optional[str] = None):
        super().__init__(message)
        self.message = message
        self.details = details


class DataError(DyMoEError):
    """Training or evaluation data that LLaVA would fail on (or silently mistrain on)."""


class OutputDirError(DyMoEError):
    """An ``--output_dir`` whose contents a run would overwrite but did not write."""


class ConfigError(DyMoEError):
    """Training flags that do not fit together, or do not fit the previous task's checkpoint."""


class ResultRangeError(DyMoEError):
    """A score, matrix or comparison outside what the measurement can produce."""


def debug_enabled() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip() not in ("", "0")


def print_refusal(e: DyMoEError, stream: Optional[TextIO] = None) -> int:
    """Print ``e`` as the entry points do (details, then ``error: <message>``); return 2."""
    stream = stream or sys.stderr
    if e.details:
        print(e.details.rstrip("\n"), file=stream)
    print(f"error: {e.message}", file=stream)
    return EXIT_REFUSED


def run_refusing(main: Callable[[], object]) -> object:
    """Call ``main()``; a ``DyMoEError`` exits with status 2 after :func:`print_refusal`
    (re-raised with ``LLAVA_DYMOE_DEBUG=1``)."""
    try:
        return main()
    except DyMoEError as e:
        if debug_enabled():
            raise
        sys.exit(print_refusal(e))
