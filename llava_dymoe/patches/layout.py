"""Where a fork keeps its LLaVA: the modules that play upstream's roles (training ``train()``, the trainer, the
model builder, the eval scripts), found from the source (``ast``; nothing is imported).

Upstream and most forks keep LLaVA in a package named ``llava`` (``llava.train.train``, ``llava.model.builder``
...).  CoIN (zackschen/CoIN) does not: its LLaVA is spread over one package, ``ETrain``, under other names
(``ETrain.Train.LLaVA.train``, ``ETrain.Train.LLaVA.llava_trainer``, ``ETrain.Models.LLaVA.builder``, the eval
scripts in ``ETrain.Eval.LLaVA.CoIN``; the training saver comes into ``train.py`` by ``from
ETrain.Train.Base_trainer import *``).  :func:`discover` follows the imports of the module a fork runs:

* ``trainer``: the module the ``LLaVATrainer`` of the train module comes from;
* ``builder``: the module the eval module imports ``load_pretrained_model`` from (given an eval module), else
  the one most of the package's modules import it from, else a ``builder.py`` that defines it;
* ``eval_package``: the package of the eval module, else the one holding most modules that import the builder.

:func:`binding` finds where a module-level name of a module comes from, following ``from X import name`` and
``from X import *`` (CoIN's saver), so the patch-point scan (``lines.scan``) sees what Python will bind.
"""
from __future__ import annotations

import ast
import collections
import importlib.util
import os
from dataclasses import dataclass
from typing import List, Optional, Tuple

UPSTREAM_PACKAGE = "llava"


def _parse(path: str) -> Optional[ast.Module]:
    try:
        with open(path, encoding="utf-8") as f:
            return ast.parse(f.read(), filename=path)
    except (OSError, SyntaxError, ValueError):
        return None


def _top(tree: Optional[ast.Module], name: str) -> Optional[ast.AST]:
    """Top-level def/class/import binding ``name`` (last one wins, like Python)."""
    found = None
    for node in tree.body if tree else ():
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == name:
            found = node
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            if any((a.asname or a.name.split(".")[0]) == name for a in node.names):
                found = node
        elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            found = node
    return found


@dataclass(frozen=True)
class Layout:
    """The modules of one LLaVA copy: ``checkout`` is the folder on ``sys.path`` that holds ``package``."""

    checkout: str
    package: str  # "llava" | "ETrain"
    train: str  # the module whose train() runs
    trainer: str  # where its LLaVATrainer is defined
    builder: str  # where load_pretrained_model is defined
    eval_package: str  # the package of the eval scripts

    def file(self, module: str) -> str:
        return module_path(self.checkout, module)

    @property
    def package_dir(self) -> str:
        return os.path.join(self.checkout, self.package)

    @property
    def encoder(self) -> str:
        return self.builder.rpartition(".")[0] + ".multimodal_encoder.clip_encoder"

    @property
    def is_upstream(self) -> bool:
        return self.package == UPSTREAM_PACKAGE

    def describe(self) -> str:
        return (f"package {self.package} in {self.checkout}: train() in {self.train}, trainer {self.trainer}, "
                f"builder {self.builder}, eval scripts in {self.eval_package}")


def module_path(checkout: str, module: str) -> str:
    path = os.path.join(checkout, *module.split("."))
    return path + ".py" if not os.path.isdir(path) else os.path.join(path, "__init__.py")


def upstream(checkout: str, train: str = "llava.train.train") -> Layout:
    """Upstream's names (``checkout`` holds ``llava/``)."""
    return Layout(checkout, UPSTREAM_PACKAGE, train, "llava.train.llava_trainer", "llava.model.builder", "llava.eval")


def checkout_of(package: str) -> Optional[str]:
    """The folder holding the importable ``package`` (found, not imported), or None."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return os.path.dirname(os.path.realpath(list(spec.submodule_search_locations)[0]))


def _absolute(module: str, node: ast.ImportFrom, is_package: bool = False) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")[:len(module.split(".")) - node.level + (1 if is_package else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def binding(checkout: str, module: str, name: str, depth: int = 4) -> Tuple[str, Optional[ast.AST]]:
    """``(module, node)``: where ``name`` is bound at module level, following ``from X import name`` into X (when
    X is in the checkout) and, when nothing binds it, ``from X import *``; node is None when it is not found."""
    path = module_path(checkout, module)
    tree = _parse(path)
    node = _top(tree, name)
    is_pkg = path.endswith("__init__.py")
    if isinstance(node, ast.ImportFrom) and depth > 0:
        source = _absolute(module, node, is_pkg)
        alias = next(a for a in node.names if (a.asname or a.name) == name)
        if os.path.isfile(module_path(checkout, source)):
            found = binding(checkout, source, alias.name, depth - 1)
            if found[1] is not None:
                return found
    if node is None and depth > 0:
        for star in reversed([n for n in (tree.body if tree else ()) if isinstance(n, ast.ImportFrom)
                              and any(a.name == "*" for a in n.names)]):
            source = _absolute(module, star, is_pkg)
            if os.path.isfile(module_path(checkout, source)):
                found = binding(checkout, source, name, depth - 1)
                if found[1] is not None:
                    return found
    return module, node


def _modules(checkout: str, package: str) -> List[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(os.path.join(checkout, package)):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        rel = os.path.relpath(dirpath, checkout).replace(os.sep, ".")
        out += [f"{rel}.{n[:-3]}" for n in sorted(filenames) if n.endswith(".py") and n != "__init__.py"]
    return out


def _loader_importers(checkout: str, package: str) -> List[Tuple[str, str]]:
    """``(module, builder)`` for every module of the package that does ``from BUILDER import load_pretrained_model``."""
    out = []
    for mod in _modules(checkout, package):
        path = module_path(checkout, mod)
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                if "load_pretrained_model" not in f.read():
                    continue
        except OSError:
            continue
        node = _top(_parse(path), "load_pretrained_model")
        if isinstance(node, ast.ImportFrom):
            out.append((mod, _absolute(mod, node)))
    return out


def discover(checkout: str, train: Optional[str] = None, eval_module: Optional[str] = None) -> Layout:
    """The layout of the LLaVA copy that ``train`` (the module whose ``train()`` runs) or ``eval_module`` belongs
    to; upstream's names when that is ``llava``."""
    package = (train or eval_module or UPSTREAM_PACKAGE).split(".")[0]
    if package == UPSTREAM_PACKAGE:
        return upstream(checkout, train or "llava.train.train")
    importers = _loader_importers(checkout, package)
    builder = None
    if eval_module:
        source, node = binding(checkout, eval_module, "load_pretrained_model", depth=0)
        if isinstance(node, ast.ImportFrom):
            builder = _absolute(eval_module, node)
    if builder is None and importers:
        builder = collections.Counter(b for _, b in importers).most_common(1)[0][0]
    if builder is None:
        builder = next((m for m in _modules(checkout, package) if m.endswith(".builder") and isinstance(
            _top(_parse(module_path(checkout, m)), "load_pretrained_model"), ast.FunctionDef)), f"{package}.builder")
    builder = binding(checkout, builder, "load_pretrained_model")[0]
    if eval_module:
        eval_package = eval_module.rpartition(".")[0]
    else:
        parents = collections.Counter(m.rpartition(".")[0] for m, b in importers
                                      if b == builder and "eval" in m.lower())
        eval_package = parents.most_common(1)[0][0] if parents else builder.rpartition(".")[0]
    trainer = binding(checkout, train, "LLaVATrainer")[0] if train else f"{package}.llava_trainer"
    return Layout(checkout, package, train or f"{package}.train", trainer, builder, eval_package)
