"""Nothing overwritten that we did not write: which ``--output_dir`` a training run may use.

Upstream LLaVA's ``train()`` writes into any ``--output_dir`` (``config.json``,
``non_lora_trainables.bin``, ``trainer_state.json``, ...) and, when ``checkpoint-*`` folders
exist, resumes from them.  HF's ``--overwrite_output_dir`` is not read by LLaVA's ``train()`` at
all (HF's example scripts use it to allow a non-empty folder).  Our training entry checks the
folder before any model loads:

* missing or empty (dot-files aside): a new run; the folder is claimed;
* a finished DyMoE task checkpoint (``dymoe_task.json``): refused, always (never modified);
* an unfinished run of ours (our claim file ``dymoe_run.json``, or a ``config.json`` with a
  ``"dymoe"`` block from an interrupted save): accepted, to rerun or resume it;
* anything else that is not empty: refused, naming the folder and a few of its entries, unless
  ``--overwrite_output_dir True`` says the user means it (then files of the same name are
  replaced, as upstream would, and the folder is claimed).

The claim file ``dymoe_run.json`` is written once the checks pass; it is not part of the
finished checkpoint's hashed files, so it never changes what ``verify`` checks.
"""
from __future__ import annotations

import json
import os
import time
from typing import List, Optional, Sequence

from ..errors import OutputDirError

#: Written into an output folder when a run of ours starts using it.
CLAIM = "dymoe_run.json"
#: ``checkpoint.MARKER`` and ``checkpoint.CONFIG`` (a test keeps them equal): repeated here so that
#: the pre-flight imports no torch and refuses within a second.
MARKER = "dymoe_task.json"
CONFIG = "config.json"


def is_finished(path: str) -> bool:
    return os.path.isfile(os.path.join(path, MARKER))


def read_marker(path: str, flag: str) -> dict:
    """The completion marker (``dymoe_task.json``) of a finished task checkpoint; a file that is not a JSON
    object with a task number is refused (:class:`~llava_dymoe.errors.ConfigError`), naming ``flag`` and it."""
    from ..errors import ConfigError

    marker = os.path.join(path, MARKER)
    try:
        with open(marker) as f:
            saved = json.load(f)
        if not isinstance(saved, dict) or not isinstance(saved.get("task_id"), int):
            raise ValueError("not a JSON object with a 'task_id' number")
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ConfigError(f"{flag} {path}: its {MARKER} is corrupt ({e}); the checkpoint cannot be trusted: copy "
                          "it again from where it was trained, or train that task again") from None
    return saved


def _has_dymoe_config(path: str) -> bool:
    try:
        with open(os.path.join(path, CONFIG)) as f:
            return isinstance(json.load(f).get("dymoe"), dict)
    except (OSError, ValueError, AttributeError):
        return False


def visible_entries(path: str) -> List[str]:
    return sorted(e for e in os.listdir(path) if not e.startswith("."))


def is_ours(path: str) -> bool:
    """Whether ``path`` is an (unfinished) output folder of a run of ours."""
    return os.path.isfile(os.path.join(path, CLAIM)) or is_finished(path) or _has_dymoe_config(path)


def check_output_dir(output_dir: str, *, overwrite: bool = False, prev_ckpt: Optional[str] = None) -> str:
    """``"new"``, ``"ours"`` or ``"overwrite"``; raises :class:`OutputDirError` when the run must not write there."""
    if prev_ckpt and os.path.exists(output_dir) and os.path.realpath(output_dir) == os.path.realpath(prev_ckpt):
        raise OutputDirError(f"--output_dir and --dymoe_prev_ckpt are the same folder ({output_dir}); each task "
                             "needs its own --output_dir and the previous task's is read-only")
    if not os.path.exists(output_dir):
        return "new"
    if not os.path.isdir(output_dir):
        raise OutputDirError(f"--output_dir {output_dir} is a file, not a folder; choose another --output_dir")
    if is_finished(output_dir):
        raise OutputDirError(f"--output_dir {output_dir} holds a finished DyMoE task checkpoint ({MARKER}), which is "
                             "never modified (not even with --overwrite_output_dir); choose a new --output_dir")
    entries = visible_entries(output_dir)
    if not entries:
        return "new"
    if is_ours(output_dir):
        return "ours"
    if overwrite:
        return "overwrite"
    shown = ", ".join(entries[:5]) + (f", ... ({len(entries)} entries)" if len(entries) > 5 else "")
    raise OutputDirError(f"--output_dir {output_dir} is not empty and was not written by llava_dymoe ({shown}); "
                         "training would overwrite files there. Choose a new or empty --output_dir, or pass "
                         "--overwrite_output_dir True if replacing its files is what you want")


def claim_output_dir(output_dir: str, argv: Sequence[str] = ()) -> str:
    """Create ``output_dir`` if needed and write (or refresh) the claim file; returns its path."""
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, CLAIM)
    record = {"llava_dymoe_run": True, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "pid": os.getpid(), "argv": list(argv)}
    tmp = os.path.join(output_dir, f".{CLAIM}.{os.getpid()}.tmp")  # a dot-file: another rank sees no entry
    with open(tmp, "w") as f:
        json.dump(record, f, indent=1)
    os.replace(tmp, path)
    return path
