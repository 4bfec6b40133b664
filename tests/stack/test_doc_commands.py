"""Every command shown in README.md and docs/*.md parses.

A command is a line of a fenced shell block (```bash, ```sh, ```console or unlabelled) or an inline
code span that starts with ``python -m llava_dymoe...``, ``llava-dymoe ...`` or ``make ...`` (after
any ``NAME=value`` environment assignments; ``&&``, ``;`` and ``|`` separate commands, ``\\`` continues
a line, ``#`` starts a comment). For a python command, ``python -m MODULE WORDS... --help`` must exit 0,
where WORDS are the leading bare words (sub-command names such as ``run`` or an upstream eval module),
and every ``--flag`` shown must appear in that help text (``llava_dymoe.train --help`` lists the flags it
takes off before LLaVA's parser, e.g. ``--skip_data_check``, above LLaVA's own). ``llava-dymoe X ...`` is
checked as ``python -m llava_dymoe.console X ...``.
For ``make X`` the target X must exist in the Makefile. Placeholders are not checked: ``$VAR`` (unless
the same block assigns it), ``<...>``, ``...``, ``--dymoe_<field>``. Other commands (``deepspeed``,
``bash scripts/...``) are not checked. Every ``--dymoe_<name>`` written anywhere in the docs must also be
a flag of ``python -m llava_dymoe.train --help``.

Each distinct help text is computed once (one subprocess per distinct command, two at a time).
"""
from __future__ import annotations

import glob
import importlib.util
import os
import re
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHELL_LANGS = {"", "bash", "sh", "shell", "console"}
PREFIXES = ("python -m llava_dymoe", "llava-dymoe", "make")
CONSOLE_MODULE = "llava_dymoe.console"
_ASSIGN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")
_BARE_WORD = re.compile(r"^[a-z][a-z0-9_.-]*$")  # a sub-command or module name, not a path or placeholder
_DYMOE_FLAG = re.compile(r"--dymoe_[a-z0-9_]*[a-z0-9]")


@dataclass(frozen=True)
class DocCommand:
    where: str          # "README.md:12"
    argv: Tuple[str, ...]


# ---------------------------------------------------------------- extraction

def _logical_lines(lines: Sequence[Tuple[int, str]]) -> Iterable[Tuple[int, str]]:
    """Join ``\\`` continuations and lines inside an open quote; yield (first line number, text)."""
    buf, start = "", None
    for number, line in lines:
        if start is None:
            start = number
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        buf += line
        try:
            shlex.split(buf, comments=True)
        except ValueError:  # an open quote: the assignment or argument goes on
            buf += "\n"
            continue
        yield start, buf
        buf, start = "", None
    if buf.strip():
        yield start, buf


def _split_commands(text: str, variables: Dict[str, str]) -> List[List[str]]:
    """Tokens of each command in one logical line, $VARs of the block expanded, assignments recorded."""
    try:
        lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        tokens = list(lexer)
    except ValueError:
        return []
    commands, current = [], []
    for token in tokens:
        if token and set(token) <= set(";&|"):
            commands.append(current)
            current = []
        else:
            current.append(token)
    commands.append(current)
    out = []
    for cmd in commands:
        if len(cmd) >= 1 and all(_ASSIGN.match(t) for t in cmd):  # NAME=value lines: block variables
            for t in cmd:
                name, value = t.split("=", 1)
                variables[name] = value
            continue
        expanded: List[str] = []
        for t in cmd:
            m = _VAR.fullmatch(t)
            if m and (m.group(1) or m.group(2)) in variables:  # "$COMMON": the words it holds
                expanded.extend(variables[m.group(1) or m.group(2)].split())
            else:  # "$OUT/matrix.csv": substituted where the block assigned it
                expanded.append(_VAR.sub(lambda v: variables.get(v.group(1) or v.group(2), v.group(0)), t))
        while expanded and _ASSIGN.match(expanded[0]):  # env assignments before the command
            expanded.pop(0)
        if expanded:
            out.append(expanded)
    return out


def _is_checked(argv: Sequence[str]) -> bool:
    text = " ".join(argv)
    if len(argv) > 1 and argv[0] == "llava-dymoe" and argv[1] == "requires":
        return False  # pip's "llava-dymoe requires transformers==..." quoted in a doc, not a command
    return any(text == p or text.startswith(p + " ") or text.startswith(p + ".") for p in PREFIXES)


