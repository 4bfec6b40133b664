"""``python -m llava_dymoe.autopatch check [--llava-dir PATH] [--entry PATH] [--fit-dir DIR]``: can llava_dymoe
be merged into this llava, and how?

For the ``llava`` package in use (or a fork checkout given with ``--llava-dir``; a checkout whose LLaVA is another
package, CoIN's ``ETrain``, is scanned under its own module names, found by ``layout.discover``):

* the training entry the fork's shell scripts launch (``entry.find_entry``; ``--entry`` names it), the module
  whose ``train()`` it runs, the setup calls that ``train()`` makes beyond upstream's and its save call sites;
* one row per patch point (T0-T3 in that module, E1-E4; ``lines.POINTS``): found / changed / missing, file
  and line, what was seen; the line to use and why (``ScanReport.line_and_reason``);
* two separate results: the **run-time plugin** (``python -m llava_dymoe.train`` / ``.eval`` with the fork
  first on ``PYTHONPATH``) fits or not, with the problems; and the **fork diff**, per file
  (``patches/llava-torch-<version>-dymoe/<file>.diff``, each tried with ``patch --dry-run``; a file whose
  shipped hunk fails is fitted to the fork's own function, ``diff_fit``, and ``--fit-dir`` writes that).

Nothing in the fork is written.  Exit status: 0 when the run-time plugin fits, 1 when it does not; the
diff's per-file results are reported, not counted (a user applies the parts that fit).
"""
from __future__ import annotations

import collections
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from typing import List, Optional

from .builder_setup import SetupCall, builder_setup
from .diff_fit import FitResult, fit_part, read_part, write_fitted
from .entry import Entry, TrainProfile, find_entry, train_profile
from .layout import discover, upstream
from .lines import REQUIRED, ScanReport, UpstreamLine, UpstreamMismatch, llava_dir_in_use, scan, symbol_in


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


#: hunks whose change a fork may already carry, and the scan attribute that says so
_ALREADY_THERE = {"llava/train/llava_trainer.py": ("modality_sampler_single_ok", "this llava already falls back to "
                                                   "length grouping for single-modality data (LLaVA's later fix)")}


def _drop_hunks_already_there(report: ScanReport, diff: DiffResult) -> None:
    for path, (attr, why) in _ALREADY_THERE.items():
        if getattr(report, attr) and any(f.startswith(path + " ") for f in diff.failed):
            diff.failed = [f for f in diff.failed if not f.startswith(path + " ")]
            diff.fuzzy.append(f"{path}: not needed, {why}")
            diff.applies = not diff.failed


#: the run-time plugin's training entry, and its flag naming the module whose train() it runs
TRAIN_ENTRY = "python -m llava_dymoe.train"
DEFAULT_TRAIN_MODULE = "llava.train.train"


@dataclass
class FileVerdict:
    """The fork diff's result for one file: ``applies`` (as shipped), ``not needed``, ``fitted`` (the shipped
    hunk fails, the same lines fitted to this fork's function apply), ``fails`` or ``not tried``."""

    relpath: str
    part: str
    status: str
    detail: str = ""
    fitted: Optional[FitResult] = None


@dataclass
class RunFit:
    fits: bool
    problems: List[str]
    command: str


def dry_run_text(text: str, llava_dir: str) -> DiffResult:
    with tempfile.NamedTemporaryFile("w", suffix=".diff", delete=False) as f:
        f.write(text)
    try:
        return dry_run(f.name, llava_dir)
    finally:
        os.unlink(f.name)


