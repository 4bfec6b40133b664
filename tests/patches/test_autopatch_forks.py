"""`autopatch check` on forks of our own (issue 28 items 2, 4, 5): the entry the scripts run, its setup and save
calls, the run-time fit and the per-file diff as separate results, fitted hunks, the line by capabilities."""
import ast
import os
import shutil
import subprocess

import pytest

from fork_fixtures import make_fork
from llava_dymoe import autopatch
from llava_dymoe.patches import entry, lines

pytestmark = [pytest.mark.llava11,
              pytest.mark.skipif(shutil.which("patch") is None, reason="GNU patch is not installed")]


def _check(capsys, *argv):
    code = autopatch.main(["check", *argv])
    return code, capsys.readouterr().out


def _line_of(path, text):
    return next(i for i, line in enumerate(open(path), 1) if text in line)


def test_the_entry_the_scripts_run_its_setup_calls_and_a_fitted_builder(tmp_path, capsys):
    fork = make_fork(tmp_path)
    moe = fork / "llava" / "train" / "train_MOE.py"
    code, out = _check(capsys, "--llava-dir", str(fork))
    assert code == 0, out  # the run-time plugin fits, although the shipped builder hunk fails
    assert ("training entry: llava/train/train_mem_MOE.py -> train() of llava.train.train_MOE "
            "(launched by 1 of the checkout's shell scripts)") in out
    assert f"model.set_tokenizer (line {_line_of(moe, 'model.set_tokenizer(tokenizer)')})" in out
    assert "\nT2     found   llava.train.train_MOE:LLaVATrainer" in out
    assert "run-time plugin: fits\n  run: python -m llava_dymoe.train --train_module llava.train.train_MOE" in out
    assert "llava/model/builder.py: fitted (the shipped hunk fails; the same lines at the top of this fork's " \
           "load_pretrained_model())" in out
    assert "llava/train/train_MOE.py: fitted (the fork runs llava.train.train_MOE;" in out
    assert "verdict: run-time plugin fits; fork diff:" in out


