"""Fit one shipped per-file hunk of the fork diff to a fork's own source (``autopatch check --fit-dir``).

The shipped diffs (``patches/llava-torch-<version>-dymoe/<file>.diff``, one per file) are made against
pristine llava-torch.  Their hunks only *add* a few lines at the top of one function (the builder's
``load_pretrained_model``, ``train()``, the sampler), but a unified diff's context holds the function's
``def`` line, and forks change it (``**kwargs``, ``num_task``, ``text_tower`` ...), so the hunk fails
although the edit itself fits.  :func:`fit_part` re-makes that hunk against the fork's file: the same
added lines, put before the first statement of the fork's function that is not its docstring, a
``global`` or an ``assert`` (where the shipped hunk puts them), re-indented to the fork's body.  It
refuses (``FitResult.diff is None``, with the reason) when the function is missing, when the added
lines use a parameter the fork's function lacks, or when the fork already has the edit.
"""
from __future__ import annotations

import ast
import difflib
import os
import re
from dataclasses import dataclass
from typing import List, Optional, Tuple


@dataclass
class Part:
    """One shipped per-file diff: the file it targets, the function it edits and the lines it adds."""

    diff: str
    relpath: str  # "llava/model/builder.py"
    function: str
    added: List[str]  # without the leading "+", with their newline


@dataclass
class FitResult:
    part: Part
    target: str  # the fork's file the hunk was fitted to
    diff: Optional[str]  # unified diff text, or None when it cannot be fitted
    why: str = ""
    relpath: str = ""  # the fitted file's path in the diff headers


def read_part(path: str) -> Part:
    with open(path, encoding="utf-8") as f:
        lines = f.readlines()
    relpath = next(ln.split()[1] for ln in lines if ln.startswith("--- "))[2:]
    first_add = next(i for i, ln in enumerate(lines) if ln.startswith("+") and not ln.startswith("+++"))
    function = ""
    for ln in lines[:first_add]:
        m = re.match(r"[ ]\s*def (\w+)\(", ln)
        if m:
            function = m.group(1)
    added = [ln[1:] for ln in lines[first_add:] if ln.startswith("+") and not ln.startswith("+++")]
    return Part(path, relpath, function, added)


def _insert_at(fn: ast.FunctionDef) -> Tuple[int, int]:
    """0-based line index to insert before, and the body's indentation."""
    body = list(fn.body)
    indent = body[0].col_offset
    skip = 0
    while skip < len(body) and (isinstance(body[skip], (ast.Global, ast.Nonlocal, ast.Assert)) or (
            skip == 0 and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant)
            and isinstance(body[0].value.value, str))):
        skip += 1
    if skip < len(body):
        return body[skip].lineno - 1, indent
    return body[-1].end_lineno, indent


def _reindent(lines: List[str], indent: int) -> List[str]:
    base = min((len(ln) - len(ln.lstrip(" ")) for ln in lines if ln.strip()), default=0)
    return [(" " * indent + ln[base:]) if ln.strip() else ln for ln in lines]


def fit_part(part: Part, target: str, relpath: Optional[str] = None) -> FitResult:
    """The shipped ``part`` re-made against the fork's file ``target`` (``relpath``: its path in the diff
    headers, relative to the directory holding ``llava/``; default the part's own)."""
    relpath = relpath or part.relpath
    try:
        with open(target, encoding="utf-8") as f:
            text = f.read()
        tree = ast.parse(text, filename=target)
    except (OSError, SyntaxError, ValueError) as e:
        return FitResult(part, target, None, f"{target} cannot be read or parsed ({type(e).__name__})")
    fn = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == part.function), None)
    if fn is None:
        return FitResult(part, target, None, f"no top-level def {part.function}() in {relpath}")
    old = text.splitlines(keepends=True)
    body_text = "".join(old[fn.lineno - 1:fn.end_lineno])
    if "llava_dymoe" in body_text:
        return FitResult(part, target, None, f"{part.function}() already calls llava_dymoe (applied before?)")
    params = {a.arg for a in fn.args.posonlyargs + fn.args.args + fn.args.kwonlyargs}
    used = {m for ln in part.added for m in re.findall(r"\b(\w+)=(\w+)\b", ln) if m[0] == m[1]}
    lacking = sorted(name for name, _ in used if name not in params)
    if lacking:
        return FitResult(part, target, None, f"{part.function}() of this fork has no parameter "
                                             f"{', '.join(lacking)} that the hook passes on; edit it by hand")
    at, indent = _insert_at(fn)
    new = old[:at] + _reindent(part.added, indent) + old[at:]
    diff = "".join(difflib.unified_diff(old, new, fromfile=f"a/{relpath}", tofile=f"b/{relpath}", n=3))
    return FitResult(part, target, diff, f"the same lines at the top of this fork's {part.function}()", relpath)


def write_fitted(result: FitResult, out_dir: str) -> str:
    """Write a fitted diff as ``out_dir/<relpath with - for />.diff``; an existing file is never replaced."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, (result.relpath or result.part.relpath).replace("/", "-") + ".diff")
    if os.path.exists(path):
        raise FileExistsError(f"{path} exists; choose an empty --fit-dir (nothing is overwritten)")
    with open(path, "w", encoding="utf-8") as f:
        f.write(result.diff or "")
    return path
