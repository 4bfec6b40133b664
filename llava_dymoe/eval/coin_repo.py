"""Score answer files with the user's own checkout of CoIN's evaluation scripts (``--coin-repo``).

The ``coin`` profile (:mod:`llava_dymoe.eval.coin_scorers`) re-states CoIN's rules; this module
runs the real thing when the user has it, so the two can be compared on the same answers:
``python -m ETrain.Eval.LLaVA.CoIN.<script> ...`` in a subprocess, with the checkout on
``PYTHONPATH`` and as working directory (CoIN's scripts resolve ``./cl_dataset/...`` from it),
then the ``Accuracy: X%`` it prints is read back.  Nothing of CoIN is imported here.

Per task, what ``annotation`` must be (the file CoIN's own ``scripts/LLaVA/Eval/*.sh`` pass):

=========  ==========================================  =================================
task       script(s)                                   ``annotation``
=========  ==========================================  =================================
ScienceQA  ``eval_science_qa``                         folder with ``problems.json`` and
                                                       ``pid_splits.json`` (``--base-dir``)
TextVQA    ``eval_textvqa``                            ``TextVQA_0.5.1_val.json``
ImageNet   ``eval_ImagetNet``                          CoIN's ``ImageNet/test.json``
GQA        ``convert_gqa_for_eval`` + ``eval_gqa``     not used: ``eval_gqa`` reads
                                                       ``./cl_dataset/GQA/testdev_balanced_questions.json``
                                                       from the working directory
VizWiz     ``eval_vizwiz``                             CoIN's ``VizWiz/val.json``
Grounding  ``eval_grounding``                          CoIN's ``Grounding/test.json``
VQAv2      ``eval_vqav2``                              CoIN's ``VQAv2/val.json``
OCR-VQA    ``eval_ocrvqa``                             CoIN's ``OCRVQA/test.json``
=========  ==========================================  =================================

CoIN prints two decimals, so the scores agree when they differ by at most 0.005 points.
A disagreement usually means the answers file does not cover the same questions (CoIN
divides by the number of answers, we by the number of questions; ImageNet pairs answers
with labels by position; GQA counts only balanced questions) -- or a bug in the profile.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from typing import Any, Dict, List, Optional

PACKAGE = "ETrain.Eval.LLaVA.CoIN"
#: coin scorer -> CoIN task name
TASK_OF_SCORER = {"coin_sqa": "ScienceQA", "coin_textvqa": "TextVQA", "coin_imagenet": "ImageNet",
                  "coin_gqa": "GQA", "coin_vizwiz": "VizWiz", "coin_grounding": "Grounding", "coin_vqav2": "VQAv2",
                  "coin_ocrvqa": "OCR-VQA"}
TASKS = tuple(TASK_OF_SCORER.values())
TOLERANCE = 0.005 + 1e-9
_ACCURACY = re.compile(r"(?:^|\s)Accuracy: ([-+0-9.eE]+)%", re.M)


def _commands(task: str, answers: str, annotation: Optional[str], work: str, python: str) -> List[List[str]]:
    def mod(name: str) -> List[str]:
        return [python, "-m", f"{PACKAGE}.{name}"]

    if task != "GQA" and not annotation:
        raise ValueError(f"--coin-annotation is required for {task} (see llava_dymoe.eval.coin_repo)")
    if task == "ScienceQA":
        return [mod("eval_science_qa") + ["--base-dir", annotation, "--result-file", answers, "--output-file",
                                          os.path.join(work, "output.json"), "--output-result",
                                          os.path.join(work, "output_result.json")]]
    if task == "GQA":
        pred = os.path.join(work, "testdev_balanced_predictions.json")
        return [mod("convert_gqa_for_eval") + ["--src", answers, "--dst", pred],
                mod("eval_gqa") + ["--tier", "testdev_balanced", "--path", work, "--output-dir", work]]
    script, flag = {"TextVQA": ("eval_textvqa", "--annotation-file"), "ImageNet": ("eval_ImagetNet", "--test-file"),
                    "VizWiz": ("eval_vizwiz", "--annotation-file"), "Grounding": ("eval_grounding", "--test-file"),
                    "VQAv2": ("eval_vqav2", "--annotation-file"), "OCR-VQA": ("eval_ocrvqa", "--annotation-file"),
                    }[task]
    return [mod(script) + [flag, annotation, "--result-file", answers, "--output-dir", work]]


def parse_accuracy(stdout: str) -> Optional[float]:
    """The first ``Accuracy: X%`` CoIN's script printed, in percent, or ``None``."""
    m = _ACCURACY.search(stdout)
    return float(m.group(1)) if m else None


