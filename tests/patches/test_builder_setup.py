"""Setup calls a fork's builder makes on the model (MCITlib's DISCO/HiDe: ``model.set_clip_tokenizer``), which a
DyMoE checkpoint rebuilt by llava_dymoe's loader does not get: the check names them, and one that gives the model
an attribute its ``__init__`` does not set makes the run-time plugin not fit (the fork matrix of issue 28: DISCO's
eval of a DyMoE checkpoint failed on ``self.tokenizer``)."""
import ast
import shutil

import pytest

from fork_fixtures import make_fork
from llava_dymoe import autopatch
from llava_dymoe.patches import lines
from llava_dymoe.patches.builder_setup import UPSTREAM_BUILDER_MODEL_CALLS, builder_setup

pytestmark = [pytest.mark.llava11,
              pytest.mark.skipif(shutil.which("patch") is None, reason="GNU patch is not installed")]


def test_the_frozen_upstream_calls_are_the_installed_builders():
    path = f"{lines.llava_dir_in_use()}/model/builder.py"
    fn = next(n for n in ast.parse(open(path).read()).body
              if isinstance(n, ast.FunctionDef) and n.name == "load_pretrained_model")
    calls = {n.func.attr for n in ast.walk(fn) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
             and isinstance(n.func.value, ast.Name) and n.func.value.id == "model"}
    assert calls == UPSTREAM_BUILDER_MODEL_CALLS
    assert builder_setup(path) == []


def test_a_builders_setup_call_is_named_and_one_the_model_needs_blocks_the_fit(tmp_path, capsys):
    fork = make_fork(tmp_path, builder_setup=True)
    builder = fork / "llava" / "model" / "builder.py"
    found = {c.written: c for c in builder_setup(str(builder))}
    line = next(i for i, t in enumerate(builder.read_text().splitlines(), 1) if "set_clip_tokenizer" in t)
    assert sorted(found) == ["model.set_clip_tokenizer", "model.set_cur_task"]
    assert found["model.set_clip_tokenizer"].line == line and found["model.set_clip_tokenizer"].new_attrs == [
        "clip_tokenizer"]
    assert found["model.set_cur_task"].new_attrs == []  # __init__ sets cur_task: listed, not blocking
    code = autopatch.main(["check", "--llava-dir", str(fork)])
    out = capsys.readouterr().out
    assert code == 1, out
    assert (f"builder setup calls that the DyMoE eval loader does not make: model.set_clip_tokenizer (line {line}: "
            "sets clip_tokenizer, which the model's __init__ does not), model.set_cur_task") in out
    assert "run-time plugin: does NOT fit: E1: the fork's load_pretrained_model sets the model up with " \
           "model.set_clip_tokenizer" in out


def test_a_builder_setup_call_the_model_has_from_init_does_not_block(tmp_path, capsys):
    fork = make_fork(tmp_path, builder_setup=True)
    builder = fork / "llava" / "model" / "builder.py"
    builder.write_text(builder.read_text().replace("    model.set_clip_tokenizer(tokenizer)\n", ""))
    code = autopatch.main(["check", "--llava-dir", str(fork)])
    out = capsys.readouterr().out
    assert code == 0 and "model.set_cur_task (line" in out and "run-time plugin: fits" in out, out
