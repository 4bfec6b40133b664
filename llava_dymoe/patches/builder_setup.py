"""What a fork's ``load_pretrained_model`` does to the model beyond upstream's builder, and whether a DyMoE
checkpoint can do without it (``autopatch check``; found by the fork matrix of issue 28).

A DyMoE checkpoint is rebuilt by llava_dymoe's loader (patch E1), not by the fork's builder, so setup calls the
fork's builder makes on the model (MCITlib's DISCO and HiDe: ``model.set_tokenizer``, ``model.set_clip_tokenizer``,
``model.set_eval``) are not made.  A call matters when it gives the model an attribute that the ``__init__`` of the
class defining the method does not set (DISCO's forward reads ``self.tokenizer``, set only by ``set_tokenizer``):
without it the fork's own eval fails.  A call that only resets attributes the model has from ``__init__`` (OLoRA's
``set_cur_task``) is listed but does not block; an ``__init__`` of a base class is not read (such a call is
flagged, the cautious side).  Read from the source alone (``ast``); nothing is imported.
"""
from __future__ import annotations

import ast
import os
from dataclasses import dataclass, field
from typing import Dict, List, Set, Tuple

from .lines import _parse, _top

#: The ``model.<method>(...)`` calls of upstream's ``load_pretrained_model`` (llava-torch 1.1.1 and 1.2.2.post1
#: alike; tests/patches/test_builder_setup.py checks them against the installed llava).
UPSTREAM_BUILDER_MODEL_CALLS = frozenset({"get_vision_tower", "load_state_dict", "merge_and_unload",
                                          "resize_token_embeddings", "to"})


@dataclass
class SetupCall:
    written: str  # "model.set_tokenizer"
    line: int
    new_attrs: List[str] = field(default_factory=list)  # attributes it sets that its class's __init__ does not

    @property
    def needed(self) -> bool:
        return bool(self.new_attrs)

    def describe(self) -> str:
        why = (f"sets {', '.join(self.new_attrs)}, which the model's __init__ does not" if self.new_attrs
               else "sets no attribute that __init__ leaves unset")
        return f"{self.written} (line {self.line}: {why})"


def _self_assigned(fn: ast.FunctionDef) -> Tuple[Set[str], Set[str]]:
    """(attributes ``fn`` assigns on ``self``, methods it calls on ``self``)."""
    attrs, calls = set(), set()
    for node in ast.walk(fn):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, (ast.AnnAssign, ast.AugAssign)) else []
        for t in targets:
            if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self":
                attrs.add(t.attr)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                isinstance(node.func.value, ast.Name) and node.func.value.id == "self":
            calls.add(node.func.attr)
    return attrs, calls


def _methods(folder: str) -> Dict[str, List[Tuple[ast.FunctionDef, Set[str]]]]:
    """Every method of every class under ``folder``, by name, each with the attributes its class's ``__init__``
    sets."""
    methods: Dict[str, List[Tuple[ast.FunctionDef, Set[str]]]] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(n for n in filenames if n.endswith(".py")):
            tree = _parse(os.path.join(dirpath, name))
            for cls in (n for n in (tree.body if tree else ()) if isinstance(n, ast.ClassDef)):
                fns = [n for n in cls.body if isinstance(n, ast.FunctionDef)]
                init = next((_self_assigned(fn)[0] for fn in fns if fn.name == "__init__"), set())
                for fn in fns:
                    methods.setdefault(fn.name, []).append((fn, init))
    return methods


def _new_attrs(name: str, methods: Dict[str, List[Tuple[ast.FunctionDef, Set[str]]]], depth: int = 2) -> Set[str]:
    """Attributes that method ``name`` (and the ``self.`` methods it calls) sets and its class's ``__init__``
    does not."""
    out: Set[str] = set()
    for fn, init in methods.get(name, ()):
        attrs, calls = _self_assigned(fn)
        out |= attrs - init
        if depth:
            for called in calls - {name}:
                out |= {a for a in _new_attrs(called, methods, depth - 1) if a not in init}
    return out


def builder_setup(builder_file: str) -> List[SetupCall]:
    """The ``model.<method>(...)`` calls of the fork's ``load_pretrained_model`` that upstream's does not make; the
    methods are looked up in the classes of the builder's folder (``llava/model/``: the model classes, not the
    trainer's ``set_cur_task``)."""
    fn = _top(_parse(builder_file), "load_pretrained_model")
    if not isinstance(fn, ast.FunctionDef):
        return []
    calls = sorted((n for n in ast.walk(fn) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
                    and isinstance(n.func.value, ast.Name) and n.func.value.id == "model"
                    and n.func.attr not in UPSTREAM_BUILDER_MODEL_CALLS), key=lambda n: n.lineno)
    if not calls:
        return []
    methods = _methods(os.path.dirname(builder_file))
    out, seen = [], set()
    for call in calls:
        if call.func.attr in seen:
            continue
        seen.add(call.func.attr)
        new = sorted(_new_attrs(call.func.attr, methods))
        out.append(SetupCall(f"model.{call.func.attr}", call.lineno, new))
    return out
