"""Helpers of the reliability tests (not a test module): file hashes and entry-point subprocesses."""
import hashlib
import os
import subprocess
import sys


def tree_hashes(root) -> dict:
    """``{relative path: sha256}`` of every file under ``root`` (a file: just that one)."""
    root = str(root)
    if os.path.isfile(root):
        return {os.path.basename(root): hashlib.sha256(open(root, "rb").read()).hexdigest()}
    out = {}
    for d, _, files in os.walk(root):
        for name in files:
            p = os.path.join(d, name)
            out[os.path.relpath(p, root)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return out


def run_module(module, *args, env=None, timeout=120):
    """``python -m module args`` -> CompletedProcess (text, captured)."""
    full = dict(os.environ)
    full.pop("LLAVA_DYMOE_DEBUG", None)
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True,
                          env=full, timeout=timeout)


def one_line_refusal(res, *needles):
    """Assert a refusal as the entry points print it: exit 2, no traceback, one ``error:`` line (the last one)
    containing every needle; returns that line."""
    assert res.returncode == 2, res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and res.stderr.strip().splitlines()[-1] == errors[0], res.stderr[-2000:]
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def write_suite(path, data, tasks=("A",)):
    """A suite file whose tasks all train on ``data`` (a smoke dataset) and share its question file."""
    lines = ["name: rel", "defaults:", "  image_root: images", "  generator: llava.eval.model_vqa_loader",
             "  scorer: contains", "tasks:"]
    for name in tasks:
        lines += [f"  - name: {name}", "    train_json: train.json", "    question_file: questions.jsonl",
                  "    annotation_file: questions.jsonl", "    reference_file: questions.jsonl"]
    open(path, "w").write("\n".join(lines) + "\n")
    return str(path)
