"""Generic patch machinery: declarative ``Patch`` targets grouped in a revertible ``PatchSet``.

Why a small hand-written ledger instead of ad-hoc ``setattr`` calls (style.md §4.5, §6.6): every
upstream symbol we replace must be (1) applied only when an entry point asks for it, (2) refused
on an upstream version it was not written for, (3) idempotent, (4) revertible as a group without
clobbering somebody else's later patch, (5) complete, i.e. also rebound where LLaVA copied it
with ``from x import y``, and (6) loud: a missing target raises, every change is logged.

    from llava_dymoe.patches._base import Patch, PatchSet

    def make(original):
        def replacement(*args, **kwargs):
            return original(*args, **kwargs)
        return replacement

    ps = PatchSet("demo", [Patch("llava.model.builder:load_pretrained_model", make,
                                 rebind_by_value=True)])
    with ps:          # or ps.apply() ... ps.revert()
        ...

Importing this module changes nothing.
"""
from __future__ import annotations

import importlib
import inspect
import logging
import os
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from llava_dymoe import SUPPORTED_LLAVA_TORCH, SUPPORTED_TRANSFORMERS
from llava_dymoe.errors import DyMoEError

logger = logging.getLogger("llava_dymoe.patches")

#: Marker set on every replacement; a target whose current value carries it is not patched again.
SENTINEL = "__llava_dymoe_patched__"
#: Set to 1 to run against unsupported upstream versions anyway (a warning is logged).
SKIP_ENV = "LLAVA_DYMOE_SKIP_VERSION_CHECK"
#: The upstream stack every llava-facing patch was written and tested against.
UPSTREAM_REQUIREMENTS: Dict[str, str] = {"llava-torch": f"=={SUPPORTED_LLAVA_TORCH}",
                                          "transformers": f"=={SUPPORTED_TRANSFORMERS}"}
#: Packages whose modules are swept for by-value copies (``from llava.x import y``).
BY_VALUE_PACKAGES: Tuple[str, ...] = ("llava",)
#: Distributions that must be installed without their (stale) dependency pins (README).
_NO_DEPS = {"llava-torch"}
_MISSING = object()
_LOCK = threading.RLock()
_APPLIED: List["PatchSet"] = []


class PatchError(RuntimeError):
    """Base class of the patch machinery's errors."""


class PatchVersionError(PatchError):
    """The installed upstream version is not the one a patch set was written for."""


class PatchTargetMissing(PatchError):
    """A patch target (module or attribute) does not exist in the installed upstream."""


class ForkImportError(PatchTargetMissing, DyMoEError):
    """A patch target's module fails to import inside the fork's own code (one line: module, file, package)."""

    def __init__(self, message: str, details: Optional[str] = None):
        DyMoEError.__init__(self, message, details)


def _installed_version(dist: str) -> Optional[str]:
    """Installed version of a distribution, or None (tests monkeypatch this function)."""
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _fmt_requires(requires: Mapping[str, str]) -> str:
    return ", ".join(f"{d}{s}" for d, s in requires.items()) or "any version"


def _fix_hint(dist: str, spec: str) -> str:
    req = f"{dist}{spec}" if spec.startswith("==") else f'"{dist}{spec}"'
    return f"pip install {'--no-deps ' if dist in _NO_DEPS else ''}{req}"


