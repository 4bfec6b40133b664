"""Supported upstream lines and the patch points T1-T3 / E1-E4, found by what ``llava`` actually has.

Two lines are supported, each in its own environment (a 1.1.x ``llava`` cannot even be imported
next to transformers >= 4.36, which registers its own ``llava`` model type):

=====  =======================  =============  ====================================================
line   llava-torch              transformers   what tells them apart
=====  =======================  =============  ====================================================
1.2    1.2.2.post1 (``.venv``)  4.37.2         ``train(attn_implementation=None)``; builder has
                                               ``use_flash_attn``; ``CLIPVisionTower.load_model(device_map)``
1.1    1.1.1 (``.venv-llava11``) 4.31.0        ``train()`` takes no argument; builder has no
                                               ``use_flash_attn``; ``load_model()`` takes no argument
=====  =======================  =============  ====================================================

A fork may carry any version number (or none: a checkout first on ``PYTHONPATH``), so the line is
chosen from the *source* of the ``llava`` package in use: :func:`scan` parses its files (``ast``,
nothing is imported or executed) and reports every patch point as ``found`` / ``changed`` /
``missing`` with the file and line.  :func:`select_line` turns that into the line to use and the
version requirements of the patch sets: transformers always; ``llava-torch`` only when the
``llava`` in use *is* the installed llava-torch distribution (a fork's own files are judged by
their symbols alone).  A patch point that a fork lacks gives one :class:`UpstreamMismatch`
naming the symbol, what llava_dymoe expects of it and the file to look at.

Everything else that differs between the lines is here too, so no other module tests a version:
:func:`train_call_kwargs` (the ``train()`` call), :func:`load_vision_tower` (the eval loader).
"""
from __future__ import annotations

import ast
import importlib.util
import logging
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from ..errors import DyMoEError
from ._base import PatchTargetMissing
from .layout import Layout, _parse, _top, binding, checkout_of, discover, upstream  # noqa: F401 (_parse: entry.py)

logger = logging.getLogger("llava_dymoe.patches")

REPO_PATCHES = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                            "patches")


@dataclass(frozen=True)
class UpstreamLine:
    """One supported upstream line: the versions it was tested with and its fork diff."""

    name: str
    llava_torch: str
    transformers: str
    venv: str
    make_setup: str
    train_takes_attn: bool  # train(attn_implementation=...)
    builder_flash: bool  # load_pretrained_model(..., use_flash_attn=...)

    @property
    def diff(self) -> str:
        return os.path.join(REPO_PATCHES, f"llava-torch-{self.llava_torch}-dymoe.diff")

    @property
    def parts(self) -> List[str]:
        """The same diff shipped per file (``patches/llava-torch-<version>-dymoe/<file>.diff``): apply what fits."""
        folder = self.diff[:-len(".diff")]
        return sorted(os.path.join(folder, n) for n in os.listdir(folder) if n.endswith(".diff")) \
            if os.path.isdir(folder) else []

    def describe(self) -> str:
        return f"the {self.name} line (llava-torch {self.llava_torch}, transformers {self.transformers})"


LINE_12 = UpstreamLine("1.2", "1.2.2.post1", "4.37.2", ".venv", "make setup", True, True)
LINE_11 = UpstreamLine("1.1", "1.1.1", "4.31.0", ".venv-llava11", "make setup-llava11", False, False)
LINES: Tuple[UpstreamLine, ...] = (LINE_12, LINE_11)
LINE_11_TRANSFORMERS = tuple(int(p) for p in LINE_11.transformers.split("."))
#: transformers capabilities a fork's code may use, and the first transformers version that has them
#: (issue 28 item 5: SEFE pins 4.31.0 but imports transformers.cache_utils, a 4.36 module).
CAPABILITIES: Tuple[Tuple[str, str, Tuple[int, ...]], ...] = (
    ("module", "transformers.cache_utils", (4, 36)),
    ("module", "transformers.modeling_attn_mask_utils", (4, 36)),
    ("keyword", "attn_implementation", (4, 36)),
    ("keyword", "gradient_checkpointing_kwargs", (4, 35)),
)


