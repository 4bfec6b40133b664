"""Process hygiene (issue 17 item 6): no training or evaluation outlives the runner that started it, and two
trainings never work in one output folder at once.

* :func:`child_setup` (a ``Popen`` ``preexec_fn``): the child gets SIGKILL when its parent dies, by any
  signal, SIGKILL included (Linux ``prctl(PR_SET_PDEATHSIG)``), and it leads its own process group so
  the runner can kill it with everything it started (:func:`kill_group`).
* :data:`DIE_WITH_PARENT_ENV`: the runner sets it in its children's environment; the DyMoE entries
  (``llava_dymoe.train``, ``llava_dymoe.eval``, ``llava_dymoe.protocol.eval_batch``) then call
  :func:`die_with_parent_if_asked`, so a process started by an intermediate launcher (the DeepSpeed
  launcher's ranks) dies with that launcher too.  Forked DataLoader workers stop by themselves once
  their parent is gone (torch's worker watchdog, within 5 s).  Without the variable (a user's own
  ``nohup python -m llava_dymoe.train``) nothing changes.
* :func:`hold_output_lock`: an exclusive ``flock`` on ``<output_dir>/.dymoe_train.lock`` for the life of
  the training process (rank 0); a second training into that folder is refused, naming the holder's
  pid.  The kernel drops the lock when the holder dies, so a killed run never blocks its resume.

Stdlib only; every function is a no-op where the OS lacks the facility.
"""
from __future__ import annotations

import os
import signal
import sys
from typing import Optional, TextIO

from ..errors import OutputDirError

DIE_WITH_PARENT_ENV = "LLAVA_DYMOE_DIE_WITH_PARENT"
TRAIN_LOCK = ".dymoe_train.lock"
_PR_SET_PDEATHSIG = 1
_HELD: list = []  # open lock files of this process (kept open = lock held)


def set_parent_death_signal(sig: int = signal.SIGKILL) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent dies (Linux); False elsewhere."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):  # pragma: no cover - no libc prctl
        return False


def child_setup() -> None:
    """``preexec_fn`` of the runner's children: own process group, killed when the runner dies."""
    os.setpgid(0, 0)
    set_parent_death_signal()


def die_with_parent_if_asked() -> None:
    """At the start of an entry point: with ``$LLAVA_DYMOE_DIE_WITH_PARENT`` set, die with the parent
    (and exit at once if the parent is already gone)."""
    if os.environ.get(DIE_WITH_PARENT_ENV, "").strip() in ("", "0"):
        return
    parent = os.getppid()
    if set_parent_death_signal() and parent == 1:  # re-parented to init: the parent died before we got here
        os._exit(1)


def kill_group(pid: int) -> None:
    """SIGKILL the process group led by ``pid`` (the child and everything it started); ignores a gone group."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, OSError):
        pass


def is_rank_zero() -> bool:
    """Whether this process is rank 0 of a launcher world (``RANK`` unset: a single process, so yes)."""
    try:
        return int(os.environ.get("RANK", "0")) == 0
    except ValueError:
        return True


def hold_output_lock(output_dir: str) -> Optional[TextIO]:
    """Hold ``<output_dir>/.dymoe_train.lock`` until this process ends (rank 0 only; creates the folder).

    Raises :class:`OutputDirError` when another live process holds it; this process may ask again."""
    if not is_rank_zero():
        return None
    path = os.path.realpath(os.path.join(output_dir, TRAIN_LOCK))
    for held in _HELD:
        if os.path.realpath(held.name) == path:
            return held
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        return None
    os.makedirs(output_dir, exist_ok=True)
    f = open(os.path.join(output_dir, TRAIN_LOCK), "a+", encoding="utf-8")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "?"
        f.close()
        raise OutputDirError(f"another training (pid {holder}) is working in --output_dir {output_dir}; wait for it "
                             "to finish or stop it, then rerun (an interrupted run resumes from its checkpoint-N)")
    f.seek(0)
    f.truncate(0)
    f.write(str(os.getpid()))
    f.flush()
    _HELD.append(f)
    return f
