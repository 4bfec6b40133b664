"""What a fork runs: its training entry, the module whose ``train()`` that entry calls, and what that
``train()`` does beyond ``llava.train.train.train`` (``autopatch check``, issue 28 item 2).

Forks launch their own files (``train_mem_MOE.py``, ``train_mem_SMoLoRA.py`` ...) from ``scripts/*.sh``;
their ``llava/train/train.py`` is often a stale copy.  :func:`find_entry` reads the checkout's shell
scripts (``*.sh`` and ``scripts/**/*.sh``: ``deepspeed``/``torchrun``/``python`` lines naming a ``.py`` file or ``-m`` module whose path
has ``train`` in it), takes the entry most scripts launch (or ``--entry PATH``), and follows it to the
module that defines the ``train()`` it calls (``from llava.train.train_MOE import train``).
:func:`train_profile` then lists, from the source alone (``ast``), the calls that ``train()`` makes and
upstream's does not (setup such as ``set_cur_task``, ``set_tokenizer``, ``initialize_text_tower``) and
its save call sites, each classed as seen by the DyMoE saver or not.
"""
from __future__ import annotations

import ast
import builtins
import collections
import glob
import os
import re
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from .lines import _parse

#: Every call that ``llava.train.train.train()`` makes, by its last name (the same in llava-torch 1.1.1 and
#: 1.2.2.post1; tests/patches/test_entry.py checks it against the installed llava).
UPSTREAM_TRAIN_CALLS = frozenset((
    "BitsAndBytesConfig HfArgumentParser LLaVATrainer LoraConfig Path dict enable_input_require_grads "
    "find_all_linear_names from_pretrained get_input_embeddings get_model get_peft_model get_peft_state_maybe_zero_3 "
    "get_peft_state_non_lora_maybe_zero_3 get_vision_tower glob hasattr initialize_vision_modules "
    "initialize_vision_tokenizer isinstance join list make_supervised_data_module named_modules named_parameters "
    "parameters parse_args_into_dataclasses prepare_model_for_kbit_training rank0_print register_forward_hook "
    "requires_grad_ safe_save_model_for_hf_trainer save save_pretrained save_state "
    "smart_tokenizer_and_embedding_resize to train update").split())
#: Calls that are never setup worth naming (builtins, logging, paths).
_BENIGN = frozenset(dir(builtins)) | {"exists", "makedirs", "dirname", "basename", "info", "warning", "debug",
                                      "format", "get", "items", "keys", "values", "append", "extend", "split",
                                      "startswith", "endswith", "lower", "replace", "strip", "device"}
#: Save call sites the DyMoE patches see: the saver global (T3), the trainer's own save_model (checkpoint-N
#: and the finished task when called on a DyMoETrainer), LLaVA's trainer state and the LoRA branch.
SAVES_SEEN = {"safe_save_model_for_hf_trainer": "T3, the DyMoE saver", "save_model": "DyMoETrainer.save_model",
              "save_state": "trainer state only", "save_pretrained": "the --lora_enable branch (not DyMoE)",
              "save_trained_model": "DyMoETrainer.save_trained_model (the finished task)"}
_LAUNCH = re.compile(r"(?:^|[\s;&|(])(?:deepspeed|torchrun|python[0-9.]*|accelerate\s+launch)\b(?P<rest>[^\n]*)")


@dataclass
class Entry:
    checkout: str
    file: Optional[str]  # the script the launch lines run (absolute), None: not found
    module: str  # the module whose train() runs, e.g. "llava.train.train_MOE"
    module_file: str
    how: str  # where the entry came from
    candidates: List[Tuple[str, int]] = field(default_factory=list)  # (entry, number of scripts)


@dataclass
class TrainProfile:
    extra_calls: List[Tuple[str, int]] = field(default_factory=list)  # (call as written, line)
    saves: List[Tuple[str, int, str]] = field(default_factory=list)  # (call, line, who sees it or "")


def module_of(checkout: str, path: str) -> str:
    rel = os.path.relpath(os.path.realpath(path), os.path.realpath(checkout))
    return rel[:-3].replace(os.sep, ".") if rel.endswith(".py") else rel.replace(os.sep, ".")


def file_of(checkout: str, module: str) -> str:
    return os.path.join(checkout, *module.split(".")) + ".py"


