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


def patched_llava_copy(diff: str, site) -> dict:
    """Copy the ``llava`` package in use into ``site``, apply ``diff`` there (a dry run first, then for real;
    no failed or fuzzy hunk allowed) and return the environment that puts that copy first on PYTHONPATH."""
    import importlib.util
    import os
    import shutil
    import subprocess

    from llava_dymoe.integration.llava_args import run_python

    if shutil.which("patch") is None:
        pytest.skip("GNU patch is not installed (apt-get install patch)")
    src = importlib.util.find_spec("llava").submodule_search_locations[0]
    shutil.copytree(src, site / "llava", ignore=shutil.ignore_patterns("__pycache__"))
    for extra in (["--dry-run"], []):
        with open(diff) as f:
            proc = subprocess.run(["patch", "-p1", "--forward", "--batch", *extra], stdin=f, cwd=site,
                                  capture_output=True, text=True)
        assert proc.returncode == 0 and "FAILED" not in proc.stdout and "fuzz" not in proc.stdout, proc.stdout
    env = {"PYTHONPATH": str(site) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    where = run_python("import llava, os; print(os.path.dirname(llava.__file__))", [], env=env)
    assert where.stdout.strip().splitlines()[-1] == str(site / "llava")
    return env