class UpstreamMismatch(PatchTargetMissing, DyMoEError):
    """A patch point is missing or not what llava_dymoe expects (one line: symbol, expectation, file)."""

    def __init__(self, message: str, details: Optional[str] = None):
        DyMoEError.__init__(self, message, details)


# -- the patch points ------------------------------------------------------------------------------
@dataclass(frozen=True)
class PatchPoint:
    id: str
    symbol: str  # "llava.train.train:TrainingArguments"
    expects: str
    side: str  # "train" | "eval"

    @property
    def relpath(self) -> str:
        return self.symbol.partition(":")[0].replace(".", "/") + ".py"


POINTS: Tuple[PatchPoint, ...] = (
    PatchPoint("T0", "llava.train.train:train", "a function train() (1.1 line) or "
               "train(attn_implementation=None) (1.2 line) that builds HfArgumentParser((ModelArguments, "
               "DataArguments, TrainingArguments)) from the module globals", "train"),
    PatchPoint("T1", "llava.train.train:TrainingArguments", "a @dataclass subclass of "
               "transformers.TrainingArguments, looked up by train() at call time", "train"),
    PatchPoint("T1b", "llava.train.train:ModelArguments", "a @dataclass with a pretrain_mm_mlp_adapter field",
               "train"),
    PatchPoint("T2", "llava.train.train:LLaVATrainer", "a module global that train() calls as "
               "LLaVATrainer(model=..., tokenizer=..., args=..., **data_module)", "train"),
    PatchPoint("T3", "llava.train.train:safe_save_model_for_hf_trainer", "safe_save_model_for_hf_trainer("
               "trainer, output_dir), called by train() when --lora_enable is off; maybe_zero_3(param, "
               "ignore_status, name) beside it", "train"),
    PatchPoint("E1", "llava.model.builder:load_pretrained_model", "load_pretrained_model(model_path, "
               "model_base, model_name, load_8bit, load_4bit, device_map, device[, use_flash_attn][, **kwargs])",
               "eval"),
    PatchPoint("E2", "llava.eval.model_vqa_loader:load_pretrained_model", "eval modules that copy the loader "
               "with 'from llava.model.builder import load_pretrained_model'", "eval"),
    PatchPoint("E3", "llava.eval.model_vqa_loader:eval_model", "a script module with eval_model(args) that "
               "calls load_pretrained_model(model_path, args.model_base, model_name) under __main__", "eval"),
    PatchPoint("E4", "llava.model.builder", "an importable module llava/model/builder.py (the autopatch "
               "hook patches it right after its first import)", "eval"),
)
POINT_BY_ID: Dict[str, PatchPoint] = {p.id: p for p in POINTS}
#: Points the run-time patch sets cannot do without.  E2 (by-value copies) and E3 (our runner's default
#: generator) are reported by ``autopatch check`` but do not stop the eval shim: it can wrap any eval
#: module of the fork, and E1 alone is what it patches.
REQUIRED: Dict[str, Tuple[str, ...]] = {"train": ("T0", "T1", "T1b", "T2", "T3"), "eval": ("E1", "E4")}


@dataclass
class PointResult:
    point: PatchPoint
    status: str  # found | changed | missing
    path: str
    line: Optional[int] = None
    detail: str = ""


