"""Which upstream line this environment runs, for tests: ``on_line("1.2", reason)`` skips elsewhere.

The line is the one ``llava_dymoe.patches.lines`` picks for the ``llava`` in use (by its symbols, not a
version string).  Tests that touch upstream code and hold on both lines carry ``pytest.mark.llava11``
(``make test-llava11`` runs them in .venv-llava11); 1.2-only behaviour is guarded with ``on_line("1.2")``.
"""
import functools

import pytest


@functools.lru_cache(maxsize=None)
def current_line() -> str:
    from llava_dymoe.patches.lines import scan

    try:
        return scan().nearest_line.name
    except Exception:  # no llava installed: report the default line; upstream tests skip on import
        return "1.2"


def on_line(name: str, reason: str = ""):
    """Skip unless the environment runs upstream line ``name`` ("1.2" or "1.1")."""
    here = current_line()
    return pytest.mark.skipif(here != name, reason=f"needs the {name} upstream line (this environment runs the "
                                                   f"{here} line){': ' + reason if reason else ''}")
