"""`python -m llava_dymoe.autopatch check [--llava-dir PATH]`: the patch-point table and the diff dry run."""
import shutil

import pytest

from llava_dymoe import autopatch
from llava_dymoe.patches import lines

pytestmark = [pytest.mark.llava11,
              pytest.mark.skipif(shutil.which("patch") is None, reason="GNU patch is not installed")]


def test_check_of_the_llava_in_use(capsys):
    assert autopatch.main(["check"]) == 0
    out = capsys.readouterr().out
    line = lines.scan().nearest_line
    assert f"nearest supported line: {line.describe()}" in out
    for point in lines.POINTS:
        assert f"\n{point.id.ljust(5)}  found " in out, point.id
    assert f"fork diff, per file (patches/llava-torch-{line.llava_torch}-dymoe/):" in out
    assert "  llava/model/builder.py: applies\n" in out and "  llava/train/train.py: applies\n" in out
    assert out.endswith(f"verdict: run-time plugin fits; fork diff: {len(line.parts)} applies of {len(line.parts)} "
                        "file(s)\n")


def test_check_of_a_fork_names_changed_points_and_failing_hunks(tmp_path, capsys):
    fork = tmp_path / "checkout" / "llava"
    shutil.copytree(lines.llava_dir_in_use(), fork, ignore=shutil.ignore_patterns("__pycache__"))
    builder = fork / "model" / "builder.py"
    text = builder.read_text().replace("def load_pretrained_model(model_path, model_base, model_name,",
                                       "def load_pretrained_model(model_base, model_path, model_name, extra,")
    builder.write_text(text)
    before = builder.read_text()
    assert autopatch.main(["check", "--llava-dir", str(tmp_path / "checkout")]) == 1
    out = capsys.readouterr().out
    assert "\nE1     changed  llava.model.builder:load_pretrained_model" in out
    assert "run-time plugin: does NOT fit: E1 changed: llava.model.builder:load_pretrained_model" in out
    # the shipped hunk's context (the def line) differs; the same lines fitted to this builder apply
    assert "  llava/model/builder.py: fitted (the shipped hunk fails; the same lines at the top of this fork's " \
           "load_pretrained_model())" in out
    assert "E1: llava_dymoe expects load_pretrained_model(model_path, model_base, model_name" in out
    assert builder.read_text() == before  # a dry run writes nothing