@dataclass
class ScanReport:
    llava_dir: str
    results: List[PointResult] = field(default_factory=list)
    train_takes_attn: Optional[bool] = None
    builder_flash: Optional[bool] = None
    vision_load_takes_device_map: Optional[bool] = None
    modality_sampler_single_ok: Optional[bool] = None  # False: llava-torch 1.1.1's sampler bug (T4)
    train_file: str = ""  # the module whose train() the fork runs (llava/train/train.py unless an entry says)
    capabilities: List[Tuple[str, Tuple[int, ...], str]] = field(default_factory=list)  # (what, transformers, where)
    layout: Optional[Layout] = None  # which modules play upstream's roles (layout.py); upstream's names when None
    eval_script: str = ""  # a fork's eval script in E3's role (CoIN: ETrain.Eval.LLaVA.CoIN.model_gqa; SEFE:
    # llava.eval.CoIN.model_ai2d, having no llava.eval.model_vqa_loader); "" when upstream's script is there

    @property
    def roles(self) -> Layout:
        return self.layout or upstream(os.path.dirname(self.llava_dir))

    def result(self, pid: str) -> PointResult:
        return next(r for r in self.results if r.point.id == pid)

    @property
    def nearest_line(self) -> UpstreamLine:
        return self.line_and_reason[0]

    @property
    def line_and_reason(self) -> Tuple[UpstreamLine, str]:
        """The line this source needs, and why: the transformers capabilities its code uses first (a module or
        flag newer than the 1.1 line's transformers 4.31 means the 1.2 line), then T0's signature, then the
        builder's; the 1.2 line by default."""
        newer = [c for c in self.capabilities if c[1] > LINE_11_TRANSFORMERS]
        if newer:
            what, version, where = max(newer, key=lambda c: c[1])
            return LINE_12, (f"its code uses {what} (transformers >= {'.'.join(map(str, version))}, at {where}); "
                             f"the 1.1 line's transformers {LINE_11.transformers} lacks it")
        if self.train_takes_attn is not None:
            return (LINE_12, "train(attn_implementation=...)") if self.train_takes_attn else (
                LINE_11, "train() takes no attn_implementation")
        if self.builder_flash is not None:
            return (LINE_12, "load_pretrained_model(..., use_flash_attn)") if self.builder_flash else (
                LINE_11, "load_pretrained_model has no use_flash_attn")
        return LINE_12, "no train() or builder signature to judge by (the default line)"


def _params(fn: ast.FunctionDef) -> Tuple[List[str], bool]:
    a = fn.args
    return [p.arg for p in a.posonlyargs + a.args + a.kwonlyargs], a.kwarg is not None


def _calls(node: ast.AST, name: str) -> List[ast.Call]:
    return [n for n in ast.walk(node) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
            and n.func.id == name]


def _is_dataclass(cls: ast.ClassDef) -> bool:
    return any("dataclass" in ast.unparse(d) for d in cls.decorator_list)


def _fields(cls: ast.ClassDef) -> List[str]:
    return [n.target.id for n in cls.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)]


def _res(report: ScanReport, pid: str, status: str, path: str, node=None, detail: str = "") -> None:
    report.results.append(PointResult(POINT_BY_ID[pid], status, path, getattr(node, "lineno", None), detail))


def _scan_capabilities(report: ScanReport, files: Sequence[str]) -> None:
    """Record every use of a :data:`CAPABILITIES` entry (imports of the module, the keyword in a call or def)."""
    for path in files:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError:
            continue
        if not any(name.rpartition(".")[2] in text for _, name, _ in CAPABILITIES):
            continue
        tree = _parse(path)
        for node in ast.walk(tree) if tree else ():
            hits = []
            if isinstance(node, ast.ImportFrom) and node.module:
                hits = [n for k, n, _ in CAPABILITIES if k == "module" and node.module == n]
            elif isinstance(node, ast.Import):
                hits = [n for k, n, _ in CAPABILITIES for a in node.names if k == "module" and a.name == n]
            elif isinstance(node, ast.Call):
                hits = [n for k, n, _ in CAPABILITIES for kw in node.keywords if k == "keyword" and kw.arg == n]
            elif isinstance(node, ast.FunctionDef) and node.name == "train":
                hits = [n for k, n, _ in CAPABILITIES for a in node.args.args if k == "keyword" and a.arg == n]
            for name in hits:
                version = next(v for _, n, v in CAPABILITIES if n == name)
                where = f"{os.path.relpath(path, os.path.dirname(report.llava_dir))}:{node.lineno}"
                if not any(c[0] == name for c in report.capabilities):
                    report.capabilities.append((name, version, where))


