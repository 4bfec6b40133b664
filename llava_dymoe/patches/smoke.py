"""``autopatch check --smoke``: the verdict that cannot be wrong, because it is a run (issue 28 item 3).

In subprocesses of this interpreter, with the fork's checkout first on ``PYTHONPATH``: the tiny model
(``llava_dymoe.tiny``) and the smoke data; two DyMoE tasks of two steps each through the fork's training
entry module (``python -m llava_dymoe.train --train_module M``); task 1's banks compared with the copies
in task 2's checkpoint (bit-identical, or the run is not continual); one question through
``python -m llava_dymoe.eval llava.eval.model_vqa_loader`` (for a fork whose LLaVA is another package, CoIN's
``ETrain``, through its own eval script in E3's role, with the question as a JSON list when it reads one).  When a step fails, the fork's own
``train()`` runs the same task without the plugin (LoRA, as its scripts do), and :func:`classify`
names the failure: ``ours`` (the fork trains without the plugin), ``fork`` (it fails either way),
``missing dependency`` (an import of a package that is not installed) or ``environment`` (the fork's
code needs the other line).  One summary line; exit status 0 only when the plugin trains and evaluates.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import List, Optional, Sequence

#: lines of a log that say a package is missing (ours, from patches/import_failure.py, and Python's own)
_MISSING = (re.compile(r"package '([\w.-]+)' is not installed"),
            re.compile(r"defines '\w+' only when ([\w.-]+) is installed"),
            re.compile(r"ModuleNotFoundError: No module named '([\w.]+)'"))
_ENVIRONMENT = re.compile(r"this llava needs (the [\d.]+ line)")


@dataclass
class Step:
    name: str
    ok: bool
    log: str  # path of the log file
    text: str = ""  # the log's text
    note: str = ""


@dataclass
class Verdict:
    passed: bool
    kind: str  # "pass" | "ours" | "fork" | "missing dependency" | "environment"
    line: str


def _last_error(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if re.match(r"(error: |[\w.]*(Error|Exception)\b)", ln):
            return ln[:300]
    return lines[-1][:300] if lines else "(no output)"


def missing_package(text: str) -> Optional[str]:
    for pattern in _MISSING:
        m = pattern.search(text)
        if m:
            return m.group(1)
    return None


def classify(steps: List[Step], baseline: Optional[Step], setup_calls: Sequence[str] = ()) -> Verdict:
    """The one-line verdict from the plugin's steps (in order) and the run without the plugin (or None).
    ``setup_calls``: the calls the fork's ``train()`` makes beyond upstream's (``entry.train_profile``); when the
    fork fails without the plugin too, they are named, since such a fork may need flags or model sizes of its own
    that the smoke does not give (the fork matrix of issue 28: DISCO and HiDe need ``--text_tower`` and a
    32-layer model with 768-d CLIP features)."""
    failed = next((s for s in steps if not s.ok), None)
    if failed is None:
        return Verdict(True, "pass", "smoke: PASS: " + "; ".join(s.note or s.name for s in steps))
    head = f"smoke: FAIL at {failed.name} ({_last_error(failed.text)}; log {failed.log})"
    env = _ENVIRONMENT.search(failed.text)
    if env:
        return Verdict(False, "environment", f"{head}: environment: the fork's code needs {env.group(1)}; run the "
                                             "smoke with that line's python")
    package = missing_package(failed.text) or (missing_package(baseline.text) if baseline and not baseline.ok
                                               else None)
    if package:
        return Verdict(False, "missing dependency", f"{head}: missing dependency: the fork imports {package!r}, "
                                                    f"which is not installed (pip install it, or make the import "
                                                    "optional in the fork)")
    if baseline is None:
        return Verdict(False, "ours", f"{head}: not compared with a run without the plugin")
    if baseline.ok:
        return Verdict(False, "ours", f"{head}: ours: the fork trains without the plugin ({baseline.log}); "
                                      "report it to llava-dymoe with both logs")
    hint = (f"; its train() also makes setup calls of its own ({', '.join(setup_calls[:4])}"
            f"{', ...' if len(setup_calls) > 4 else ''}): if its scripts pass flags the smoke's generic LLaVA "
            "arguments lack, or it needs another model size, the smoke cannot judge it; run it with them by hand"
            if setup_calls else "")
    return Verdict(False, "fork", f"{head}: the fork's own failure: without the plugin it fails too "
                                  f"({_last_error(baseline.text)}; log {baseline.log}){hint}")


def _run(name: str, cmd: List[str], env: dict, log: str, timeout: float) -> Step:
    with open(log, "w") as f:
        try:
            proc = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=timeout, text=True)
            ok = proc.returncode == 0
        except subprocess.TimeoutExpired:
            f.write(f"\nerror: timed out after {timeout:.0f} s\n")
            ok = False
    with open(log, encoding="utf-8", errors="replace") as f:
        return Step(name, ok, log, f.read())


def _banks_kept(t1: str, t2: str) -> Optional[str]:
    """None when every tensor of task 1's bank file is bit-identical in task 2's, else what differs."""
    from safetensors.torch import load_file

    from ..integration.checkpoint import EXPERTS

    a, b = load_file(os.path.join(t1, EXPERTS)), load_file(os.path.join(t2, EXPERTS))
    bad = [k for k in a if k not in b or not bool((a[k] == b[k]).all())]
    return f"{len(bad)} of task 1's {len(a)} bank tensors differ in task 2" if bad or not a else None


def reads_json_list(module_file: str) -> bool:
    """Whether an eval script reads its --question-file as one JSON list (CoIN's scripts: ``json.load(f)``)
    rather than JSON lines (upstream's ``json.loads(q) for q in open(...)``)."""
    try:
        with open(module_file, encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return False
    return "json.load(" in text and "json.loads(q)" not in text


def _one_question(src: str, dst: str, as_list: bool) -> None:
    with open(src) as f:
        first = json.loads(f.readline())
    with open(dst, "w") as f:
        f.write(json.dumps([first]) if as_list else json.dumps(first) + "\n")


def smoke(checkout: str, train_module: str, work: Optional[str] = None, timeout: float = 900,
          eval_module: str = "llava.eval.model_vqa_loader", eval_file: Optional[str] = None,
          setup_calls: Sequence[str] = ()) -> Verdict:
    from ..integration.llava_args import dymoe_flags, llava_train_argv
    from ..smoke_data import write_smoke_dataset
    from ..tiny import build_tiny_llava

    work = work or tempfile.mkdtemp(prefix="llava_dymoe_smoke_")
    tiny = build_tiny_llava(os.path.join(work, "tiny"), seed=0)
    data = write_smoke_dataset(os.path.join(work, "data"), n_train=8, n_test=2, seed=0)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (checkout, os.environ.get("PYTHONPATH")) if p),
               PYTHONUNBUFFERED="1")
    env.setdefault("OMP_NUM_THREADS", "2")
    steps: List[Step] = []

    def train_argv(out: str, lora: bool, extra: List[str]) -> List[str]:
        return llava_train_argv(tiny.llm, tiny.clip, data.train_json, data.image_folder, out, lora=lora,
                                max_steps=2, extra=extra)

    t1, t2 = os.path.join(work, "1_a_llava_dymoe"), os.path.join(work, "2_b_llava_dymoe")
    for task, out, prev in ((1, t1, None), (2, t2, t1)):
        cmd = [sys.executable, "-m", "llava_dymoe.train", "--train_module", train_module,
               *train_argv(out, False, dymoe_flags("dymoe", task, prev, experts_per_task=2))]
        step = _run(f"task {task} with the plugin", cmd, env, out + ".log", timeout)
        if step.ok and not os.path.exists(os.path.join(out, "dymoe_task.json")):
            step.ok = False
            step.text += f"\nerror: the run ended but {out} holds no finished DyMoE task (dymoe_task.json): a save " \
                         "call site the DyMoE patches do not see\n"
        steps.append(step)
        if not step.ok:
            break
    if all(s.ok for s in steps):
        differs = _banks_kept(t1, t2)
        steps.append(Step("the bank comparison", differs is None, t2, differs or "",
                          "task 1's banks bit-identical in task 2"))
    if all(s.ok for s in steps):
        question, answers = os.path.join(work, "q.jsonl"), os.path.join(work, "answers", "a.jsonl")
        _one_question(data.questions, question, bool(eval_file) and reads_json_list(eval_file))
        cmd = [sys.executable, "-m", "llava_dymoe.eval", eval_module, "--model-path", t2,
               "--model-base", tiny.llm, "--question-file", question, "--image-folder", data.image_folder,
               "--answers-file", answers, "--temperature", "0", "--conv-mode", "vicuna_v1"]
        step = _run("the eval", cmd, env, os.path.join(work, "eval.log"), timeout)
        n = sum(1 for _ in open(answers)) if step.ok and os.path.exists(answers) else 0
        step.ok = step.ok and n == 1
        step.note = f"1 question answered by {os.path.basename(t2)} through {eval_module}" if step.ok else ""
        steps.append(step)
    for s in steps[:2]:
        if s.ok:
            s.note = f"{s.name} through {train_module}"
    baseline = None
    if not all(s.ok for s in steps):
        code = f"import importlib; importlib.import_module({train_module!r}).train()"
        out = os.path.join(work, "without_plugin_llava_lora")
        baseline = _run("task 1 without the plugin", [sys.executable, "-c", code, *train_argv(out, True, [])], env,
                        out + ".log", timeout)
    verdict = classify(steps, baseline, setup_calls)
    with open(os.path.join(work, "smoke.json"), "w") as f:
        json.dump({"passed": verdict.passed, "kind": verdict.kind, "line": verdict.line}, f, indent=1)
    return verdict
