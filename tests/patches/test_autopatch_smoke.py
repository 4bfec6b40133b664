"""`autopatch check --smoke` (issue 28 item 3): the classification of a failed run (fast, on logs), and real smoke
runs on forks of our own (slow: tiny-model training in subprocesses)."""
import importlib.util
import json

import pytest

from fork_fixtures import make_fork
from llava_dymoe import autopatch
from llava_dymoe.patches.smoke import Step, classify

OK = Step("task 1 with the plugin", True, "t1.log", "", "task 1 through llava.train.train")


def _failed(text, name="task 2 with the plugin"):
    return Step(name, False, "t2.log", text)


def test_all_steps_pass():
    v = classify([OK, Step("the eval", True, "e.log", "", "1 question answered")], None)
    assert v.passed and v.kind == "pass" and v.line == "smoke: PASS: task 1 through llava.train.train; 1 question answered"


def test_a_failure_the_fork_does_not_have_is_ours():
    v = classify([OK, _failed("Traceback ...\nKeyError: 'x'\n")], Step("without", True, "b.log", "done"))
    assert not v.passed and v.kind == "ours"
    assert v.line.startswith("smoke: FAIL at task 2 with the plugin (KeyError: 'x'; log t2.log): ours: the fork trains")


def test_a_failure_the_fork_has_too_is_the_forks():
    v = classify([_failed("RuntimeError: shapes", "task 1 with the plugin")],
                 Step("without", False, "b.log", "noise\nAttributeError: 'LlavaLlamaForCausalLM' has no attribute 'x'\n"))
    assert v.kind == "fork" and "the fork's own failure: without the plugin it fails too (AttributeError:" in v.line
    assert v.line.endswith("b.log)")  # no setup calls known: nothing more to say


def test_a_forks_own_failure_names_its_setup_calls():
    # DISCO: its train() needs --text_tower (and a 7B-sized model); the smoke's generic arguments lack them
    v = classify([_failed("TypeError: stat: path should be string", "task 1 with the plugin")],
                 Step("without", False, "b.log", "TypeError: unsupported operand type(s) for //: 'int' and 'NoneType'"),
                 ["model.get_model().initialize_text_modules", "model.set_tokenizer"])
    assert v.kind == "fork" and v.line.endswith(
        "log b.log); its train() also makes setup calls of its own (model.get_model().initialize_text_modules, "
        "model.set_tokenizer): if its scripts pass flags the smoke's generic LLaVA arguments lack, or it needs "
        "another model size, the smoke cannot judge it; run it with them by hand")


@pytest.mark.parametrize("text", [
    "error: module 'llava.train.train_MOE' cannot be imported: the fork's own code fails at x.py:3: x.py defines "
    "'Linear8bitLt' only when bitsandbytes is installed (pip install bitsandbytes, ...)",
    "Traceback\nModuleNotFoundError: No module named 'bitsandbytes'\n"])
def test_a_missing_package_is_a_missing_dependency_whatever_the_baseline(text):
    v = classify([_failed(text, "task 1 with the plugin")], Step("without", True, "b.log", ""))
    assert v.kind == "missing dependency" and "the fork imports 'bitsandbytes'" in v.line


def test_the_baselines_missing_package_names_the_dependency():
    v = classify([_failed("ImportError: cannot import name 'X'")],
                 Step("without", False, "b.log", "ModuleNotFoundError: No module named 'deepspeed_extra'"))
    assert v.kind == "missing dependency" and "'deepspeed_extra'" in v.line


def test_a_line_refusal_is_the_environment():
    v = classify([_failed("error: this llava needs the 1.2 line (llava-torch 1.2.2.post1, transformers 4.37.2) "
                          "because its code uses transformers.cache_utils")], None)
    assert v.kind == "environment" and "needs the 1.2 line" in v.line


def _smoke(tmp_path, capsys, fork):
    code = autopatch.main(["check", "--llava-dir", str(fork), "--smoke", "--smoke-dir", str(tmp_path / "smoke")])
    out = capsys.readouterr().out.splitlines()[-1]
    assert json.load(open(tmp_path / "smoke" / "smoke.json"))["line"] == out
    return code, out


@pytest.mark.slow
@pytest.mark.llava11
def test_smoke_passes_through_the_forks_entry_and_coins_save_call_site(tmp_path, capsys):
    fork = make_fork(tmp_path, save_call="trained")
    code, out = _smoke(tmp_path, capsys, fork)
    assert code == 0, out
    assert out == ("smoke: PASS: task 1 with the plugin through llava.train.train_MOE; task 2 with the plugin through "
                   "llava.train.train_MOE; task 1's banks bit-identical in task 2; 1 question answered by 2_b_llava_dymoe "
                   "through llava.eval.model_vqa_loader")
    assert json.load(open(tmp_path / "smoke" / "1_a_llava_dymoe" / "dymoe_task.json"))  # the finished task


@pytest.mark.slow
def test_smoke_classes_an_unseen_save_call_site_as_ours(tmp_path, capsys):
    fork = make_fork(tmp_path, save_call="save_everything")
    code, out = _smoke(tmp_path, capsys, fork)
    assert code == 1
    # the plugin refuses before training (train() never calls the saver T3 replaces); the fork trains without it
    assert out.startswith("smoke: FAIL at task 1 with the plugin (error: patch point T3: llava.train.train_MOE:"
                          "safe_save_model_for_hf_trainer is not what llava_dymoe expects") and ": ours: " in out


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is not None, reason="bitsandbytes is installed here")
def test_smoke_classes_an_optional_import_as_a_missing_dependency(tmp_path, capsys):
    fork = make_fork(tmp_path, optional_import=True)
    code, out = _smoke(tmp_path, capsys, fork)
    assert code == 1 and "missing dependency: the fork imports 'bitsandbytes'" in out, out
