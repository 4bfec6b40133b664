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
    assert f"fork diff llava-torch-{line.llava_torch}-dymoe.diff: applies (dry run)" in out


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
    assert "llava/model/builder.py:" in out and "does NOT apply (dry run)" in out
    assert "failing hunks: llava/model/builder.py hunk #1" in out
    assert "E1: llava_dymoe expects load_pretrained_model(model_path, model_base, model_name" in out
    assert builder.read_text() == before  # a dry run writes nothing
