"""A fork whose LLaVA is not the package ``llava`` (CoIN's ``ETrain``, issue 28 item 1): the module roles found from
the source (``patches/layout.py``), ``autopatch check`` on such a checkout, the run-time patches on its modules, and
(one test) two DyMoE tasks and one eval through the fork's own train and eval modules with ``llava`` unimportable."""
import ast
import json
import os
import shutil
import sys

import pytest

from coin_fixture import BUILDER_MODULE, EVAL_MODULE, PACKAGE, TRAIN_MODULE, TRAINER_MODULE, make_coin_fork
from llava_dymoe import autopatch
from llava_dymoe.patches import layout as layout_mod
from llava_dymoe.patches.lines import UpstreamMismatch, select_line

pytestmark = pytest.mark.llava11  # the fixture is built from the llava in use: 8 passed in .venv-llava11 too (23 s)


@pytest.fixture(scope="module")
def coin(tmp_path_factory):
    return make_coin_fork(tmp_path_factory.mktemp("coin"))


@pytest.fixture
def on_path(coin, monkeypatch):
    """The fixture's checkout first on sys.path; its modules are dropped from sys.modules afterwards."""
    monkeypatch.syspath_prepend(str(coin))
    yield coin
    for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
        del sys.modules[name]


def test_discover_finds_the_roles_from_the_imports(coin):
    by_train = layout_mod.discover(str(coin), train=TRAIN_MODULE)
    assert (by_train.package, by_train.train, by_train.trainer, by_train.builder, by_train.eval_package) == (
        PACKAGE, TRAIN_MODULE, TRAINER_MODULE, BUILDER_MODULE, f"{PACKAGE}.Eval.LLaVA.CoIN")
    assert by_train.file(by_train.builder) == str(coin / PACKAGE / "Models" / "LLaVA" / "builder.py")
    by_eval = layout_mod.discover(str(coin), eval_module=EVAL_MODULE)
    assert (by_eval.builder, by_eval.eval_package) == (BUILDER_MODULE, f"{PACKAGE}.Eval.LLaVA.CoIN")
    assert layout_mod.discover("/x", train="llava.train.train_MOE") == layout_mod.upstream("/x", "llava.train.train_MOE")


