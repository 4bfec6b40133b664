"""The patch mechanism on STUB modules: a fake ``llava`` package lives in ``sys.modules``."""
import inspect
import logging
import subprocess
import sys
import types

import pytest

from llava_dymoe.patches import _base
from llava_dymoe.patches._base import (SENTINEL, Patch, PatchError, PatchSet, PatchTargetMissing,
                                       PatchVersionError, applied_patch_sets, is_ours)

GOOD = {"llava-torch": "1.2.2.post1", "transformers": "4.37.2"}
TARGET = "llava.model.builder:load_pretrained_model"


def original_loader(model_path, model_base, model_name, device="cuda"):
    return ("upstream", model_path)


def _module(monkeypatch, name, **attrs):
    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)
    monkeypatch.setitem(sys.modules, name, mod)
    return mod


@pytest.fixture
def stubs(monkeypatch):
    """Fake llava with a builder and an eval module holding a by-value copy of the loader."""
    monkeypatch.delenv(_base.SKIP_ENV, raising=False)
    versions = dict(GOOD)
    monkeypatch.setattr(_base, "_installed_version", lambda dist: versions.get(dist))
    ns = types.SimpleNamespace(versions=versions)
    ns.llava = _module(monkeypatch, "llava")
    ns.model = _module(monkeypatch, "llava.model")
    ns.builder = _module(monkeypatch, "llava.model.builder", load_pretrained_model=original_loader)
    ns.eval = _module(monkeypatch, "llava.eval")
    ns.fake = _module(monkeypatch, "llava.eval.fake", load_pretrained_model=original_loader)
    # look-alikes that must NOT be swept: a sibling package whose name merely starts with "llava"
    ns.lookalike = _module(monkeypatch, "llava_dymoe_lookalike", load_pretrained_model=original_loader)
    ns.other = _module(monkeypatch, "otherpkg.mod", load_pretrained_model=original_loader)
    yield ns
    assert not applied_patch_sets(), "a test left a patch set applied"


def _wrapping(original):
    def replacement(*args, **kwargs):
        return ("patched",) + original(*args, **kwargs)[1:]
    return replacement


def test_apply_marks_logs_and_revert_restores(stubs, caplog):
    caplog.set_level(logging.INFO, logger="llava_dymoe.patches")
    ps = PatchSet("t", [Patch(TARGET, _wrapping, description="stub")])
    assert not ps.applied and "llava.model.builder" in repr(ps)
    with ps:
        new = stubs.builder.load_pretrained_model
        assert ps.applied and applied_patch_sets() == (ps,)
        assert new("p", None, "n") == ("patched", "p")
        assert getattr(new, SENTINEL) is True and new.__wrapped__ is original_loader and is_ours(new)
        assert stubs.fake.load_pretrained_model is original_loader  # not by value: untouched
    assert stubs.builder.load_pretrained_model is original_loader and not ps.applied
    assert applied_patch_sets() == ()
    text = caplog.text
    assert f"patched {TARGET} (stub)" in text and "applied patch set 't'" in text
    assert f"reverted patch set 't': {TARGET}" in text


def test_apply_is_idempotent_within_and_across_sets(stubs):
    calls = []

    def make(original):
        calls.append(original)
        return _wrapping(original)

    first = PatchSet("first", [Patch(TARGET, make)]).apply()
    replacement = stubs.builder.load_pretrained_model
    assert first.apply() is first and len(calls) == 1
    second = PatchSet("second", [Patch(TARGET, make)]).apply()  # sees our sentinel: no-op
    assert len(calls) == 1 and second.rebound == () and stubs.builder.load_pretrained_model is replacement
    second.revert()
    assert stubs.builder.load_pretrained_model is replacement  # the first set still owns it
    first.revert()
    first.revert()  # reverting twice is harmless
    assert stubs.builder.load_pretrained_model is original_loader
    assert replacement.__wrapped__ is original_loader  # never a wrapper of a wrapper


def test_by_value_sweep_only_llava_modules_and_revert(stubs, monkeypatch):
    ps = PatchSet("e", [Patch(TARGET, _wrapping, rebind_by_value=True)]).apply()
    new = stubs.builder.load_pretrained_model
    assert stubs.fake.load_pretrained_model is new
    assert ps.rebound == (TARGET, "llava.eval.fake:load_pretrained_model")
    assert stubs.lookalike.load_pretrained_model is original_loader
    assert stubs.other.load_pretrained_model is original_loader
    # a module imported while patched copies the replacement; revert points it back too
    late = _module(monkeypatch, "llava.eval.late", load_pretrained_model=new)
    ps.revert()
    for mod in (stubs.builder, stubs.fake, late):
        assert mod.load_pretrained_model is original_loader


