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


def run_module(module, *args, env=None):
    """``python -m module args`` -> CompletedProcess (text, captured)."""
    full = dict(os.environ)
    full.pop("LLAVA_DYMOE_DEBUG", None)
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True,
                          env=full, timeout=120)
