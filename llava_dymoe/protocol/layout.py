"""Where the files of a run folder live (``OUT``), and who may claim the folder.

::

    OUT/
      run.json                  the run identity (method, suite, base, ...); written once
      run.lock                  held (flock) by the invocation working on the folder
      commands.log              every train / eval command line, with time and environment
      matrix.csv, matrix.json   R[t, i] in percent (rows = finished stages), rebuilt after each stage
      metrics.json              metrics.summary of the rows so far
      report.md, matrix.png     report.write_run_report
      checkpoints/<t>_<task>_llava_<method>/   the task directory written by the training entry
      stages/<t>_<task>/
        train.log, eval.log     subprocess output (appended, one header per attempt)
        eval/jobs.json          the eval batch of the last attempt
        eval/<task_i>/answers.jsonl, score.json
        stage.json              the stage completion record, written LAST (atomic rename)
        restricted/<task_i>/answers.jsonl, score.json   with --oracle-routing: task i < t evaluated
                                with this stage's checkpoint restricted to banks t0..t(i-1)
        restricted/jobs.json, restricted_eval.log       that batch and its output
      matrix_restricted.csv/.json, oracle_routing.json  with --oracle-routing (see runner)

Stage numbers are 1-based like CoIN's scripts (``1_ScienceQA``).  Task names become file
names through :func:`safe_name`.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
from typing import Any, Dict, Iterator, Optional

from llava_dymoe.integration.checkpoint import sha256_file  # noqa: F401 (re-exported)

RUN_JSON = "run.json"
LOCK = "run.lock"
COMMANDS_LOG = "commands.log"
STAGE_JSON = "stage.json"
ANSWERS = "answers.jsonl"
SCORE_JSON = "score.json"


def safe_name(name: str) -> str:
    """``name`` with every run of characters outside ``[A-Za-z0-9._-]`` replaced by ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "task"


def checkpoint_task(path: str) -> Optional[str]:
    """The task part of a ``<t>_<task>_llava_<method>`` checkpoint folder (``RunLayout.checkpoint_dir``), or None
    for a path not named that way."""
    head, sep, _ = os.path.basename(os.path.normpath(path or ".")).rpartition("_llava_")
    stage, _, task = head.partition("_")
    return task if sep and stage.isdigit() and task else None


def write_json_atomic(path: str, obj: Any) -> str:
    """Write JSON to ``path.tmp``, flush it to disk, then rename: readers see all or nothing."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


class RunLayout:
    """Paths of one run folder; every method returns an absolute path."""

    def __init__(self, root: str, method: str):
        self.root = os.path.abspath(os.path.expanduser(root))
        self.method = method

    def path(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    def rel(self, path: str) -> str:
        """``path`` relative to the run folder (what records store, so the folder can be moved)."""
        return os.path.relpath(path, self.root)

    @property
    def run_json(self) -> str:
        return self.path(RUN_JSON)

    @property
    def commands_log(self) -> str:
        return self.path(COMMANDS_LOG)

    # ------------------------------------------------------------------ per stage
    @staticmethod
    def stage_name(t: int, task: str) -> str:
        """Row name of stage ``t`` in ``matrix.csv`` and its folder name: ``"2_TextVQA"``."""
        return f"{t}_{safe_name(task)}"

    def stage_dir(self, t: int, task: str) -> str:
        return self.path("stages", self.stage_name(t, task))

    def stage_record(self, t: int, task: str) -> str:
        return os.path.join(self.stage_dir(t, task), STAGE_JSON)

    def train_log(self, t: int, task: str) -> str:
        return os.path.join(self.stage_dir(t, task), "train.log")

    def eval_log(self, t: int, task: str) -> str:
        return os.path.join(self.stage_dir(t, task), "eval.log")

    def eval_root(self, t: int, task: str) -> str:
        return os.path.join(self.stage_dir(t, task), "eval")

    def eval_dir(self, t: int, task: str, evaluated: str) -> str:
        """Answers and score of task ``evaluated`` after stage ``t``."""
        return os.path.join(self.eval_root(t, task), safe_name(evaluated))

    def restricted_root(self, t: int, task: str) -> str:
        """``--oracle-routing`` evaluations of stage ``t`` (outside ``stage.json``'s files)."""
        return os.path.join(self.stage_dir(t, task), "restricted")

    def restricted_dir(self, t: int, task: str, evaluated: str) -> str:
        """Answers and score of task ``evaluated`` after stage ``t``, routing restricted to its banks."""
        return os.path.join(self.restricted_root(t, task), safe_name(evaluated))

    def restricted_log(self, t: int, task: str) -> str:
        return os.path.join(self.stage_dir(t, task), "restricted_eval.log")

    def checkpoint_dir(self, t: int, task: str) -> str:
        """The task directory: its name contains ``llava`` (upstream's multimodal branches need it)."""
        return self.path("checkpoints", f"{self.stage_name(t, task)}_llava_{safe_name(self.method)}")

    # ------------------------------------------------------------------ claiming the folder
    def claim(self, identity: Dict[str, Any], compare) -> bool:
        """Start a new run folder or accept a resumable one.

        Writes ``run.json`` into a missing or empty folder and returns ``True``; returns
        ``False`` for a folder whose ``run.json`` matches (``compare(saved, identity, path)``
        raises on a mismatch); refuses a non-empty folder without ``run.json``.
        """
        if os.path.isfile(self.run_json):
            with open(self.run_json, encoding="utf-8") as f:
                try:
                    saved = json.load(f)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{self.run_json}: not valid JSON (line {e.lineno}: {e.msg}); this run folder "
                                     "cannot be resumed. Restore run.json or choose a new --output-dir.") from None
            compare(saved, identity, f"--output-dir {self.root} (see its {RUN_JSON})")
            return False
        if os.path.exists(self.root) and (not os.path.isdir(self.root) or os.listdir(self.root)):
            raise ValueError(f"--output-dir {self.root} is not empty and has no {RUN_JSON}, so it is not the folder "
                             "of a `llava_dymoe.cli run`; nothing in it is touched. Choose a new or empty "
                             "--output-dir.")
        os.makedirs(self.root, exist_ok=True)
        write_json_atomic(self.run_json, identity)
        return True

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold an exclusive ``flock`` on ``OUT/run.lock``: two invocations never work on one folder.

        The kernel drops the lock when the holder dies, so a killed run never blocks its resume.
        Without ``fcntl`` (not POSIX) this is a no-op.
        """
        try:
            import fcntl
        except ImportError:  # pragma: no cover - non-POSIX
            yield
            return
        with open(self.path(LOCK), "a+", encoding="utf-8") as f:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                raise ValueError(f"another `llava_dymoe.cli run` is working in {self.root} (pid {f.read().strip() or '?'}"
                                 "); wait for it to finish or stop it, then rerun to resume") from None
            f.truncate(0)
            f.write(str(os.getpid()))
            f.flush()
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)