def test_fit_dir_writes_diffs_that_apply_to_the_fork(tmp_path, capsys):
    fork = make_fork(tmp_path)
    before = {p: p.read_text() for p in (fork / "llava").rglob("*.py")}
    code, out = _check(capsys, "--llava-dir", str(fork), "--fit-dir", str(tmp_path / "fitted"))
    assert code == 0 and after_unchanged(before)  # the check itself writes nothing into the fork
    written = sorted(os.listdir(tmp_path / "fitted"))
    assert "llava-model-builder.py.diff" in written and "llava-train-train_MOE.py.diff" in written
    for name in written:
        proc = subprocess.run(["patch", "-p1", "--batch", "-i", str(tmp_path / "fitted" / name)], cwd=fork,
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    builder = fork / "llava" / "model" / "builder.py"
    fn = next(n for n in ast.parse(builder.read_text()).body
              if isinstance(n, ast.FunctionDef) and n.name == "load_pretrained_model")
    assert "num_task" in [a.arg for a in fn.args.args] and fn.args.kwarg is not None  # the fork's signature kept
    assert "dymoe_loader" in ast.unparse(fn.body[0]) and ast.unparse(fn.body[2]).startswith("if dymoe_load")
    moe = ast.parse((fork / "llava" / "train" / "train_MOE.py").read_text())
    train = next(n for n in moe.body if isinstance(n, ast.FunctionDef) and n.name == "train")
    assert isinstance(train.body[0], ast.Global) and "train_hooks" in ast.unparse(train.body[1])
    # the fitted fork is not fitted again; another fork's fitted diffs never overwrite what the first wrote
    code, out = _check(capsys, "--llava-dir", str(fork))
    assert "llava/model/builder.py: fails (the shipped hunk fails; cannot fit it: load_pretrained_model() already " \
           "calls llava_dymoe (applied before?))" in out
    other = make_fork(tmp_path / "other")
    with pytest.raises(FileExistsError):
        autopatch.main(["check", "--llava-dir", str(other), "--fit-dir", str(tmp_path / "fitted")])


def after_unchanged(before):
    return all(p.read_text() == text for p, text in before.items())


def test_a_save_call_site_nothing_of_ours_sees_fails_the_run_time_fit(tmp_path, capsys):
    fork = make_fork(tmp_path, save_call="save_everything")
    code, out = _check(capsys, "--llava-dir", str(fork))
    assert code == 1
    assert "run-time plugin: does NOT fit: " in out and "train() saves through trainer.save_everything(...)" in out


def test_coins_save_call_site_is_the_dymoe_trainers(tmp_path, capsys):
    fork = make_fork(tmp_path, save_call="trained")
    code, out = _check(capsys, "--llava-dir", str(fork))
    assert code == 0, out
    assert "trainer.save_trained_model (line" in out and "DyMoETrainer.save_trained_model (the finished task)" in out


def test_entry_flag_overrides_the_scripts(tmp_path, capsys):
    fork = make_fork(tmp_path)
    code, out = _check(capsys, "--llava-dir", str(fork), "--entry", "llava/train/train.py")
    assert code == 0 and "training entry: llava/train/train.py -> train() of llava.train.train (--entry)" in out
    assert "setup calls" not in out  # the stale train.py makes no extra setup call
    assert "run: python -m llava_dymoe.train <the fork" in out
    with pytest.raises(FileNotFoundError):
        entry.find_entry(str(fork), "llava/train/nope.py")


def test_launch_lines_found_in_scripts():
    script = "export X=1\ndeepspeed --include localhost:0 \\\n    ETrain/Train/LLaVA/train_mem.py \\\n  --lr 1\n" \
             "python -m llava.train.train_SMoLoRA --a b\ntorchrun --nproc_per_node 2 llava/train/train_MOE.py\n" \
             "python -m llava.eval.model_vqa_loader --x y\npython scripts/convert.py\n"
    assert entry._launched(script) == ["ETrain/Train/LLaVA/train_mem.py", "llava.train.train_SMoLoRA",
                                       "llava/train/train_MOE.py"]


def test_upstream_train_calls_cover_the_installed_llava():
    prof = entry.train_profile(os.path.join(lines.llava_dir_in_use(), "train", "train.py"))
    assert prof.extra_calls == []
    assert [c for c, _, seen in prof.saves if not seen] == []


def test_the_diff_is_shipped_per_file_and_the_parts_make_the_whole():
    for line in lines.LINES:
        parts = line.parts
        assert len(parts) >= 2
        assert "".join(open(p).read() for p in parts) == open(line.diff).read()
        for p in parts:
            assert open(p).read().count("\ndiff ") == 0  # one file each


def test_the_line_is_chosen_by_capabilities_before_signatures(tmp_path, capsys):
    fork = make_fork(tmp_path, builder_extra=False)
    report = lines.scan(str(fork))
    base_line = report.nearest_line
    if base_line is lines.LINE_11:
        mod = fork / "llava" / "model" / "cache_user.py"
        mod.write_text("from transformers.cache_utils import Cache, DynamicCache\n")
        line, reason = lines.scan(str(fork)).line_and_reason
        assert line is lines.LINE_12
        assert reason == ("its code uses transformers.cache_utils (transformers >= 4.36, at llava/model/cache_user.py:1);"
                          " the 1.1 line's transformers 4.31.0 lacks it")
        code, out = _check(capsys, "--llava-dir", str(fork))
        assert "nearest supported line: the 1.2 line" in out and "because its code uses transformers.cache_utils" in out
    else:  # the 1.2 line's own train(attn_implementation=...) is the capability
        assert "attn_implementation" in report.line_and_reason[1]
    mod = fork / "llava" / "model" / "cache_user.py"
    mod.write_text("x = 1  # transformers.cache_utils is only named in a comment\n")
    assert lines.scan(str(fork)).nearest_line is base_line


def test_an_environment_without_the_needed_line_is_refused_naming_line_and_reason(tmp_path, monkeypatch):
    from llava_dymoe.patches import _base

    fork = make_fork(tmp_path, builder_extra=False)
    (fork / "llava" / "model" / "cache_user.py").write_text("import transformers.cache_utils\n")
    sel = lines.select_line("train", llava_dir=str(fork))
    assert sel.line is lines.LINE_12 and sel.requires == {"transformers": "==4.37.2"}
    monkeypatch.delenv(_base.SKIP_ENV, raising=False)
    monkeypatch.setattr(_base, "_installed_version", lambda dist: "4.31.0")
    with pytest.raises(_base.PatchVersionError) as info:
        sel.check_environment()
    msg = str(info.value)
    assert msg.startswith("this llava needs the 1.2 line (llava-torch 1.2.2.post1, transformers 4.37.2) because ")
    assert "(environment: .venv, `make setup`)" in msg and "transformers 4.31.0 (supported: transformers==4.37.2)" in msg


def test_an_eval_script_in_a_subfolder_takes_e3s_role_when_model_vqa_loader_is_gone(tmp_path, capsys):
    # MCITlib's SEFE: no llava/eval/model_vqa_loader.py, its eval scripts live in llava/eval/CoIN/
    fork = make_fork(tmp_path, eval_moved=True)
    report = lines.scan(str(fork / "llava"))
    assert report.eval_script == "llava.eval.sub.model_sub"
    e3 = report.result("E3")
    assert e3.status == "found" and e3.path == str(fork / "llava" / "eval" / "sub" / "model_sub.py")
    code, out = _check(capsys, "--llava-dir", str(fork))
    assert "\nE3     found   llava.eval.sub.model_sub:eval_model" in out, out
    # upstream's layout keeps upstream's script
    assert lines.scan(lines.llava_dir_in_use()).eval_script == ""