def _launched(script_text: str) -> List[str]:
    """``.py`` paths and ``-m`` modules that a shell script's launch lines run (with ``\\`` continuations joined)."""
    text = script_text.replace("\\\n", " ")
    found = []
    for m in _LAUNCH.finditer(text):
        for tok in m.group("rest").split():
            tok = tok.strip("'\"")
            if tok.endswith(".py") and "train" in os.path.basename(tok):
                found.append(tok)
                break
        else:
            mod = re.search(r"(?:^|\s)-m\s+(\S*train\S*)", m.group("rest"))
            if mod and mod.group(1) not in ("deepspeed.launcher.runner", "torch.distributed.run"):
                found.append(mod.group(1))
    return found


def _resolve(checkout: str, launched: str) -> Optional[str]:
    if launched.endswith(".py"):
        for base in (checkout, os.path.dirname(checkout)):
            path = os.path.normpath(os.path.join(base, launched))
            if os.path.isfile(path):
                return path
        tail = [p for p in glob.glob(os.path.join(checkout, "**", os.path.basename(launched)), recursive=True)
                if p.replace(os.sep, "/").endswith(launched.lstrip("./"))]
        return tail[0] if len(tail) == 1 else None
    path = file_of(checkout, launched)
    return path if os.path.isfile(path) else None


def train_module_of(checkout: str, entry_file: str) -> Tuple[str, str]:
    """The module (and file) defining the ``train`` that ``entry_file`` runs: itself, or where it imports it from."""
    tree = _parse(entry_file)
    own = module_of(checkout, entry_file)
    for node in tree.body if tree else ():
        if isinstance(node, ast.FunctionDef) and node.name == "train":
            return own, entry_file
    for node in tree.body if tree else ():
        if isinstance(node, ast.ImportFrom) and any(a.name == "train" for a in node.names):
            if node.level:
                base = own.split(".")[:-node.level]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            return mod, file_of(checkout, mod)
    return own, entry_file


def find_entry(checkout: str, explicit: Optional[str] = None) -> Entry:
    """The training entry of the fork checked out at ``checkout`` (the directory holding ``llava/``)."""
    if explicit:
        path = explicit if os.path.isabs(explicit) else os.path.join(checkout, explicit)
        if not os.path.isfile(path):
            path = _resolve(checkout, explicit) or path
        if not os.path.isfile(path):
            raise FileNotFoundError(f"--entry {explicit}: no such file (give a path under {checkout} or a module)")
        mod, mod_file = train_module_of(checkout, path)
        return Entry(checkout, path, mod, mod_file, "--entry")
    counts = collections.Counter()
    scripts = glob.glob(os.path.join(checkout, "*.sh")) + glob.glob(os.path.join(checkout, "scripts", "**", "*.sh"),
                                                                     recursive=True)
    for script in sorted(scripts):
        try:
            with open(script, encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError:
            continue
        for launched in set(_launched(text)):
            path = _resolve(checkout, launched)
            if path:
                counts[path] += 1
    candidates = [(module_of(checkout, p), n) for p, n in counts.most_common()]
    default = file_of(checkout, "llava.train.train")
    if not counts:
        return Entry(checkout, None, "llava.train.train", default, "no launch script found: llava.train.train")
    path, n = counts.most_common(1)[0]
    mod, mod_file = train_module_of(checkout, path)
    return Entry(checkout, path, mod, mod_file, f"launched by {n} of the checkout's shell scripts", candidates)


def _call_name(call: ast.Call) -> Tuple[str, str]:
    """(last name, the call as written up to its arguments), e.g. ("set_cur_task", "model.set_cur_task")."""
    f = call.func
    last = f.id if isinstance(f, ast.Name) else getattr(f, "attr", "")
    try:
        written = ast.unparse(f)
    except Exception:  # pragma: no cover - ast.unparse handles every expression
        written = last
    return last, written


def train_profile(module_file: str) -> TrainProfile:
    """Extra calls and save call sites of ``train()`` in ``module_file`` (empty when there is no train())."""
    tree = _parse(module_file)
    fn = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "train"), None) if tree else None
    prof = TrainProfile()
    if fn is None:
        return prof
    named = set()
    for node in sorted((n for n in ast.walk(fn) if isinstance(n, ast.Call)), key=lambda n: (n.lineno, n.col_offset)):
        last, written = _call_name(node)
        if not last:
            continue
        if last.startswith("save") or last in SAVES_SEEN:
            seen = SAVES_SEEN.get(last, "as upstream's train()" if last in UPSTREAM_TRAIN_CALLS else "")
            prof.saves.append((written, node.lineno, seen))
        elif last not in UPSTREAM_TRAIN_CALLS and last not in _BENIGN and written not in named:
            named.add(written)
            prof.extra_calls.append((written, node.lineno))
    return prof
