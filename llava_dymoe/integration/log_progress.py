"""A progress bar for a training subprocess whose output goes to a log file.

The HF ``Trainer`` of upstream ``train()`` draws its own tqdm bar (``  37%|███  | 740/2000 [02:01<...``)
into the subprocess's output; when that output is a log file the user sees nothing for minutes.
``follow_log`` reads the tail of the log every ``interval`` seconds in a background thread and mirrors
the newest ``done/total`` count of that bar into a bar of this process.
"""
from __future__ import annotations

import contextlib
import os
import re
import threading
from typing import Iterator, Optional, Tuple

#: ``740/2000 [`` as tqdm writes it (the count right before the elapsed-time bracket).
_COUNT = re.compile(r"(\d+)/(\d+) \[")
TAIL_BYTES = 4096


def last_count(path: str, total: Optional[int] = None) -> Optional[Tuple[int, int]]:
    """The newest ``(done, total)`` tqdm count in the last ``TAIL_BYTES`` of ``path``; with ``total`` only
    counts of that total (other bars, e.g. a data-loading one, are skipped).  None if there is none yet."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - TAIL_BYTES))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    for m in reversed(list(_COUNT.finditer(text))):
        done, of = int(m.group(1)), int(m.group(2))
        if total is None or of == total:
            return done, of
    return None


@contextlib.contextmanager
def follow_log(path: str, total: int, desc: str, unit: str = "step", interval: float = 2.0,
               enabled: bool = True) -> Iterator[Optional[object]]:
    """Show a ``total``-long bar named ``desc`` that follows ``path``'s tqdm count while the block runs;
    yields the bar (None when not ``enabled``)."""
    if not enabled:
        yield None
        return
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit=unit)
    stop = threading.Event()

    def poll() -> None:
        while True:
            count = last_count(path, total)
            if count is not None and count[0] != bar.n:
                bar.n = min(count[0], total)
                bar.refresh()
            if stop.wait(interval):
                return

    thread = threading.Thread(target=poll, name="follow-log", daemon=True)
    thread.start()
    try:
        yield bar
    finally:
        stop.set()
        thread.join()
        count = last_count(path, total)
        if count is not None:
            bar.n = min(count[0], total)
        bar.close()