def check_versions(requires: Mapping[str, str], context: str = "llava_dymoe") -> None:
    """Raise :class:`PatchVersionError` unless every distribution satisfies its specifier."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion

    problems, fixes = [], []
    for dist, spec in requires.items():
        have = _installed_version(dist)
        try:
            ok = have is not None and SpecifierSet(spec).contains(have, prereleases=True)
        except InvalidVersion:
            ok = False
        if not ok:
            problems.append(f"{dist} {have or '(not installed)'} (supported: {dist}{spec})")
            fixes.append(_fix_hint(dist, spec))
    if not problems:
        return
    msg = (f"{context}: patches were written for {_fmt_requires(requires)}, but this environment has "
           f"{'; '.join(problems)}. Fix: {' && '.join(fixes)}")
    if os.environ.get(SKIP_ENV) == "1":
        logger.warning("%s. Continuing because %s=1 (unsupported; results may be wrong).", msg, SKIP_ENV)
        return
    raise PatchVersionError(f"{msg}. To try anyway (unsupported), set {SKIP_ENV}=1.")


def is_ours(obj: Any) -> bool:
    """True when ``obj`` is a replacement made by this machinery (own attribute, not inherited)."""
    try:
        return bool(vars(obj).get(SENTINEL, False))
    except TypeError:  # no __dict__ (builtins, slots): cannot be ours
        return False


@dataclass(frozen=True)
class Patch:
    """One replacement: ``target`` is ``"package.module:attr"`` or ``"package.module:Class.attr"``.

    ``make(original) -> replacement`` receives the current upstream object; the replacement gets
    ``__llava_dymoe_patched__ = True`` and ``__wrapped__ = original``.  ``rebind_by_value`` also
    rebinds copies of a module-level attribute in already-imported ``llava.*`` modules.
    """

    target: str
    make: Callable[[Any], Any]
    rebind_by_value: bool = False
    description: str = ""
    #: packages swept for by-value copies besides ``llava`` (a fork's own, e.g. CoIN's ``ETrain``)
    sweep_packages: Tuple[str, ...] = ()

    def __post_init__(self):
        module, sep, attr = self.target.partition(":")
        if not sep or not module or not attr:
            raise ValueError(f"patch target {self.target!r} must look like 'package.module:attr.path'")
        if self.rebind_by_value and "." in attr:
            raise ValueError(f"{self.target}: rebind_by_value only applies to module-level attributes")

    @property
    def module_name(self) -> str:
        return self.target.partition(":")[0]

    @property
    def attr_path(self) -> Tuple[str, ...]:
        return tuple(self.target.partition(":")[2].split("."))


@dataclass
class _Record:
    """One applied rebind, kept for revert (the mlflow-style ledger)."""

    label: str
    owner: Any
    attr: str
    original: Any
    replacement: Any
    had_own: bool  # False: the attribute was inherited/lazy; revert deletes instead of setting
    sweep: Tuple[str, ...] = ()  # on revert, also point late by-value copies in these packages back


def _current(owner: Any, attr: str) -> Any:
    # Classes: the raw class-dict value (keeps staticmethod/descriptor identity); modules: getattr,
    # so lazily exported attributes (module __getattr__) resolve too.
    if inspect.isclass(owner):
        return inspect.getattr_static(owner, attr, _MISSING)
    return getattr(owner, attr, _MISSING)


def _owns(owner: Any, attr: str) -> bool:
    try:
        return attr in vars(owner)
    except TypeError:
        return False


def _mod_dict(mod: Any) -> dict:
    return getattr(mod, "__dict__", None) or {}  # sys.modules may hold None or odd objects


def _in_swept_package(name: str, packages: Tuple[str, ...] = BY_VALUE_PACKAGES) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


@dataclass(eq=False)
class PatchSet:
    """A named group of patches applied and reverted together (``with ps:`` for scoped use)."""

    name: str
    patches: Sequence[Patch]
    requires: Optional[Mapping[str, str]] = None  # None: UPSTREAM_REQUIREMENTS; {}: no check
    _records: List[_Record] = field(default_factory=list, init=False, repr=False)
    _active: bool = field(default=False, init=False, repr=False)

    def __post_init__(self):
        self.patches = tuple(self.patches)
        self.requires = dict(UPSTREAM_REQUIREMENTS if self.requires is None else self.requires)

    @property
    def applied(self) -> bool:
        return self._active

    @property
    def targets(self) -> Tuple[str, ...]:
        return tuple(p.target for p in self.patches)

    @property
    def rebound(self) -> Tuple[str, ...]:
        """Every place this set actually changed (``module:attr``), in apply order."""
        return tuple(r.label for r in self._records)

    # -- resolution -----------------------------------------------------------------------------
    def _missing(self, patch: Patch, why: str) -> PatchTargetMissing:
        have = ", ".join(f"{d} {_installed_version(d) or '(not installed)'}" for d in self.requires)
        return PatchTargetMissing(
            f"cannot resolve patch target {patch.target!r} (patch set {self.name!r}): {why}. The patch "
            f"was written for {_fmt_requires(self.requires)}" + (f" (installed: {have})" if have else "")
            + "; upstream probably moved or renamed it. Install the supported versions, or update the "
            "patch and patches/LEDGER.md.")

    def _resolve(self, patch: Patch) -> Tuple[Any, str, Any]:
        try:
            owner: Any = importlib.import_module(patch.module_name)
        except ImportError as exc:
            from .import_failure import explain_import_failure

            why = explain_import_failure(exc, patch.module_name)
            if why is not None:  # the fork's own import chain fails: not a moved patch target
                raise ForkImportError(f"{why} (patch set {self.name!r}, target {patch.target!r})") from exc
            raise self._missing(patch, f"module {patch.module_name!r} cannot be imported ({exc})") from exc
        *path, attr = patch.attr_path
        for part in path:
            owner = getattr(owner, part, _MISSING)
            if owner is _MISSING:
                raise self._missing(patch, f"{patch.module_name!r} has no attribute path {'.'.join(path)!r}")
        original = _current(owner, attr)
        if original is _MISSING:
            raise self._missing(patch, f"{getattr(owner, '__name__', owner)!r} has no attribute {attr!r}")
        return owner, attr, original

    # -- apply / revert ---------------------------------------------------------------------------
    def _rebind(self, label: str, owner: Any, attr: str, original: Any, replacement: Any,
                sweep: Tuple[str, ...] = ()) -> None:
        self._records.append(_Record(label, owner, attr, original, replacement, _owns(owner, attr), sweep))
        setattr(owner, attr, replacement)

    def apply(self) -> "PatchSet":
        """Version guard, resolve every target (all or nothing), then rebind. Idempotent."""
        with _LOCK:
            if self._active:
                logger.debug("patch set %r already applied; nothing to do", self.name)
                return self
            check_versions(self.requires, context=f"patch set {self.name!r}")
            resolved = [(p, *self._resolve(p)) for p in self.patches]
            try:
                for patch, owner, attr, original in resolved:
                    self._apply_one(patch, owner, attr, original)
            except BaseException:
                self._undo(quiet=True)
                raise
            self._active = True
            _APPLIED.append(self)
            logger.info("applied patch set %r: %s", self.name, ", ".join(self.rebound) or "(nothing new)")
            return self

    def _apply_one(self, patch: Patch, owner: Any, attr: str, original: Any) -> None:
        if is_ours(original):
            logger.info("%s is already patched by llava_dymoe; leaving it as is", patch.target)
            return
        replacement = patch.make(original)
        if replacement is original:
            raise PatchError(f"{patch.target}: make() returned the original object unchanged")
        try:
            setattr(replacement, SENTINEL, True)
            setattr(replacement, "__wrapped__", original)
        except (AttributeError, TypeError) as exc:
            raise PatchError(f"{patch.target}: the replacement must accept attributes "
                             f"(wrap it in a Python function): {exc}") from exc
        packages = BY_VALUE_PACKAGES + tuple(patch.sweep_packages) if patch.rebind_by_value else ()
        self._rebind(patch.target, owner, attr, original, replacement, sweep=packages)
        logger.info("patched %s%s", patch.target, f" ({patch.description})" if patch.description else "")
        if patch.rebind_by_value:
            for mod_name, mod in list(sys.modules.items()):
                if (mod is owner or not _in_swept_package(mod_name, packages)
                        or _mod_dict(mod).get(attr, _MISSING) is not original):
                    continue
                self._rebind(f"{mod_name}:{attr}", mod, attr, original, replacement)
                logger.info("rebound by-value copy %s:%s", mod_name, attr)

    def revert(self) -> None:
        """Restore originals in reverse order, only where our replacement is still in place."""
        with _LOCK:
            if not self._active:
                logger.debug("patch set %r is not applied; nothing to revert", self.name)
                return
            self._undo(quiet=False)
            self._active = False
            if self in _APPLIED:
                _APPLIED.remove(self)

    def _undo(self, quiet: bool) -> None:
        restored = []
        for rec in reversed(self._records):
            now = _current(rec.owner, rec.attr)
            if now is not rec.replacement:
                logger.warning("not restoring %s: it was re-patched by someone else after llava_dymoe "
                               "(now %r); leaving their value in place", rec.label, now)
                continue
            if rec.had_own:
                setattr(rec.owner, rec.attr, rec.original)
            else:
                delattr(rec.owner, rec.attr)
            restored.append(rec.label)
            if rec.sweep:  # modules imported while we were active copied the replacement by value
                for mod_name, mod in list(sys.modules.items()):
                    if (_in_swept_package(mod_name, rec.sweep)
                            and _mod_dict(mod).get(rec.attr, _MISSING) is rec.replacement):
                        setattr(mod, rec.attr, rec.original)
                        restored.append(f"{mod_name}:{rec.attr}")
        self._records.clear()
        if not quiet:
            logger.info("reverted patch set %r: %s", self.name, ", ".join(restored) or "(nothing)")

    def __enter__(self) -> "PatchSet":
        return self.apply()

    def __exit__(self, *exc) -> None:
        self.revert()

    def __repr__(self) -> str:
        return f"PatchSet({self.name!r}, applied={self._active}, targets={list(self.targets)})"


def applied_patch_sets() -> Tuple[PatchSet, ...]:
    """Patch sets currently applied in this process, oldest first (for diagnostics)."""
    with _LOCK:
        return tuple(_APPLIED)
