"""Patch points found by the symbols of the ``llava`` in use (or a copy of it), not by its version string."""
import os
import shutil

import pytest

from llava_dymoe.patches import lines
from llava_dymoe.patches.lines import UpstreamMismatch, scan, select_line

pytestmark = pytest.mark.llava11  # holds on both upstream lines (make test-llava11)


def test_every_patch_point_is_found_in_the_llava_in_use():
    import transformers

    report = scan()
    assert [r.point.id for r in report.results] == [p.id for p in lines.POINTS]
    assert all(r.status == "found" and os.path.exists(r.path) for r in report.results), report.results
    line = report.nearest_line
    assert line.transformers == transformers.__version__  # each line lives in its own environment
    sel = select_line()
    assert not sel.is_fork and sel.requires == {"llava-torch": f"=={line.llava_torch}",
                                                "transformers": f"=={line.transformers}"}
    assert report.train_takes_attn is line.train_takes_attn and report.builder_flash is line.builder_flash


@pytest.fixture
def fork(tmp_path):
    """A writable copy of the llava package in use, as a fork checkout would be."""
    dst = tmp_path / "fork" / "llava"
    shutil.copytree(lines.llava_dir_in_use(), dst, ignore=shutil.ignore_patterns("__pycache__"))
    return dst


def _edit(path, old, new):
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def test_a_copy_is_a_fork_judged_by_symbols_only(fork):
    sel = select_line(llava_dir=str(fork.parent))  # a checkout root holding llava/ works too
    assert sel.is_fork and sel.requires == {"transformers": f"=={sel.line.transformers}"}
    assert sel.report.llava_dir == str(fork)


def test_missing_patch_point_gives_one_message_with_symbol_expectation_and_file(fork):
    _edit(fork / "train" / "train.py", "def safe_save_model_for_hf_trainer(", "def save_everything(")
    with pytest.raises(UpstreamMismatch) as err:
        select_line("train", llava_dir=str(fork))
    msg = str(err.value)
    assert "\n" not in msg
    for part in ("patch point T3", "llava.train.train:safe_save_model_for_hf_trainer is missing",
                 "expects safe_save_model_for_hf_trainer(trainer, output_dir)", str(fork / "train" / "train.py"),
                 "python -m llava_dymoe.autopatch check"):
        assert part in msg, (part, msg)
    select_line("eval", llava_dir=str(fork))  # the eval side does not need T3


def test_changed_signature_is_reported_with_its_line(fork):
    _edit(fork / "model" / "builder.py", "def load_pretrained_model(model_path, model_base, model_name,",
          "def load_pretrained_model(model_base, model_path, model_name,")
    r = scan(str(fork)).result("E1")
    assert r.status == "changed" and r.line and "load_pretrained_model(model_base, model_path" in r.detail
    with pytest.raises(UpstreamMismatch, match=r"patch point E1: .* is not what llava_dymoe expects .* line \d+"):
        select_line("eval", llava_dir=str(fork))


def test_line_differences_are_read_from_the_source(fork):
    report = scan(str(fork))
    assert report.nearest_line is (lines.LINE_12 if report.train_takes_attn else lines.LINE_11)
    assert lines.generator_takes_max_new_tokens("llava.eval.model_vqa_loader", str(fork)) is report.train_takes_attn
    assert not lines.generator_takes_max_new_tokens("llava.eval.model_vqa", str(fork))
    with pytest.raises(UpstreamMismatch, match="use_reentrant"):
        lines.check_train_flags(lines.LINE_11, ["--dymoe_use_reentrant", "False"])
    lines.check_train_flags(lines.LINE_12, ["--dymoe_use_reentrant", "False"])
    assert lines.train_call_kwargs(lines.LINE_12, "sdpa") == {"attn_implementation": "sdpa"}
    assert lines.train_call_kwargs(lines.LINE_11, None) == {}
    with pytest.raises(UpstreamMismatch, match="attn_implementation sdpa"):
        lines.train_call_kwargs(lines.LINE_11, "sdpa")


def test_eval_side_needs_only_the_loader(fork):
    (fork / "eval" / "model_vqa_loader.py").unlink()  # e.g. MCITlib's SEFE has no such eval_model
    report = scan(str(fork))  # another eval script of the fork takes E3's role (the first model_* with the loader)
    assert report.result("E3").status == "found" and report.eval_script == "llava.eval.model_vqa"
    for script in (fork / "eval").glob("model_*.py"):
        script.unlink()
    assert scan(str(fork)).result("E3").status == "missing"
    select_line("eval", llava_dir=str(fork))  # the shim can still wrap the fork's other eval modules


def test_entry_points_refuse_a_fork_without_a_patch_point_in_one_line(fork, tiny, smoke_data, tmp_path):
    from llava_dymoe.integration.llava_args import dymoe_flags, llava_train_argv
    import subprocess
    import sys

    _edit(fork / "train" / "train.py", "def safe_save_model_for_hf_trainer(", "def save_everything(")
    _edit(fork / "model" / "builder.py", "def load_pretrained_model(model_path, model_base, model_name,",
          "def load_pretrained_model(model_base, model_path, model_name,")
    env = {**os.environ, "PYTHONPATH": str(fork.parent) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    argv = llava_train_argv(tiny.llm, tiny.clip, smoke_data.train_json, smoke_data.image_folder,
                            str(tmp_path / "out"), lora=False, extra=dymoe_flags("dymoe", 1))
    for cmd, point in ((["-m", "llava_dymoe.train", *argv], "T3"),
                       (["-m", "llava_dymoe.eval", "llava.eval.model_vqa_loader", "--model-path", "x"], "E1")):
        proc = subprocess.run([sys.executable, *cmd], env=env, capture_output=True, text=True, timeout=300)
        errors = [line for line in proc.stderr.splitlines() if "error: " in line]
        assert proc.returncode == 2 and len(errors) == 1, proc.stderr[-3000:]
        assert f"error: patch point {point}: " in errors[0] and str(fork) in errors[0], errors[0]
        assert "Traceback" not in proc.stderr
