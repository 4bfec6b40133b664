"""Internal entry: run several upstream eval modules, one after another, in ONE process.

    python -m llava_dymoe.protocol.eval_batch JOBS.json

``JOBS.json`` is a list of ``{"task": name, "module": "llava.eval.model_vqa_loader", "argv": [...]}``
with an optional ``"env": {VAR: value}`` set for that job only (``--oracle-routing`` jobs carry
``DYMOE_EVAL_MAX_TASKS``).  Each job is exactly ``VAR=value python -m llava_dymoe.eval MODULE ARGV`` (the shim's
:func:`~llava_dymoe.eval.shim.run_upstream`: the unchanged upstream module, run as ``__main__``
under the eval patches), so ``torch``, ``transformers`` and ``llava`` are imported once per stage
instead of once per evaluated task.  The first failing job stops the batch with a non-zero exit
status; answers of the jobs before it are complete.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from typing import Dict, Iterator, List, Optional


@contextlib.contextmanager
def job_environment(env: Optional[Dict[str, str]]) -> Iterator[None]:
    """Set ``env`` in ``os.environ`` for one job, then restore the previous values."""
    env = {str(k): str(v) for k, v in (env or {}).items()}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def main(argv: Optional[List[str]] = None) -> int:
    from llava_dymoe.integration.process_hygiene import die_with_parent_if_asked

    die_with_parent_if_asked()  # started by `cli run`: end with it (its DataLoader workers follow)
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 1:
        print("usage: python -m llava_dymoe.protocol.eval_batch JOBS.json", file=sys.stderr)
        return 2
    with open(argv[0], encoding="utf-8") as f:
        jobs = json.load(f)
    logging.basicConfig(level=logging.INFO, format="[llava_dymoe] %(levelname)s %(name)s: %(message)s")
    from llava_dymoe.eval.shim import run_upstream

    for n, job in enumerate(jobs, start=1):
        start = time.perf_counter()
        env = job.get("env") or {}
        extra = "".join(f", {k}={v}" for k, v in sorted(env.items()))
        print(f"[eval_batch] job {n}/{len(jobs)}: {job['task']} ({job['module']}{extra})", flush=True)
        with job_environment(env):
            run_upstream(job["module"], job["argv"])
        print(f"[eval_batch] job {n}/{len(jobs)}: {job['task']} done in {time.perf_counter() - start:.1f} s",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