def run_coin_script(coin_repo: str, task: str, answers: str, annotation: Optional[str] = None, *,
                    python: Optional[str] = None, cwd: Optional[str] = None, timeout: float = 3600) -> Dict[str, Any]:
    """Run CoIN's scorer for ``task`` on ``answers``; ``{"task", "commands", "accuracy", "output"}``.

    ``cwd`` (default: the checkout) is where CoIN's relative paths start.  Raises
    ``ValueError`` when the script fails or prints no accuracy.
    """
    if task not in TASKS:
        raise ValueError(f"unknown CoIN task {task!r}; one of {', '.join(TASKS)}")
    repo = os.path.abspath(os.path.expanduser(coin_repo))
    if not os.path.isdir(os.path.join(repo, *PACKAGE.split("."))):
        raise FileNotFoundError(f"--coin-repo {coin_repo}: no {'/'.join(PACKAGE.split('.'))} folder; "
                                "give the root of a zackschen/CoIN checkout")
    env = dict(os.environ)
    env["PYTHONPATH"] = repo + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    answers = os.path.abspath(answers)
    annotation = os.path.abspath(annotation) if annotation else None
    output = ""
    with tempfile.TemporaryDirectory(prefix="coin_eval_") as work:
        commands = _commands(task, answers, annotation, work, python or sys.executable)
        for cmd in commands:
            proc = subprocess.run(cmd, cwd=cwd or repo, env=env, capture_output=True, text=True, timeout=timeout)
            output += proc.stdout
            if proc.returncode != 0:
                tail = (proc.stdout + proc.stderr)[-2000:]
                raise ValueError(f"CoIN's {cmd[2]} failed (exit {proc.returncode}):\n{tail}")
    accuracy = parse_accuracy(output)
    if accuracy is None:
        raise ValueError(f"CoIN's scorer for {task} printed no 'Accuracy: X%' line; its output:\n{output[-2000:]}")
    return {"task": task, "commands": [" ".join(c) for c in commands], "accuracy": accuracy, "output": output[-4000:]}


def compare(ours: float, theirs: float) -> Dict[str, Any]:
    """``{"ours", "coin_repo", "difference", "agree"}`` (agree: within CoIN's 2-decimal rounding)."""
    diff = ours - theirs
    return {"ours": ours, "coin_repo": theirs, "difference": diff, "agree": abs(diff) <= TOLERANCE}


def disagreement_banner(task: str, scorer: str, result: Dict[str, Any]) -> str:
    """The loud message printed when our score and CoIN's differ."""
    line = "!" * 78
    return "\n".join([
        line,
        f"!! DISAGREEMENT on {task}: {scorer} gives {result['ours']:.4f}%, CoIN's own script prints "
        f"{result['coin_repo']:.2f}% (difference {result['difference']:+.4f} points).",
        "!! Check that the answers cover exactly CoIN's questions (CoIN divides by the number of answers,",
        "!! ImageNet pairs by position, GQA counts balanced questions only); otherwise report it as a bug",
        "!! of the coin profile (llava_dymoe/eval/coin_scorers.py) with the answers file.",
        line,
    ])


# ----------------------------------------------------------------------------- a whole run
def annotation_for(spec: Any) -> Optional[str]:
    """The file CoIN's script for suite task ``spec`` reads (resolved suite; see the module table).

    TextVQA: ``official_answers``; ScienceQA: ``<image_root>/ScienceQA`` (CoIN's default
    ``--base-dir ./cl_dataset/ScienceQA``); GQA: none; the others: ``annotation_file``.
    """
    task = TASK_OF_SCORER.get(spec.scorer)
    if task == "TextVQA":
        return spec.official_answers
    if task == "ScienceQA":
        return os.path.join(spec.image_root, "ScienceQA")
    if task == "GQA":
        return None
    return spec.annotation_file


def cross_check_run(coin_repo: str, suite: Any, records: List[Dict[str, Any]], answers_path: Any, *,
                    python: Optional[str] = None, cwd: Optional[str] = None) -> List[Dict[str, Any]]:
    """Score every cell of a run whose task uses a ``coin_*`` scorer with CoIN's own script.

    ``records``/``answers_path`` as in :func:`llava_dymoe.eval.profiles.build_clean_matrix`.
    Returns one ``{"stage", "task", "ours", "coin_repo", "difference", "agree"}`` per cell (a
    cell whose script failed has ``"error"`` instead of the scores); the caller prints
    :func:`disagreement_banner` for every ``agree == False``.
    """
    specs = {t.name: t for t in suite.tasks}
    out: List[Dict[str, Any]] = []
    for rec in records:
        for task_name, ours in rec["scores"].items():
            spec = specs[task_name]
            task = TASK_OF_SCORER.get(spec.scorer)
            if task is None:
                continue
            cell: Dict[str, Any] = {"stage": rec["name"], "task": task_name}
            try:
                theirs = run_coin_script(coin_repo, task, answers_path(rec, task_name), annotation_for(spec),
                                         python=python, cwd=cwd)
            except (ValueError, FileNotFoundError, subprocess.TimeoutExpired) as e:
                cell["error"] = str(e)
            else:
                cell.update(compare(float(ours), theirs["accuracy"]))
            out.append(cell)
    return out