def test_binding_follows_named_relative_and_star_imports(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    for init in (pkg / "__init__.py", pkg / "sub" / "__init__.py"):
        init.write_text("")
    (pkg / "a.py").write_text("from pkg.b import *\n\ndef own():\n    pass\n")
    (pkg / "b.py").write_text("from .sub.c import f as g\nfrom os.path import join\n")
    (pkg / "sub" / "c.py").write_text("def f():\n    pass\n")
    module, node = layout_mod.binding(str(tmp_path), "pkg.a", "g")
    assert module == "pkg.sub.c" and isinstance(node, ast.FunctionDef) and node.name == "f"
    assert layout_mod.binding(str(tmp_path), "pkg.a", "own")[0] == "pkg.a"
    module, node = layout_mod.binding(str(tmp_path), "pkg.a", "join")  # outside the checkout: where it is imported
    assert module == "pkg.b" and isinstance(node, ast.ImportFrom)
    assert layout_mod.binding(str(tmp_path), "pkg.a", "nowhere") == ("pkg.a", None)


def _check(argv, capsys):
    code = autopatch.main(["check", *argv])
    return code, capsys.readouterr()


@pytest.mark.skipif(shutil.which("patch") is None, reason="GNU patch is not installed")
def test_check_on_a_coin_layout_reports_its_own_modules(coin, capsys):
    code, out = _check(["--llava-dir", str(coin)], capsys)
    text = out.out
    assert code == 0, text
    rows = {ln.split()[0]: ln.split() for ln in text.splitlines() if ln[:3].rstrip() in ("T0", "T1", "T1b", "T2",
                                                                                          "T3", "E1", "E2", "E3", "E4")}
    assert all(r[1] == "found" for r in rows.values()) and len(rows) == 9
    assert rows["T3"][2:4] == [f"{TRAIN_MODULE}:safe_save_model_for_hf_trainer",
                               f"{PACKAGE}/Train/Base_trainer.py:" + rows["T3"][3].rsplit(":", 1)[1]]
    assert rows["E1"][2] == f"{BUILDER_MODULE}:load_pretrained_model" and rows["E3"][2] == f"{EVAL_MODULE}:eval_model"
    assert f"training entry: {PACKAGE}/Train/LLaVA/train_mem.py -> train() of {TRAIN_MODULE}" in text
    assert "trainer.save_trained_model (line" in text and "NOT seen" not in text
    assert f"run: python -m llava_dymoe.train --train_module {TRAIN_MODULE} " in text
    assert f"  {PACKAGE}/Train/LLaVA/train.py: fitted (the fork runs {TRAIN_MODULE};" in text
    assert f"  {PACKAGE}/Models/LLaVA/builder.py: fitted" in text


def test_a_checkout_without_llava_or_a_launch_script_is_refused_in_one_line(coin, tmp_path, capsys):
    bare = tmp_path / "bare"
    shutil.copytree(coin / PACKAGE, bare / PACKAGE)
    code, out = _check(["--llava-dir", str(bare)], capsys)
    assert code == 2 and out.err.count("\n") == 1 and "holds no llava/ package" in out.err and "--entry" in out.err
    code, out = _check(["--llava-dir", str(bare), "--entry", f"{PACKAGE}/Train/LLaVA/train_mem.py"], capsys)
    assert f"-> train() of {TRAIN_MODULE} (--entry)" in out.out


def test_the_line_and_a_missing_point_are_judged_in_the_forks_modules(on_path):
    sel = select_line("train", train_module=TRAIN_MODULE)
    assert sel.report.layout.trainer == TRAINER_MODULE and sel.is_fork and set(sel.requires) == {"transformers"}
    assert select_line("eval", eval_module=EVAL_MODULE).report.layout.builder == BUILDER_MODULE
    train = on_path / PACKAGE / "Train" / "LLaVA" / "train.py"
    saved = train.read_text()
    try:
        train.write_text(saved.replace(f"from {PACKAGE}.Train.Base_trainer import *\n", ""))
        with pytest.raises(UpstreamMismatch, match=rf"T3: {TRAIN_MODULE}:safe_save_model_for_hf_trainer is missing"):
            select_line("train", train_module=TRAIN_MODULE)
    finally:
        train.write_text(saved)


def test_the_patch_sets_target_the_forks_modules_and_revert(on_path):
    import importlib

    from llava_dymoe.patches.eval import eval_patch_set
    from llava_dymoe.patches.train import train_patch_set
    from llava_dymoe.trainer.trainer import DyMoETrainerMixin

    builder = importlib.import_module(BUILDER_MODULE)
    original = builder.load_pretrained_model
    evals = eval_patch_set(eval_module=EVAL_MODULE)
    with evals:
        assert builder.load_pretrained_model is not original and builder.load_pretrained_model.__wrapped__ is original
        evals.apply()  # idempotent
    assert builder.load_pretrained_model is original
    train = importlib.import_module(TRAIN_MODULE)
    trainer_cls, saver = train.LLaVATrainer, train.safe_save_model_for_hf_trainer
    with train_patch_set(module=TRAIN_MODULE):
        assert issubclass(train.LLaVATrainer, DyMoETrainerMixin) and issubclass(train.LLaVATrainer, trainer_cls)
        assert train.safe_save_model_for_hf_trainer.__wrapped__ is saver
    assert (train.LLaVATrainer, train.safe_save_model_for_hf_trainer) == (trainer_cls, saver)


def test_the_shim_runs_a_forks_eval_script_and_still_refuses_other_modules(on_path):
    from llava_dymoe.eval.shim import ShimUsageError, check_target

    assert check_target(EVAL_MODULE) == EVAL_MODULE
    for name in ("os.path", f"{PACKAGE}.utils.LLaVA.constants"):
        with pytest.raises(ShimUsageError, match="not an upstream LLaVA module, nor a fork's eval script"):
            check_target(name)


def test_two_dymoe_tasks_and_an_eval_through_a_coin_layout_fork_with_llava_unimportable(coin, tmp_path, capsys,
                                                                                         monkeypatch):
    """``autopatch check --smoke`` on the fixture: both tasks through ETrainFx.Train.LLaVA.train, which ends with
    ``trainer.save_trained_model``; the eval through ETrainFx.Eval.LLaVA.CoIN.model_gqa (questions as a JSON list).
    A ``llava`` that raises on import is first on the subprocesses' path: nothing may fall back to it."""
    from safetensors.torch import load_file

    block = tmp_path / "block" / "llava"
    block.mkdir(parents=True)
    (block / "__init__.py").write_text("raise ImportError('the CoIN-layout run imported llava')\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(block.parent), os.environ.get("PYTHONPATH", "")]))
    work = tmp_path / "smoke"
    code, out = _check(["--llava-dir", str(coin), "--smoke", "--smoke-dir", str(work)], capsys)
    last = out.out.splitlines()[-1]
    assert code == 0 and last.startswith("smoke: PASS"), (last, [p.read_text()[-3000:] for p in work.glob("*.log")])
    t1, t2 = work / "1_a_llava_dymoe", work / "2_b_llava_dymoe"
    for task in (t1, t2):
        assert json.loads((task / "dymoe_task.json").read_text())  # a finished DyMoE task from save_trained_model
    a, b = load_file(str(t1 / "dymoe_experts.safetensors")), load_file(str(t2 / "dymoe_experts.safetensors"))
    assert a and set(a) < set(b)  # task 2 added a bank
    assert all(bool((a[k] == b[k]).all()) for k in a)  # task 1's banks bit-identical
    question = json.loads((work / "q.jsonl").read_text())
    assert isinstance(question, list) and len(question) == 1  # the fork's script reads a JSON list
    answers = [json.loads(ln) for ln in (work / "answers" / "a.jsonl").read_text().splitlines()]
    assert [r["question_id"] for r in answers] == [question[0]["question_id"]] and answers[0]["text"]
    train_log, eval_log = (work / "1_a_llava_dymoe.log").read_text(), (work / "eval.log").read_text()
    assert f"patched {TRAIN_MODULE}:LLaVATrainer" in train_log
    assert f"patched {BUILDER_MODULE}:load_pretrained_model" in eval_log and "is a DyMoE checkpoint" in eval_log


@pytest.mark.slow
def test_zero2_two_tasks_with_step_checkpoints_through_the_coin_layout(coin, tiny, smoke_data, tmp_path):
    """DeepSpeed ZeRO-2 (one CPU rank) through the fixture's train module, with ``checkpoint-N`` saves: every
    finished task written by ``save_trained_model``, the step checkpoints by the trainer, old banks kept."""
    from safetensors.torch import load_file

    from llava_dymoe.integration.llava_args import dymoe_flags, llava_train_argv, run_python, single_rank_env

    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**single_rank_env(), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(coin), os.environ.get("PYTHONPATH", "")])}
    outs = []
    for task in (1, 2):
        out = str(tmp_path / f"{task}_llava_dymoe")
        argv = llava_train_argv(tiny.llm, tiny.clip, smoke_data.train_json, smoke_data.image_folder, out, lora=False,
                                max_steps=2, deepspeed=os.path.join(repo, "scripts", "zero2.json"),
                                extra=["--save_strategy", "steps", "--save_steps", "1"]
                                + dymoe_flags("dymoe", task, outs[-1] if outs else None, experts_per_task=2))
        run_python("llava_dymoe.train", ["--train_module", TRAIN_MODULE, *argv], module=True, env=env,
                   log_path=out + ".log", timeout=600)
        assert {"dymoe_task.json", "checkpoint-1", "checkpoint-2"} <= set(os.listdir(out)), os.listdir(out)
        outs.append(out)
    a, b = (load_file(os.path.join(o, "dymoe_experts.safetensors")) for o in outs)
    assert a and set(a) < set(b) and all(bool((a[k] == b[k]).all()) for k in a)