def extract_commands(text: str, source: str) -> List[DocCommand]:
    """The checked commands of one Markdown document, in order."""
    found: List[DocCommand] = []
    lines = text.splitlines()
    i, prose = 0, []
    while i < len(lines):
        fence = re.match(r"^\s*(```+|~~~+)\s*([A-Za-z0-9_-]*)", lines[i])
        if not fence:
            prose.append((i + 1, lines[i]))
            i += 1
            continue
        marker, lang = fence.group(1), fence.group(2).lower()
        body, i = [], i + 1
        while i < len(lines) and not lines[i].strip().startswith(marker):
            body.append((i + 1, lines[i]))
            i += 1
        i += 1
        if lang not in SHELL_LANGS:
            continue
        variables: Dict[str, str] = {}
        for number, logical in _logical_lines([(n, re.sub(r"^\s*\$ ", "", l)) for n, l in body]):
            for argv in _split_commands(logical, variables):
                if _is_checked(argv):
                    found.append(DocCommand(f"{source}:{number}", tuple(argv)))
    # inline code spans of the prose (they may run over a line break)
    joined = "\n".join(line for _, line in prose)
    offsets = [0]
    for _, line in prose:
        offsets.append(offsets[-1] + len(line) + 1)
    for m in re.finditer(r"(?<!`)`([^`]+)`(?!`)", joined):
        span = " ".join(m.group(1).split())
        number = prose[max(k for k in range(len(prose)) if offsets[k] <= m.start())][0]
        for argv in _split_commands(span, {}):
            if _is_checked(argv):
                found.append(DocCommand(f"{source}:{number}", tuple(argv)))
    return found


# ---------------------------------------------------------------- checking

def help_key(argv: Sequence[str]) -> Optional[Tuple[str, ...]]:
    """``(module, bare words...)`` whose ``--help`` lists the command's flags; None for make commands."""
    if argv[0] == "llava-dymoe":
        module, rest = CONSOLE_MODULE, list(argv[1:])
    elif argv[0] == "python" and len(argv) >= 3 and argv[1] == "-m":
        module, rest = argv[2], list(argv[3:])
    else:
        return None
    words = []
    for token in rest:
        if not _BARE_WORD.match(token):
            break
        words.append(token)
    return (module, *words)


def run_help(key: Tuple[str, ...]) -> Tuple[int, str]:
    """Exit status and text of ``python -m MODULE WORDS... --help``."""
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
               CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, "-m", *key, "--help"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)
    return proc.returncode, proc.stdout + proc.stderr


def makefile_targets(path: str = os.path.join(REPO, "Makefile")) -> set:
    targets = set()
    with open(path, encoding="utf-8") as f:
        for line in f:
            m = re.match(r"^([A-Za-z0-9_.%/$() -]+?)\s*:(?![=:])", line)
            if m and not line.startswith("\t"):
                targets.update(m.group(1).split())
    return targets


def _shown_flags(argv: Sequence[str]) -> List[str]:
    flags = []
    for token in argv:
        token = token.strip("[](){},")
        if not token.startswith("--") or token == "--":
            continue
        flag = token.split("=", 1)[0]
        if "<" in flag or "..." in flag or "*" in flag or flag.endswith("_"):
            continue  # a placeholder such as --dymoe_<field> or --dymoe_...
        flags.append(flag)
    return flags


def _has_flag(flag: str, text: str) -> bool:
    return re.search(re.escape(flag) + r"(?![A-Za-z0-9_-])", text) is not None


def check_commands(commands: Sequence[DocCommand], helps: Callable[[Tuple[str, ...]], Tuple[int, str]],
                   targets: set) -> List[str]:
    """One line per problem: a make target that does not exist, a failing --help, a flag it lacks."""
    problems = []
    for cmd in commands:
        if cmd.argv[0] == "make":
            for word in cmd.argv[1:]:
                if word.startswith("-") or _ASSIGN.match(word):
                    continue
                if word not in targets:
                    problems.append(f"{cmd.where}: make target {word!r} is not in the Makefile")
            continue
        key = help_key(cmd.argv)
        if key is None:
            continue
        rc, text = helps(key)
        shown = " ".join(key)
        if rc != 0:
            problems.append(f"{cmd.where}: `python -m {shown} --help` exits {rc}: {text.strip()[-300:]}")
            continue
        for flag in _shown_flags(cmd.argv):
            if not _has_flag(flag, text):
                problems.append(f"{cmd.where}: {flag} is not an option of `python -m {shown}` (see its --help)")
    return problems


class HelpCache:
    """``--help`` texts by key, computed once, two subprocesses at a time."""

    def __init__(self):
        self.texts: Dict[Tuple[str, ...], Tuple[int, str]] = {}

    def prefetch(self, keys: Iterable[Tuple[str, ...]]) -> None:
        todo = sorted(set(keys) - set(self.texts))
        with ThreadPoolExecutor(max_workers=2) as pool:
            for key, result in zip(todo, pool.map(run_help, todo)):
                self.texts[key] = result

    def __call__(self, key: Tuple[str, ...]) -> Tuple[int, str]:
        if key not in self.texts:
            self.texts[key] = run_help(key)
        return self.texts[key]


