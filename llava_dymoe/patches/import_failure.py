"""Why a fork's module does not import: the failing import statement and the package that is missing.

A patch target's module (``llava.train.train`` of a fork, say) can fail to import for a reason that has
nothing to do with llava_dymoe: the fork's own code (often a vendored copy of peft) imports something
that exists only when an optional package is installed.  DISCO's and HiDe's vendored peft, for
instance, do ``from .lora import Linear8bitLt`` while ``peft/tuners/lora.py`` defines ``Linear8bitLt``
only under ``if is_bnb_available():``, so without bitsandbytes the import fails with "cannot import
name".  :func:`explain_import_failure` reads the traceback and the source (``ast``, nothing executed)
and returns one line naming the fork's module, the file and line of the failing import, and the
package to install; ``None`` when the failure is not of that kind (the caller's message then stands).
"""
from __future__ import annotations

import ast
import os
import traceback
from typing import Optional

#: ``is_<name>_available()`` guards whose package is installed under another name.
GUARD_PACKAGES = {"bnb": "bitsandbytes", "flash_attn": "flash-attn", "apex": "apex", "deepspeed": "deepspeed",
                  "xformers": "xformers", "auto_gptq": "auto-gptq", "torch_tpu": "torch_xla"}
#: Python import names whose pip distribution differs.
PIP_NAMES = {"bitsandbytes": "bitsandbytes", "flash_attn": "flash-attn", "sklearn": "scikit-learn",
             "PIL": "pillow", "cv2": "opencv-python", "yaml": "pyyaml", "skimage": "scikit-image"}


def _failing_frame(exc: BaseException) -> Optional[traceback.FrameSummary]:
    """The deepest frame of real source (not importlib's frozen bootstrap): the failing import statement."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith("<")]
    return frames[-1] if frames else None


def _guard_of(path: str, name: str) -> Optional[str]:
    """The package that ``name``'s definition in ``path`` is conditional on, if any (``if is_X_available():``
    or ``try: import X`` around it)."""
    try:
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), filename=path)
    except (OSError, SyntaxError, ValueError):
        return None

    def defines(body) -> bool:
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)) and node.name == name:
                return True
            if isinstance(node, (ast.Import, ast.ImportFrom)) and any(
                    (a.asname or a.name.split(".")[0]) == name for a in node.names):
                return True
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
                return True
        return False

    for node in ast.walk(tree):
        if isinstance(node, ast.If) and defines(node.body):
            for call in ast.walk(node.test):
                fn = getattr(call, "func", None)
                fname = getattr(fn, "id", None) or getattr(fn, "attr", None)
                if isinstance(call, ast.Call) and fname and fname.startswith("is_") and fname.endswith("_available"):
                    key = fname[3:-len("_available")]
                    return GUARD_PACKAGES.get(key, key)
        if isinstance(node, ast.Try) and defines(node.body):
            for imp in node.body:
                if isinstance(imp, ast.Import):
                    return imp.names[0].name.split(".")[0]
                if isinstance(imp, ast.ImportFrom) and imp.module and imp.level == 0:
                    return imp.module.split(".")[0]
    return None


def _rel(path: str) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


def explain_import_failure(exc: ImportError, module_name: str) -> Optional[str]:
    """One line for an import of ``module_name`` that failed inside the fork's own code, else ``None``.

    Two kinds: a package that is not installed (``ModuleNotFoundError`` for a module outside the import
    chain of ``module_name`` itself), and a name that the fork's module defines only when an optional
    package is installed."""
    frame = _failing_frame(exc)
    where = f"{_rel(frame.filename)}:{frame.lineno}" if frame else "?"
    stmt = f" (`{frame.line.strip()}`)" if frame and frame.line else ""
    head = f"module {module_name!r} cannot be imported: the fork's own code fails at {where}{stmt}"
    missing = getattr(exc, "name", None)
    if isinstance(exc, ModuleNotFoundError) and missing:
        top = missing.split(".")[0]
        if module_name == missing or module_name.startswith(missing + ".") or missing.startswith(module_name + "."):
            return None  # the target's own package or module is missing: the caller's message fits
        pip = PIP_NAMES.get(top, top.replace("_", "-"))
        return (f"{head}: package {top!r} is not installed (pip install {pip}). This is a dependency of the fork, "
                "not a llava_dymoe patch point")
    name = str(exc).partition("cannot import name ")[2].split(" ")[0].strip("'\"")
    path = getattr(exc, "path", None)
    if name and path:
        package = _guard_of(path, name)
        defined = f"{_rel(path)} defines {name!r}"
        if package:
            pip = PIP_NAMES.get(package, package)
            return (f"{head}: {defined} only when {package} is installed (pip install {pip}, or make that import "
                    "conditional in the fork). This is the fork's own import, not a llava_dymoe patch point")
        return (f"{head}: {_rel(path)} has no {name!r}. This is the fork's own import, not a llava_dymoe "
                "patch point; fix the import in the fork")
    return None
