"""A fork module that fails to import in its own code is named with the failing import and the missing package
(issue 28 item 6), instead of "upstream probably moved or renamed it"."""
import sys
import textwrap

import pytest

from llava_dymoe.patches._base import ForkImportError, Patch, PatchSet, PatchTargetMissing


def _write(root, rel, text):
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def fork(tmp_path, monkeypatch):
    """A package laid out like DISCO's: train.py imports a vendored peft whose adalora imports Linear8bitLt,
    which lora.py defines only under ``if is_bnb_available():``."""
    name = f"fork_{tmp_path.name.replace('-', '_')}"
    pkg = tmp_path / name
    for sub in ("", "train", "peft_v", "peft_v/tuners"):
        _write(pkg, f"{sub}/__init__.py".lstrip("/"), "")
    _write(pkg, "peft_v/import_utils.py", """
        import importlib.util
        def is_bnb_available():
            return importlib.util.find_spec("bitsandbytes_not_here_xyz") is not None
    """)
    _write(pkg, "peft_v/tuners/lora.py", """
        from ..import_utils import is_bnb_available
        class Linear:
            pass
        if is_bnb_available():
            class Linear8bitLt(Linear):
                pass
    """)
    adalora = _write(pkg, "peft_v/tuners/adalora.py", """
        from .lora import Linear
        from .lora import Linear8bitLt
    """)
    _write(pkg, "train/train.py", f"""
        from {name}.peft_v.tuners.adalora import Linear
        def train():
            pass
    """)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name, pkg, adalora
    for mod in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[mod]


def _apply(target):
    PatchSet("train", [Patch(target, lambda original: original)], requires={}).apply()


def test_a_name_defined_only_with_an_optional_package_names_module_file_and_package(fork):
    name, pkg, adalora = fork
    with pytest.raises(ForkImportError) as info:
        _apply(f"{name}.train.train:train")
    msg = str(info.value)
    assert f"module '{name}.train.train' cannot be imported" in msg
    assert "adalora.py:3" in msg and "from .lora import Linear8bitLt" in msg
    assert "only when bitsandbytes is installed (pip install bitsandbytes" in msg
    assert "probably moved" not in msg and "\n" not in msg


def test_a_missing_package_is_named_with_its_pip_name(fork):
    name, pkg, adalora = fork
    adalora.write_text("import sklearn_missing_xyz\nfrom .lora import Linear\n")
    with pytest.raises(ForkImportError) as info:
        _apply(f"{name}.train.train:train")
    msg = str(info.value)
    assert "adalora.py:1 (`import sklearn_missing_xyz`)" in msg
    assert "package 'sklearn_missing_xyz' is not installed (pip install sklearn-missing-xyz)" in msg


def test_a_missing_target_module_keeps_the_moved_or_renamed_message(fork):
    name, pkg, adalora = fork
    with pytest.raises(PatchTargetMissing) as info:
        _apply(f"{name}.train.train_gone:train")
    assert not isinstance(info.value, ForkImportError)
    assert "probably moved or renamed" in str(info.value)