def test_version_mismatch_error_names_versions_and_fix(stubs):
    stubs.versions.update({"llava-torch": "1.2.1", "transformers": "4.38.0"})
    with pytest.raises(PatchVersionError) as err:
        PatchSet("eval", [Patch(TARGET, _wrapping)]).apply()
    msg = str(err.value)
    for part in ("patch set 'eval'", "llava-torch 1.2.1", "llava-torch==1.2.2.post1", "transformers 4.38.0",
                 "pip install --no-deps llava-torch==1.2.2.post1", "pip install transformers==4.37.2",
                 "LLAVA_DYMOE_SKIP_VERSION_CHECK=1"):
        assert part in msg, (part, msg)
    assert stubs.builder.load_pretrained_model is original_loader and not applied_patch_sets()
    del stubs.versions["transformers"]
    with pytest.raises(PatchVersionError, match=r"transformers \(not installed\)"):
        PatchSet("eval", [Patch(TARGET, _wrapping)]).apply()


def test_skip_version_check_env_warns_and_applies(stubs, monkeypatch, caplog):
    stubs.versions["llava-torch"] = "1.1.3"
    monkeypatch.setenv(_base.SKIP_ENV, "1")
    with caplog.at_level(logging.WARNING, logger="llava_dymoe.patches"):
        with PatchSet("eval", [Patch(TARGET, _wrapping)]):
            assert is_ours(stubs.builder.load_pretrained_model)
    assert "llava-torch 1.1.3" in caplog.text and "unsupported" in caplog.text


@pytest.mark.parametrize("target, why", [
    ("llava.model.nowhere:load_pretrained_model", "module 'llava.model.nowhere' cannot be imported"),
    ("llava.model.builder:renamed_loader", "has no attribute 'renamed_loader'"),
    ("llava.model.builder:Missing.method", "no attribute path 'Missing'"),
])
def test_missing_target_error_and_all_or_nothing(stubs, target, why):
    ps = PatchSet("eval", [Patch(TARGET, _wrapping), Patch(target, _wrapping)])
    with pytest.raises(PatchTargetMissing) as err:
        ps.apply()
    msg = str(err.value)
    assert repr(target) in msg and why in msg and "llava-torch==1.2.2.post1" in msg, msg
    assert "installed: llava-torch 1.2.2.post1" in msg
    assert stubs.builder.load_pretrained_model is original_loader and not ps.applied


def test_failing_make_rolls_back_earlier_patches(stubs):
    def boom(original):
        raise RuntimeError("make failed")

    stubs.builder.other = lambda: None
    ps = PatchSet("eval", [Patch(TARGET, _wrapping, rebind_by_value=True),
                           Patch("llava.model.builder:other", boom)])
    with pytest.raises(RuntimeError, match="make failed"):
        ps.apply()
    assert stubs.builder.load_pretrained_model is original_loader
    assert stubs.fake.load_pretrained_model is original_loader and not ps.applied


def test_revert_leaves_someone_elses_patch_in_place(stubs, caplog):
    ps = PatchSet("eval", [Patch(TARGET, _wrapping)]).apply()

    def theirs(*a, **k):
        return "theirs"

    stubs.builder.load_pretrained_model = theirs
    with caplog.at_level(logging.WARNING, logger="llava_dymoe.patches"):
        ps.revert()
    assert stubs.builder.load_pretrained_model is theirs and not ps.applied
    assert f"not restoring {TARGET}: it was re-patched by someone else" in caplog.text


def test_class_attribute_inherited_is_deleted_not_shadowed(stubs):
    class Base:
        def method(self):
            return "base"

    class Sub(Base):
        pass

    stubs.builder.Sub = Sub
    with PatchSet("cls", [Patch("llava.model.builder:Sub.method", lambda orig: lambda self: "ours")],
                  requires={}):
        assert Sub().method() == "ours" and Base().method() == "base"
    assert "method" not in vars(Sub) and Sub().method() == "base"


def test_patch_validation_and_replacement_contract(stubs):
    with pytest.raises(ValueError, match="must look like"):
        Patch("llava.model.builder.load_pretrained_model", _wrapping)
    with pytest.raises(ValueError, match="module-level"):
        Patch("llava.model.builder:Cls.attr", _wrapping, rebind_by_value=True)
    with pytest.raises(PatchError, match="unchanged"):
        PatchSet("x", [Patch(TARGET, lambda orig: orig)]).apply()
    with pytest.raises(PatchError, match="accept attributes"):
        PatchSet("x", [Patch(TARGET, lambda orig: len)]).apply()
    assert stubs.builder.load_pretrained_model is original_loader


def test_importing_never_patches():
    code = ("import sys, llava_dymoe.patches._base, llava_dymoe.patches.eval, llava_dymoe.patches.cpu_remap, "
            "llava_dymoe.eval, llava_dymoe.eval.shim, llava_dymoe.autopatch\n"
            "heavy = [m for m in ('torch', 'llava', 'transformers') if m in sys.modules]\n"
            "assert not heavy, heavy\n"
            "assert not llava_dymoe.patches._base.applied_patch_sets()\n")
    env = {k: v for k, v in __import__("os").environ.items() if k != "LLAVA_DYMOE"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr


def test_wrapper_signature_follows_original(stubs):
    with PatchSet("e", [Patch(TARGET, _wrapping)]):
        assert inspect.signature(stubs.builder.load_pretrained_model) == inspect.signature(original_loader)