def diff_by_file(report: ScanReport, line: UpstreamLine, entry: Entry) -> List[FileVerdict]:
    """Each shipped per-file diff of ``line`` tried on its own (and fitted to this fork where it fails)."""
    out = []
    checkout = os.path.dirname(report.llava_dir)
    roles = report.roles
    for part_path in line.parts:
        part = read_part(part_path)
        relpath, target = part.relpath, os.path.join(checkout, part.relpath)
        # the fork runs another module's train() (or keeps LLaVA outside `llava`, CoIN): the hook belongs there
        moved_to = {"llava/train/train.py": entry.module_file if entry.module != DEFAULT_TRAIN_MODULE else None,
                    "llava/model/builder.py": None if roles.is_upstream else roles.file(roles.builder),
                    "llava/train/llava_trainer.py": None if roles.is_upstream else roles.file(roles.trainer),
                    }.get(part.relpath)
        moved = moved_to is not None
        if moved:
            target = moved_to
            relpath = os.path.relpath(target, checkout).replace(os.sep, "/")
            attr, why = _ALREADY_THERE.get(part.relpath, ("", ""))
            if attr and getattr(report, attr):
                out.append(FileVerdict(relpath, part_path, "not needed", why))
                continue
        else:
            res = dry_run(part_path, report.llava_dir)
            if res.applies is None:
                out.append(FileVerdict(relpath, part_path, "not tried", res.note))
                continue
            if res.applies:
                out.append(FileVerdict(relpath, part_path, "applies", ", ".join(res.fuzzy)))
                continue
            _drop_hunks_already_there(report, res)
            if res.applies:
                out.append(FileVerdict(relpath, part_path, "not needed", ", ".join(res.fuzzy)))
                continue
        fit = fit_part(part, target, relpath)
        why = (f"the fork runs {entry.module}" if part.relpath == "llava/train/train.py" else
               f"the fork's {relpath}") if moved else "the shipped hunk fails"
        if fit.diff is None:
            out.append(FileVerdict(relpath, part_path, "fails", f"{why}; cannot fit it: {fit.why}"))
            continue
        res = dry_run_text(fit.diff, report.llava_dir)
        status = "fitted" if res.applies else "fails"
        out.append(FileVerdict(relpath, part_path, status, f"{why}; {fit.why}" + (
            "" if res.applies else f", which does not apply either ({', '.join(res.failed) or res.note})"), fit))
    return out


def run_fit(report: ScanReport, entry: Entry, profile: TrainProfile, setup: List[SetupCall] = ()) -> RunFit:
    """Whether ``python -m llava_dymoe.train`` / ``.eval`` can run this fork unmodified, and how."""
    problems = [f"{r.point.id} {r.status}: {r.point.symbol} ({r.detail})" for r in report.results
                if r.point.id in REQUIRED["train"] + REQUIRED["eval"] and r.status != "found"]
    problems += [f"train() saves through {call}(...) at line {n}, which the DyMoE patches do not see (no finished "
                 "task would be written; call safe_save_model_for_hf_trainer there)"
                 for call, n, seen in profile.saves if not seen]
    problems += [f"E1: the fork's load_pretrained_model sets the model up with {c.describe()}; the DyMoE loader "
                 "rebuilds a DyMoE checkpoint without that call, so the fork's eval of it would fail"
                 for c in setup if c.needed]
    module = "" if entry.module == DEFAULT_TRAIN_MODULE else f" --train_module {entry.module}"
    command = f"{TRAIN_ENTRY}{module} <the fork's training args> --dymoe_method dymoe --dymoe_task_id 1 ..."
    return RunFit(not problems, problems, command)


def _point_symbol(r, entry: Entry, report: ScanReport) -> str:
    return symbol_in(r.point, report.layout or upstream(entry.checkout, entry.module), report.eval_script)


def render(report: ScanReport, entry: Entry, profile: TrainProfile, fit: RunFit,
           files: List[FileVerdict], written: List[str], setup: List[SetupCall] = ()) -> str:
    line, reason = report.line_and_reason
    rows = [("point", "status", "symbol", "found at", "what was seen")]
    for r in report.results:
        where = os.path.relpath(r.path, os.path.dirname(report.llava_dir)) + (f":{r.line}" if r.line else "")
        rows.append((r.point.id, r.status, _point_symbol(r, entry, report), where, r.detail))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    out = [f"llava package: {report.llava_dir}" + (f" (LLaVA outside a `llava` package: {report.layout.describe()})"
                                                   if report.layout else ""),
           f"nearest supported line: {line.describe()} (setup: {line.make_setup}, venv {line.venv}), because {reason}"]
    rel = os.path.relpath(entry.file, entry.checkout) if entry.file else "(none)"
    out.append(f"training entry: {rel} -> train() of {entry.module} ({entry.how})")
    if len(entry.candidates) > 1:
        out.append("  other entries the scripts launch: " + ", ".join(f"{m} ({n})" for m, n in entry.candidates[1:]))
    if profile.extra_calls:
        out.append(f"setup calls that {DEFAULT_TRAIN_MODULE}.train() does not make (they run only through "
                   f"{entry.module}): " + ", ".join(f"{c} (line {n})" for c, n in profile.extra_calls))
    if profile.saves:
        out.append("save call sites of train(): " + ", ".join(
            f"{c} (line {n}: {seen or 'NOT seen by the DyMoE patches'})" for c, n, seen in profile.saves))
    if setup:
        out.append("builder setup calls that the DyMoE eval loader does not make: "
                   + ", ".join(c.describe() for c in setup))
    out.append("")
    for i, row in enumerate(rows):
        out.append("  ".join(c.ljust(w) for c, w in zip(row[:4], widths)) + "  " + row[4])
        if i == 0:
            out.append("  ".join("-" * w for w in widths) + "  " + "-" * 13)
    out.append("")
    for r in report.results:
        if r.status != "found":
            out.append(f"{r.point.id}: llava_dymoe expects {r.point.expects}")
    out.append(f"run-time plugin: {'fits' if fit.fits else 'does NOT fit'}"
               + ("" if fit.fits else ": " + "; ".join(fit.problems)))
    if fit.fits:
        out.append(f"  run: {fit.command}")
    out.append(f"fork diff, per file (patches/{os.path.basename(os.path.dirname(files[0].part)) if files else '?'}/):")
    for v in files:
        out.append(f"  {v.relpath}: {v.status}" + (f" ({v.detail})" if v.detail else ""))
    out += [f"  wrote {p}" for p in written]
    if any(v.status == "fitted" for v in files) and not written:
        out.append("  --fit-dir DIR writes the fitted diffs (one per file; apply with patch -p1 in the fork's "
                   "checkout, the directory holding its package)")
    counts = collections.Counter(v.status for v in files)
    out.append(f"verdict: run-time plugin {'fits' if fit.fits else 'does not fit'}; fork diff: "
               + ", ".join(f"{n} {s}" for s, n in counts.items()) + f" of {len(files)} file(s)")
    return "\n".join(out)