def doc_paths() -> List[str]:
    return [os.path.join(REPO, "README.md")] + sorted(glob.glob(os.path.join(REPO, "docs", "*.md")))


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def all_commands() -> List[DocCommand]:
    out = []
    for path in doc_paths():
        out.extend(extract_commands(_read(path), os.path.relpath(path, REPO)))
    return out


def _console_available() -> bool:
    try:
        return importlib.util.find_spec(CONSOLE_MODULE) is not None
    except ImportError:
        return False


@pytest.fixture(scope="module")
def helps():
    cache = HelpCache()
    keys = [help_key(c.argv) for c in all_commands()] + [("llava_dymoe.train",)]
    if not _console_available():
        keys = [k for k in keys if k and k[0] != CONSOLE_MODULE]
    cache.prefetch(k for k in keys if k)
    return cache


# ---------------------------------------------------------------- the checks

def test_readme_shows_the_ci_test_commands():
    """CI (.ci/run) runs `make test` and `make test-llava11`: the README shows both, and `make demo`."""
    readme = _read(os.path.join(REPO, "README.md"))
    shown = {c.argv for c in extract_commands(readme, "README.md")}
    for target in ("test", "test-llava11", "demo"):
        assert ("make", target) in shown, f"README.md does not show `make {target}`"


def test_python_commands_in_docs_parse(helps):
    commands = [c for c in all_commands() if c.argv[0] != "llava-dymoe"]
    assert len(commands) >= 20, "the extraction found almost no commands: is the parser broken?"
    problems = check_commands(commands, helps, makefile_targets())
    assert not problems, "commands in the docs that do not parse:\n" + "\n".join(problems)


def test_console_commands_in_docs_parse(helps):
    commands = [c for c in all_commands() if c.argv[0] == "llava-dymoe"]
    if not commands:
        pytest.skip("no `llava-dymoe ...` command in the docs")
    if not _console_available():
        pytest.skip(f"{CONSOLE_MODULE} is not importable in this checkout: `llava-dymoe` commands unchecked")
    problems = check_commands(commands, helps, makefile_targets())
    assert not problems, "llava-dymoe commands in the docs that do not parse:\n" + "\n".join(problems)


def test_every_dymoe_flag_in_docs_is_a_training_flag(helps):
    rc, text = helps(("llava_dymoe.train",))
    assert rc == 0, text[-500:]
    problems = []
    for path in doc_paths():
        for number, line in enumerate(_read(path).splitlines(), 1):
            for flag in _DYMOE_FLAG.findall(line):
                if line[line.index(flag) + len(flag):][:1] == "<":
                    continue  # --dymoe_<field>
                if not _has_flag(flag, text):
                    problems.append(f"{os.path.relpath(path, REPO)}:{number}: {flag}")
    assert not problems, "--dymoe_* flags that `python -m llava_dymoe.train --help` lacks:\n" + "\n".join(problems)


# ---------------------------------------------------------------- the checker can fail

FAKE_DOC = """\
# Fake

Score with `python -m llava_dymoe.cli score --answers a.jsonl --no-such-flag 3`.

```bash
OUT=runs/x
# a comment: python -m llava_dymoe.cli nonsense --whatever
python -m llava_dymoe.cli metrics $OUT/matrix.csv \\
    --bogus-option && make no-such-target
DYMOE_EVAL_MAX_TASKS=1 python -m llava_dymoe.cli frobnicate --x
make test PYTEST_ARGS="-k foo"; python -m llava_dymoe.cli run --suite s.yaml --method dymoe
deepspeed --module llava_dymoe.train --not-checked
```

```python
python -m llava_dymoe.cli score --in-a-python-block
```
"""


def test_checker_reports_bad_flags_targets_and_commands(helps):
    commands = extract_commands(FAKE_DOC, "fake.md")
    assert [c.argv[:4] for c in commands] == [
        ("python", "-m", "llava_dymoe.cli", "metrics"),
        ("make", "no-such-target"),
        ("python", "-m", "llava_dymoe.cli", "frobnicate"),
        ("make", "test", "PYTEST_ARGS=-k foo"),
        ("python", "-m", "llava_dymoe.cli", "run"),
        ("python", "-m", "llava_dymoe.cli", "score"),
    ]
    assert commands[0].where == "fake.md:8" and commands[0].argv[4] == "runs/x/matrix.csv"
    problems = check_commands(commands, helps, makefile_targets())
    assert len(problems) == 4, problems
    assert "fake.md:8: --bogus-option is not an option of `python -m llava_dymoe.cli metrics`" in problems[0]
    assert "make target 'no-such-target'" in problems[1]
    assert "`python -m llava_dymoe.cli frobnicate --help` exits 2" in problems[2]
    assert problems[3].startswith("fake.md:3: --no-such-flag is not an option of `python -m llava_dymoe.cli score`")