def _py_files(root: str) -> List[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        out += [os.path.join(dirpath, n) for n in sorted(filenames) if n.endswith(".py")]
    return out


def _bound(report: ScanReport, tree, path: str, name: str):
    """``(node, file)`` binding ``name`` in the train module: its own top level, else (a fork layout) where a
    ``from X import name`` / ``from X import *`` brings it from (CoIN's saver comes from ``Base_trainer``)."""
    node = _top(tree, name)
    if (node is None or isinstance(node, ast.ImportFrom)) and report.layout and not report.layout.is_upstream:
        mod, found = binding(report.layout.checkout, report.layout.train, name)
        if found is not None:
            return found, report.layout.file(mod)
    return node, path


def _scan_train(report: ScanReport, root: str) -> None:
    path = report.train_file or report.roles.file(report.roles.train)
    tree = _parse(path)
    train = _top(tree, "train")
    if not isinstance(train, ast.FunctionDef):
        _res(report, "T0", "missing", path, train, "no top-level def train()")
    else:
        params, _ = _params(train)
        report.train_takes_attn = "attn_implementation" in params
        parser = "HfArgumentParser" in ast.unparse(train)
        extra = [p for p in params if p != "attn_implementation"]
        ok = parser and not any(p for p in extra if not _has_default(train, p))
        _res(report, "T0", "found" if ok else "changed", path, train,
             f"train({', '.join(params)})" + ("" if parser else "; no HfArgumentParser in its body"))
    for pid, name in (("T1", "TrainingArguments"), ("T1b", "ModelArguments")):
        cls = _top(tree, name)
        if not isinstance(cls, ast.ClassDef):
            _res(report, pid, "missing", path, cls, f"no top-level class {name}")
            continue
        good = _is_dataclass(cls)
        if pid == "T1":
            good = good and any("TrainingArguments" in ast.unparse(b) for b in cls.bases)
            detail = f"class {name}({', '.join(ast.unparse(b) for b in cls.bases)})"
        else:
            good = good and "pretrain_mm_mlp_adapter" in _fields(cls)
            detail = f"{len(_fields(cls))} fields" + ("" if good else "; no pretrain_mm_mlp_adapter field")
        _res(report, pid, "found" if good else "changed", path, cls, detail)
    binding = _top(tree, "LLaVATrainer")
    used = bool(isinstance(train, ast.FunctionDef) and _calls(train, "LLaVATrainer"))
    if binding is None:
        _res(report, "T2", "missing", path, None, "no module-level LLaVATrainer")
    else:
        _res(report, "T2", "found" if used else "changed", path, binding,
             "imported/defined at module level" + ("" if used else "; train() does not call LLaVATrainer(...)"))
    saver, saver_path = _bound(report, tree, path, "safe_save_model_for_hf_trainer")
    if not isinstance(saver, ast.FunctionDef):
        _res(report, "T3", "missing", path, saver, "no top-level def safe_save_model_for_hf_trainer")
    else:
        params, _ = _params(saver)
        called = bool(isinstance(train, ast.FunctionDef) and (_calls(train, "safe_save_model_for_hf_trainer") or any(
            isinstance(n, ast.Call) and getattr(n.func, "attr", "") == "save_trained_model"  # CoIN: the trainer saves
            for n in ast.walk(train))))
        has_mz3 = isinstance(_bound(report, tree, path, "maybe_zero_3")[0], ast.FunctionDef)
        ok = params[:2] == ["trainer", "output_dir"] and called and has_mz3
        why = [] if ok else [w for w, bad in (("parameters are not (trainer, output_dir)",
                                               params[:2] != ["trainer", "output_dir"]),
                                              ("train() does not call it", not called),
                                              ("no maybe_zero_3 beside it", not has_mz3)) if bad]
        via = "" if saver_path == path else f"; from {os.path.relpath(saver_path, report.roles.checkout)} (imported)"
        _res(report, "T3", "found" if ok else "changed", saver_path, saver,
             f"safe_save_model_for_hf_trainer({', '.join(params)})" + ("; " + "; ".join(why) if why else "") + via)


def _scan_sampler(report: ScanReport, root: str) -> None:
    fn = _top(_parse(report.roles.file(report.roles.trainer)), "get_modality_length_grouped_indices")
    if isinstance(fn, ast.FunctionDef):
        body = ast.unparse(fn)
        report.modality_sampler_single_ok = "all((l > 0" in body or "all(l > 0" in body


def _has_default(fn: ast.FunctionDef, name: str) -> bool:
    a = fn.args
    pos = a.posonlyargs + a.args
    n_def = len(a.defaults)
    for i, p in enumerate(pos):
        if p.arg == name:
            return i >= len(pos) - n_def
    for p, d in zip(a.kwonlyargs, a.kw_defaults):
        if p.arg == name:
            return d is not None
    return False


def _scan_eval(report: ScanReport, root: str) -> None:
    roles = report.roles
    path = roles.file(roles.builder)
    tree = _parse(path)
    fn = _top(tree, "load_pretrained_model")
    if tree is None:
        _res(report, "E4", "missing", path, None, f"{roles.builder} is missing or does not parse")
    else:
        _res(report, "E4", "found", path, None, "module parses")
    if not isinstance(fn, ast.FunctionDef):
        _res(report, "E1", "missing", path, fn, "no top-level def load_pretrained_model")
    else:
        params, kw = _params(fn)
        report.builder_flash = "use_flash_attn" in params
        ok = params[:3] == ["model_path", "model_base", "model_name"] and {"device_map", "device"} <= set(params)
        _res(report, "E1", "found" if ok else "changed", path, fn,
             f"load_pretrained_model({', '.join(params)}{', **kwargs' if kw else ''})")
    clip = _parse(roles.file(roles.encoder))
    tower = _top(clip, "CLIPVisionTower")
    if isinstance(tower, ast.ClassDef):
        load = next((n for n in tower.body if isinstance(n, ast.FunctionDef) and n.name == "load_model"), None)
        if load is not None:
            report.vision_load_takes_device_map = "device_map" in _params(load)[0]
    eval_dir = os.path.dirname(roles.file(roles.eval_package + ".x"))
    copies = []
    for name in sorted(os.listdir(eval_dir)) if os.path.isdir(eval_dir) else ():
        t = _parse(os.path.join(eval_dir, name)) if name.endswith(".py") else None
        node = _top(t, "load_pretrained_model")
        if isinstance(node, ast.ImportFrom) and node.module == roles.builder:
            copies.append(name[:-3])
    loader = os.path.join(eval_dir, "model_vqa_loader.py")
    if not roles.is_upstream and copies:  # a fork layout without upstream's names (CoIN): its first model_* script
        loader = os.path.join(eval_dir, ("model_vqa_loader" if "model_vqa_loader" in copies else next(
            (c for c in copies if c.startswith("model_")), copies[0])) + ".py")
        report.eval_script = f"{roles.eval_package}.{os.path.basename(loader)[:-3]}"
    if roles.is_upstream and not _is_eval_script(_parse(loader)):  # a fork without upstream's script (SEFE, CL-MoE)
        other = _other_eval_script(eval_dir, roles.builder)
        if other:
            loader = other
            rel = os.path.relpath(other, eval_dir)[:-3].replace(os.sep, ".")
            report.eval_script = f"{roles.eval_package}.{rel}"
    _res(report, "E2", "found" if copies else "missing", loader if copies else eval_dir, None,
         f"{len(copies)} eval modules copy the loader by value ({', '.join(copies[:4])}{'...' if len(copies) > 4 else ''})"
         if copies else f"no {roles.eval_package} module imports load_pretrained_model from {roles.builder}")
    t = _parse(loader)
    ev = _top(t, "eval_model")
    if not isinstance(ev, ast.FunctionDef):
        _res(report, "E3", "missing", loader, ev, f"no def eval_model in {os.path.relpath(loader, roles.checkout)}")
    else:
        ok = bool(_calls(ev, "load_pretrained_model")) and "__main__" in ast.unparse(t)
        _res(report, "E3", "found" if ok else "changed", loader, ev,
             "eval_model(args) calls load_pretrained_model" if ok else
             "eval_model does not call load_pretrained_model, or no __main__ block")


def _is_eval_script(tree: Optional[ast.Module]) -> bool:
    ev = _top(tree, "eval_model")
    return isinstance(ev, ast.FunctionDef) and bool(_calls(ev, "load_pretrained_model")) and \
        "__main__" in ast.unparse(tree)


def _other_eval_script(eval_dir: str, builder: str) -> Optional[str]:
    """The first ``model_*.py`` under ``eval_dir`` (subfolders too: SEFE's ``llava/eval/CoIN/``) that imports
    ``load_pretrained_model`` from ``builder`` and is an eval script (``eval_model`` calling it, a ``__main__``
    block): E3's role in a fork whose ``model_vqa_loader`` is gone or changed."""
    for dirpath, dirnames, filenames in os.walk(eval_dir):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(n for n in filenames if n.startswith("model_") and n.endswith(".py")):
            tree = _parse(os.path.join(dirpath, name))
            node = _top(tree, "load_pretrained_model")
            if isinstance(node, ast.ImportFrom) and node.module == builder and _is_eval_script(tree):
                return os.path.join(dirpath, name)
    return None


def llava_dir_in_use() -> str:
    """Directory of the ``llava`` package Python would import (found, not imported)."""
    spec = importlib.util.find_spec("llava")
    if spec is None or not spec.submodule_search_locations:
        raise UpstreamMismatch("no 'llava' package is importable: install llava-torch with --no-deps "
                               "(make setup / make setup-llava11) or put your fork's checkout on PYTHONPATH")
    return os.path.realpath(list(spec.submodule_search_locations)[0])


def scan_root(llava_dir: Optional[str] = None) -> str:
    """The ``llava/`` directory to scan: ``llava_dir`` (a package dir or a checkout holding ``llava/``)
    or the package in use."""
    root = os.path.realpath(llava_dir or llava_dir_in_use())
    if os.path.isdir(os.path.join(root, "llava")) and not os.path.isfile(os.path.join(root, "__init__.py")):
        root = os.path.join(root, "llava")  # a checkout's root was given
    return root


def _layout_files(layout: Layout) -> List[str]:
    """The files of a fork layout's LLaVA (the folders of its train, trainer, builder and eval modules, the
    builder's recursively): what the LLaVA code path can import, not the package's other models (CoIN's Qwen)."""
    files = []
    for module, deep in ((layout.train, False), (layout.trainer, False), (layout.builder, True),
                         (layout.eval_package + ".x", False)):
        folder = os.path.dirname(layout.file(module))
        files += _py_files(folder) if deep else [os.path.join(folder, n) for n in sorted(os.listdir(folder))
                                                 if n.endswith(".py")] if os.path.isdir(folder) else []
    return sorted(set(files))


def scan(llava_dir: Optional[str] = None, train_file: Optional[str] = None,
         layout: Optional[Layout] = None) -> ScanReport:
    """Every patch point of the ``llava`` package in ``llava_dir`` (default: the one in use); the T points in
    ``train_file`` (the module whose ``train()`` the fork runs) when given, else in ``llava/train/train.py``.
    ``layout`` (``layout.discover``): a fork whose LLaVA is not the package ``llava`` (CoIN's ``ETrain``); its
    modules are scanned in the roles of upstream's, and ``llava_dir``/``train_file`` are not used."""
    if layout is not None and not layout.is_upstream:
        root, train_file = os.path.realpath(layout.package_dir), layout.file(layout.train)
        report = ScanReport(root, train_file=os.path.realpath(train_file), layout=layout)
        _scan_capabilities(report, _layout_files(layout))
    else:
        root = scan_root(llava_dir)
        report = ScanReport(root, train_file=os.path.realpath(train_file) if train_file else "")
        _scan_capabilities(report, _py_files(root) + ([train_file] if train_file else []))
    _scan_train(report, root)
    _scan_sampler(report, root)
    _scan_eval(report, root)
    order = [p.id for p in POINTS]
    report.results.sort(key=lambda r: order.index(r.point.id))
    return report


def installed_llava_dir() -> Optional[str]:
    """``llava/`` of the installed llava-torch distribution, or None."""
    from importlib import metadata

    try:
        dist = metadata.distribution("llava-torch")
    except metadata.PackageNotFoundError:
        return None
    return os.path.realpath(str(dist.locate_file("llava")))


@dataclass(frozen=True)
class Selection:
    line: UpstreamLine
    report: ScanReport
    requires: Dict[str, str]
    is_fork: bool
    reason: str = ""  # why this line (ScanReport.line_and_reason)

    def check_environment(self) -> None:
        """Refuse (``PatchVersionError``, one line) an environment without the line's versions, saying which line
        the code needs, why, and which environment has it (``LLAVA_DYMOE_SKIP_VERSION_CHECK=1`` tries anyway)."""
        from ._base import check_versions

        check_versions(self.requires, context=f"this llava needs {self.line.describe()} because {self.reason} "
                                              f"(environment: {self.line.venv}, `{self.line.make_setup}`)")


def symbol_in(point: PatchPoint, layout: Optional[Layout], eval_script: str = "") -> str:
    """The point's symbol under ``layout``'s module names (``ETrain.Models.LLaVA.builder:load_pretrained_model``)."""
    if layout is None:
        return point.symbol
    module, sep, attr = point.symbol.partition(":")
    for old, new in (("llava.train.train", layout.train), ("llava.model.builder", layout.builder),
                     ("llava.eval.model_vqa_loader", eval_script or layout.eval_package + ".model_vqa_loader"),
                     ("llava.eval", layout.eval_package)):
        if module == old or module.startswith(old + "."):
            return new + module[len(old):] + sep + attr
    return point.symbol


def mismatch_message(r: PointResult, line: UpstreamLine, train_module: str = "llava.train.train",
                     layout: Optional[Layout] = None) -> str:
    state = "is missing" if r.status == "missing" else "is not what llava_dymoe expects"
    symbol = symbol_in(r.point, layout or upstream("", train_module))
    return (f"patch point {r.point.id}: {symbol} {state} ({r.detail}); llava_dymoe expects {r.point.expects}. "
            f"Look at {r.path}" + (f" line {r.line}" if r.line else "") + f" and compare it with llava-torch "
            f"{line.llava_torch}; `python -m llava_dymoe.autopatch check` lists every patch point")


def module_file(module: str) -> str:
    """The source file of ``module`` (``llava.train.train_MOE``), found without importing it or its package."""
    top, _, rest = module.partition(".")
    root = os.path.dirname(llava_dir_in_use()) if top == "llava" else None
    if root is None:
        spec = importlib.util.find_spec(top)
        if spec is None or not spec.submodule_search_locations:
            raise UpstreamMismatch(f"--train_module {module}: package {top!r} is not importable (put the fork's "
                                   "checkout first on PYTHONPATH)")
        root = os.path.dirname(os.path.realpath(list(spec.submodule_search_locations)[0]))
    path = os.path.join(root, *module.split(".")) + ".py"
    if not os.path.isfile(path):
        raise UpstreamMismatch(f"--train_module {module}: no file {path} (`python -m llava_dymoe.autopatch check` "
                               "names the module the fork's scripts run)")
    return path


def layout_of(train_module: str = "llava.train.train", eval_module: Optional[str] = None) -> Optional[Layout]:
    """The layout (``layout.discover``) of an importable fork package that is not ``llava`` (CoIN's ``ETrain``),
    from the module that runs; None for ``llava.*`` modules."""
    module = eval_module if eval_module and not eval_module.startswith("llava.") else train_module
    if module.split(".")[0] == "llava":
        return None
    module_file(module)  # a clear refusal when the package or the module cannot be found
    checkout = checkout_of(module.split(".")[0])
    return discover(checkout, train=None if module == eval_module else train_module, eval_module=eval_module)


def select_line(side: Optional[str] = None, llava_dir: Optional[str] = None,
                train_module: str = "llava.train.train", eval_module: Optional[str] = None) -> Selection:
    """The line of the ``llava`` in use and the requirements for its patch sets; the T points are looked for in
    ``train_module`` (the module whose ``train()`` runs).  A module of a fork package not named ``llava``
    (``ETrain.Train.LLaVA.train``; for the eval side ``eval_module``, e.g. ``ETrain.Eval.LLaVA.CoIN.model_vqa``)
    is scanned in that fork's layout (``layout.py``).

    Raises :class:`UpstreamMismatch` for the first ``REQUIRED`` patch point of ``side`` ("train",
    "eval" or both) that is missing or changed."""
    layout = layout_of(train_module, eval_module)
    if layout is not None:
        report = scan(layout=layout)
    else:
        report = scan(llava_dir, train_file=None if train_module == "llava.train.train" else module_file(train_module))
    line, reason = report.line_and_reason
    needed = [pid for sd, ids in REQUIRED.items() if side in (None, sd) for pid in ids]
    for r in report.results:
        if r.point.id in needed and r.status != "found":
            raise UpstreamMismatch(mismatch_message(r, line, train_module, layout))
    installed = installed_llava_dir()
    is_fork = installed is None or installed != report.llava_dir
    requires = {"transformers": f"=={line.transformers}"}
    if not is_fork:
        requires = {"llava-torch": f"=={line.llava_torch}", **requires}
    logger.info("upstream: %s (%s) by the symbols of %s%s", line.describe(), reason, report.llava_dir,
                " (not the installed llava-torch: a fork, judged by its symbols)" if is_fork else "")
    return Selection(line, report, requires, is_fork, reason)


# -- the call sites that differ by line ----------------------------------------------------------------
def train_call_kwargs(line: UpstreamLine, attn: Optional[str], takes_attn: Optional[bool] = None) -> Dict[str, str]:
    """Keyword arguments for the ``train()`` that runs.  ``takes_attn``: whether that ``train()`` has an
    ``attn_implementation`` parameter (``ScanReport.train_takes_attn``; default: the line's upstream signature).
    A fork on the 1.2 line may keep a 1.1-style ``train()`` (MCITlib's SEFE), so the fork's own signature
    decides.  Without the parameter, on the 1.1 line ``--attn_implementation flash_attention_2`` applies LLaVA
    1.1's own monkeypatch (what its ``train_mem.py`` does)."""
    takes_attn = line.train_takes_attn if takes_attn is None else takes_attn
    if takes_attn:
        return {"attn_implementation": attn}
    if attn == "flash_attention_2" and not line.train_takes_attn:
        from llava.train.llama_flash_attn_monkey_patch import replace_llama_attn_with_flash_attn

        replace_llama_attn_with_flash_attn()
    elif attn not in (None, "eager"):
        where = (f"{line.describe()} does not have (transformers {line.transformers} attention is eager); drop the "
                 "flag, or use flash_attention_2 (LLaVA 1.1's monkeypatch)") if not line.train_takes_attn else (
                 "this fork's train() does not have (it keeps the 1.1 signature on the "
                 f"{line.describe()}); drop the flag")
        raise UpstreamMismatch(f"--attn_implementation {attn} needs train(attn_implementation=...), which {where}")
    return {}


def check_train_flags(line: UpstreamLine, argv: Sequence[str]) -> None:
    """Refuse flags whose effect the line cannot give (instead of silently ignoring them)."""
    for i, arg in enumerate(argv):
        value = argv[i + 1] if arg == "--dymoe_use_reentrant" and i + 1 < len(argv) else (
            arg.split("=", 1)[1] if arg.startswith("--dymoe_use_reentrant=") else None)
        if value is not None and value.strip().lower() in ("false", "0", "no") and not line.train_takes_attn:
            raise UpstreamMismatch(f"--dymoe_use_reentrant False needs TrainingArguments."
                                   f"gradient_checkpointing_kwargs (transformers >= 4.35); {line.describe()} "
                                   "always checkpoints with use_reentrant=True. Drop the flag (reentrant is the "
                                   "default and works with every ZeRO stage)")


def generator_takes_max_new_tokens(module: str, llava_dir: Optional[str] = None) -> bool:
    """Whether the eval generator ``module`` (``llava.eval.X``) has a ``--max_new_tokens`` flag: 1.2's
    ``model_vqa_loader`` has; 1.1.1's hard-codes 128 new tokens (and model_vqa/_science 1024 on both)."""
    if not module.startswith("llava."):
        return False
    try:
        root = os.path.dirname(scan_root(llava_dir))
    except UpstreamMismatch:
        return False
    path = os.path.join(root, *module.split(".")) + ".py"
    try:
        with open(path, encoding="utf-8") as f:
            return "--max_new_tokens" in f.read()
    except OSError:
        return False


def load_vision_tower(vision_tower, device_map) -> None:
    """``vision_tower.load_model(device_map=...)`` on the 1.2 line, ``load_model()`` on the 1.1 line."""
    import inspect

    if "device_map" in inspect.signature(vision_tower.load_model).parameters:
        vision_tower.load_model(device_map=device_map)
    else:
        vision_tower.load_model()