def checkout_and_package(llava_dir: Optional[str]):
    """``(checkout, llava package dir or None)``: ``llava_dir`` is a ``llava`` package, a checkout holding one, or a
    checkout whose LLaVA lives in another package (CoIN: ``ETrain``; then the package dir is None)."""
    if llava_dir is None:
        root = llava_dir_in_use()
        return os.path.dirname(root), root
    real = os.path.realpath(llava_dir)
    if not os.path.isdir(real):
        raise UpstreamMismatch(f"--llava-dir {llava_dir}: no such folder (give a fork checkout or its llava/ package)")
    if os.path.isfile(os.path.join(real, "__init__.py")):
        return os.path.dirname(real), real
    if os.path.isdir(os.path.join(real, "llava")):
        return real, os.path.join(real, "llava")
    return real, None


def check(llava_dir: Optional[str] = None, entry: Optional[str] = None, fit_dir: Optional[str] = None,
          smoke_dir: Optional[str] = None, run_smoke: bool = False) -> int:
    """Print the report; exit status 0 when the run-time plugin fits this llava, 1 when it does not (the
    fork diff's per-file results are reported, not counted: a user applies the parts that fit).  With
    ``run_smoke`` the status is the smoke run's instead (``smoke.py``): 0 only when the plugin trains two
    tasks and evaluates."""
    checkout, root = checkout_and_package(llava_dir)
    found = find_entry(checkout, entry)
    top = found.module.split(".")[0]
    if top != "llava" and os.path.isdir(os.path.join(checkout, top)):  # LLaVA in another package (CoIN's ETrain)
        report = scan(layout=discover(checkout, train=found.module))
    elif root is None:
        raise UpstreamMismatch(f"{checkout} holds no llava/ package and none of its shell scripts launches a training "
                               "module of another package; name the entry with --entry PATH (e.g. "
                               "ETrain/Train/LLaVA/train_mem.py)")
    else:
        report = scan(root, train_file=None if found.module == DEFAULT_TRAIN_MODULE else found.module_file)
    profile = train_profile(report.train_file or os.path.join(root, "train", "train.py"))
    setup = builder_setup(report.roles.file(report.roles.builder))
    fit = run_fit(report, found, profile, setup)
    files = diff_by_file(report, report.nearest_line, found)
    written = [write_fitted(v.fitted, fit_dir) for v in files if fit_dir and v.status == "fitted"]
    print(render(report, found, profile, fit, files, written, setup), flush=True)
    if run_smoke:
        from .smoke import smoke

        e3 = report.result("E3")
        eval_module = report.eval_script or "llava.eval.model_vqa_loader"
        verdict = smoke(checkout, found.module, smoke_dir, eval_module=eval_module,
                        eval_file=e3.path if report.eval_script else None,
                        setup_calls=[call for call, _ in profile.extra_calls])
        print(verdict.line)
        return 0 if verdict.passed else 1
    return 0 if fit.fits else 1
