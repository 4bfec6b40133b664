"""The ``llava-dymoe`` console command (``llava_dymoe.console``): entry point, --version, every command.

The command is exercised as ``python -m llava_dymoe.console`` (no reinstall needed); the
``setup.py`` declaration is checked to name the same function.
"""
import ast
import importlib
import importlib.metadata
import os
import re

import pytest
from reliability_helpers import one_line_refusal, run_module

from llava_dymoe import cli, console

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _entry_points_of_setup():
    tree = ast.parse(open(os.path.join(REPO, "setup.py"), encoding="utf-8").read())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "entry_points":
            return ast.literal_eval(node.value)
    raise AssertionError("setup.py declares no entry_points")


def test_setup_declares_the_console_script_and_it_resolves():
    scripts = _entry_points_of_setup()["console_scripts"]
    assert scripts == ["llava-dymoe = llava_dymoe.console:main"]
    ep = importlib.metadata.EntryPoint(name="llava-dymoe", value=scripts[0].split("=", 1)[1].strip(),
                                       group="console_scripts")
    assert ep.load() is console.main
    installed = [e for e in importlib.metadata.entry_points(group="console_scripts") if e.name == "llava-dymoe"]
    for e in installed:  # an installed copy (after pip install -e .) names the same function
        assert e.value == "llava_dymoe.console:main"


def _dist(name):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def test_version_names_every_part_of_the_stack():
    res = run_module("llava_dymoe.console", "--version")
    assert res.returncode == 0, res.stderr
    lines = dict(line.split(": ", 1) for line in res.stdout.strip().splitlines())
    assert list(lines) == ["llava-dymoe", "llava-torch", "transformers", "torch", "deepspeed", "GPU", "flash-attn"]
    import llava_dymoe

    assert lines["llava-dymoe"].startswith(llava_dymoe.__version__)
    for dist in ("llava-torch", "transformers", "torch", "deepspeed"):
        expected = _dist(dist)
        assert lines[dist].startswith(expected if expected else "not installed"), (dist, lines[dist])
    import torch

    if torch.cuda.is_available():
        assert torch.cuda.get_device_name(0) in lines["GPU"]
    else:
        assert lines["GPU"].startswith("none visible")
    if importlib.util.find_spec("flash_attn") is None:
        assert lines["flash-attn"] == "not installed"
    else:
        assert "importable" in lines["flash-attn"] or "importing it fails" in lines["flash-attn"]


def test_version_survives_absent_packages(monkeypatch):
    real = importlib.metadata.version

    def absent(name):
        if name in ("deepspeed", "torch", "flash-attn", "flash_attn", "llava-torch"):
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(console.importlib.metadata, "version", absent)
    monkeypatch.setattr(console.importlib.util, "find_spec", lambda name: None)
    lines = dict(line.split(": ", 1) for line in console.version_lines())
    assert lines["deepspeed"] == "not installed" and lines["torch"] == "not installed"
    assert lines["llava-torch"].startswith("not installed (supported: ")
    assert lines["GPU"] == "unknown (torch not installed)" and lines["flash-attn"] == "not installed"


def test_help_lists_every_command_with_one_line(capsys):
    assert console.main(["--help"]) == 0
    out = capsys.readouterr().out
    names = ["train", "eval", *cli.SUBCOMMANDS]
    listed = re.findall(r"^  (\S+)\s{2,}(\S.*)$", out.split("commands:")[1].split("options:")[0], re.M)
    assert [n for n, _ in listed] == names
    for name, help_text in cli.SUBCOMMANDS.values():
        assert f"{help_text}" in out
    assert console.main([]) == 2  # no command: usage on stderr, status 2


def _normalised(text, prog):
    return " ".join(text.replace(prog, "PROG").split())


@pytest.mark.parametrize("name", list(cli.SUBCOMMANDS))
def test_every_cli_command_is_reachable_with_the_clis_help(name, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    with pytest.raises(SystemExit) as ours:
        console.main([name, "--help"])
    mine = capsys.readouterr().out
    with pytest.raises(SystemExit) as theirs:
        cli.main([name, "--help"])
    reference = capsys.readouterr().out
    assert ours.value.code == theirs.value.code == 0
    assert f"usage: llava-dymoe {name}" in mine
    assert _normalised(mine, "llava-dymoe") == _normalised(reference, cli.PROG)


def test_train_help_is_llavas_parser_with_the_dymoe_flags():
    res = run_module("llava_dymoe.console", "train", "--help")
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.startswith("usage: llava-dymoe train")
    for flag in ("--dymoe_method", "--dymoe_task_id", "--data_path", "--save_strategy", "--resume_from_checkpoint"):
        assert flag in res.stdout
    own = res.stdout[res.stdout.index("flags of llava_dymoe.train itself"):]  # after LLaVA's own help
    assert "--attn_implementation" in own and "--skip_data_check" in own


def test_eval_module_help_runs_the_upstream_module():
    res = run_module("llava_dymoe.console", "eval", "model_vqa_loader", "--help")
    assert res.returncode == 0, res.stderr[-2000:]
    for flag in ("--model-path", "--model-base", "--question-file", "--answers-file", "--max_new_tokens"):
        assert flag in res.stdout
    assert console.eval_target("model_vqa") == "llava.eval.model_vqa"
    assert console.eval_target("llava.eval.model_vqa_science") == "llava.eval.model_vqa_science"
    assert console.eval_target("ETrain.Eval.LLaVA.CoIN.model_gqa") == "ETrain.Eval.LLaVA.CoIN.model_gqa"


def test_eval_without_or_with_a_wrong_module(capsys):
    assert console.main(["eval"]) == 2
    assert "name the eval MODULE" in capsys.readouterr().err
    assert console.main(["eval", "--help"]) == 0
    assert "model_vqa_loader" in capsys.readouterr().out
    assert console.main(["eval", "no_such_module"]) == 2
    assert "no module named 'llava.eval.no_such_module'" in capsys.readouterr().err


def test_unknown_command_exits_2_with_the_list(capsys):
    assert console.main(["trian"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "unknown command 'trian'" in err and "train, eval, metrics" in err


def test_refusals_are_one_error_line_like_the_entry_points(tmp_path):
    bad = tmp_path / "matrix.csv"
    bad.write_text("stage,A\n1_A,250\n")
    one_line_refusal(run_module("llava_dymoe.console", "metrics", str(bad)), "outside [0, 100]")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("x")
    one_line_refusal(run_module("llava_dymoe.console", "train", "--output_dir", taken, "--data_path",
                                tmp_path / "none.json", "--image_folder", tmp_path),
                     "is not empty and was not written by llava_dymoe")
