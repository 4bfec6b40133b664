"""``python -m llava_dymoe.autopatch check [--llava-dir PATH]``: can llava_dymoe be merged into this llava?

For the ``llava`` package in use (or a fork checkout given with ``--llava-dir``), prints one row per
patch point (T0-T3, E1-E4; ``lines.POINTS``): found / changed / missing, the file and line it was
found at, and what was seen.  Then the nearest supported line's unified diff
(``patches/llava-torch-<version>-dymoe.diff``) is tried with ``patch --dry-run`` on the package's
parent directory, nothing is written, and every hunk that would fail is named (file, hunk number,
line).  Exit status: 0 when every point is found and the diff applies, 1 otherwise.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import List, Optional

from .lines import ScanReport, UpstreamLine, scan


@dataclass
class DiffResult:
    diff: str
    applies: Optional[bool]  # None: could not be tried (no GNU patch)
    fuzzy: List[str] = field(default_factory=list)
    failed: List[str] = field(default_factory=list)
    note: str = ""


def dry_run(diff: str, llava_dir: str) -> DiffResult:
    """``patch -p1 --dry-run`` of ``diff`` in the directory holding ``llava_dir`` (writes nothing)."""
    if shutil.which("patch") is None:
        return DiffResult(diff, None, note="GNU patch is not installed (apt-get install patch)")
    if not os.path.exists(diff):
        return DiffResult(diff, None, note=f"{diff} does not exist")
    with open(diff) as f:
        proc = subprocess.run(["patch", "-p1", "--dry-run", "--batch", "--forward"], stdin=f,
                              cwd=os.path.dirname(llava_dir), capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    current, failed, fuzzy = "?", [], []
    for line in out.splitlines():
        m = re.match(r"checking file (\S+)|patching file (\S+)", line)
        if m:
            current = m.group(1) or m.group(2)
        m = re.match(r"Hunk #(\d+) FAILED at (\d+)", line)
        if m:
            failed.append(f"{current} hunk #{m.group(1)} (at line {m.group(2)})")
        m = re.match(r"Hunk #(\d+) succeeded at (\d+)(?: with fuzz (\d+))?", line)
        if m and m.group(3):
            fuzzy.append(f"{current} hunk #{m.group(1)} (fuzz {m.group(3)} at line {m.group(2)})")
        if "Reversed (or previously applied) patch detected" in line:
            failed.append(f"{current}: already applied (reversed patch detected)")
        if "can't find file to patch" in line:
            failed.append(f"{current}: file not found")
    ok = proc.returncode == 0 and not failed
    return DiffResult(diff, ok, fuzzy, failed, "" if ok or failed else out.strip().splitlines()[-1:][0] if out else "")


def render(report: ScanReport, line: UpstreamLine, diff: DiffResult) -> str:
    rows = [("point", "status", "symbol", "found at", "what was seen")]
    for r in report.results:
        where = os.path.relpath(r.path, os.path.dirname(report.llava_dir)) + (f":{r.line}" if r.line else "")
        rows.append((r.point.id, r.status, r.point.symbol, where, r.detail))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    out = [f"llava package: {report.llava_dir}",
           f"nearest supported line: {line.describe()} (setup: {line.make_setup}, venv {line.venv})", ""]
    for i, row in enumerate(rows):
        out.append("  ".join(c.ljust(w) for c, w in zip(row[:4], widths)) + "  " + row[4])
        if i == 0:
            out.append("  ".join("-" * w for w in widths) + "  " + "-" * 13)
    out.append("")
    name = os.path.basename(diff.diff)
    if diff.applies is None:
        out.append(f"fork diff {name}: not tried: {diff.note}")
    elif diff.applies:
        out.append(f"fork diff {name}: applies (dry run)" + (f"; notes: {', '.join(diff.fuzzy)}"
                                                           if diff.fuzzy else ""))
    else:
        out.append(f"fork diff {name}: does NOT apply (dry run); failing hunks: "
                   + (", ".join(diff.failed) or diff.note) + (f"; notes: {', '.join(diff.fuzzy)}" if diff.fuzzy else ""))
    for r in report.results:
        if r.status != "found":
            out.append(f"{r.point.id}: llava_dymoe expects {r.point.expects}")
    return "\n".join(out)


#: hunks whose change a fork may already carry, and the scan attribute that says so
_ALREADY_THERE = {"llava/train/llava_trainer.py": ("modality_sampler_single_ok", "this llava already falls back to "
                                                   "length grouping for single-modality data (LLaVA's later fix)")}


def _drop_hunks_already_there(report: ScanReport, diff: DiffResult) -> None:
    for path, (attr, why) in _ALREADY_THERE.items():
        if getattr(report, attr) and any(f.startswith(path + " ") for f in diff.failed):
            diff.failed = [f for f in diff.failed if not f.startswith(path + " ")]
            diff.fuzzy.append(f"{path}: not needed, {why}")
            diff.applies = not diff.failed


def check(llava_dir: Optional[str] = None) -> int:
    report = scan(llava_dir)
    line = report.nearest_line
    diff = dry_run(line.diff, report.llava_dir)
    if diff.applies is False:
        _drop_hunks_already_there(report, diff)
    print(render(report, line, diff))
    ok = all(r.status == "found" for r in report.results) and diff.applies is not False
    return 0 if ok else 1
