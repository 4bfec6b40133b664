"""CLI: `metrics` JSON output (subprocess), error exits, and `report` files."""
import json
import os
import struct
import subprocess
import sys

import pytest

from llava_dymoe import cli
from llava_dymoe.eval.matrix import AccuracyMatrix
from llava_dymoe.eval.report import write_run_report

MATRIX_CSV = "stage,A,B,C\ns1,80,,\ns2,85,60,\ns3,50,54,100\n"


def _run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "llava_dymoe.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


def _assert_png(path):
    with open(path, "rb") as f:
        data = f.read()
    assert len(data) > 100 and data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width > 0 and height > 0


def test_metrics_subprocess_prints_one_json_object(tmp_path):
    p = tmp_path / "matrix.csv"
    p.write_text(MATRIX_CSV)
    res = _run("metrics", str(p))
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("\n") == 1
    out = json.loads(res.stdout)
    assert out == {"mfn": 68.0, "maa": 73.5, "bwt": -18.0, "forgetting": 20.5, "mft": 80.0,
                   "tasks": ["A", "B", "C"], "stages": ["s1", "s2", "s3"]}


def test_metrics_subprocess_malformed_csv_fails_clearly(tmp_path):
    p = tmp_path / "matrix.csv"
    p.write_text("stage,A,B\ns1,80\n")
    res = _run("metrics", str(p))
    assert res.returncode == 2 and res.stdout == ""
    assert "line 2" in res.stderr and "error:" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize("text,match", [
    ("stage,A\ns1,1\ns2,2\n", "2 stages but 1 tasks"),
    ("stage,A,B\ns1,1,\ns2,,3\n", "task 'A' after stage 's2'"),
    ("stage,A,B\ns1,abc,\n", "not a number"),
])
def test_metrics_errors_in_process(tmp_path, capsys, text, match):
    p = tmp_path / "matrix.csv"
    p.write_text(text)
    assert cli.main(["metrics", str(p)]) == 2
    err = capsys.readouterr().err
    assert match in err and str(p) in err


def test_metrics_reads_json_and_missing_file(tmp_path, capsys):
    m = AccuracyMatrix(["A"], ["s1"], [[42.0]])
    path = m.to_json(str(tmp_path / "matrix.json"))
    assert cli.main(["metrics", path]) == 0
    assert json.loads(capsys.readouterr().out)["mfn"] == 42.0
    assert cli.main(["metrics", str(tmp_path / "nope.csv")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_cli_without_command_shows_help(capsys):
    assert cli.main([]) == 2
    err = capsys.readouterr().err
    for name in ("metrics", "report", "convert-coin"):
        assert name in err


def _make_run(root, name, csv_text, method=None):
    d = root / name
    d.mkdir()
    (d / "matrix.csv").write_text(csv_text)
    if method:
        (d / "run.json").write_text(json.dumps({"method": method}))
    return str(d)


def test_report_compares_runs(tmp_path):
    a = _make_run(tmp_path, "run_a", MATRIX_CSV, method="dymoe")
    b = _make_run(tmp_path, "run_b", "stage,A,B,C\ns1,70,,\ns2,40,65,\n")
    out = tmp_path / "cmp"
    res = _run("report", a, b, "--output-dir", str(out))
    assert res.returncode == 0, res.stderr
    report = (out / "report.md").read_text()
    assert res.stdout == report
    lines = report.splitlines()
    assert "| method | stages | MFN | MAA | BWT | Forgetting | MFT |" in lines
    assert "| dymoe | 3/3 | 68.00 | 73.50 | -18.00 | 20.50 | 80.00 |" in lines
    # run_b is partial (2 of 3 stages): MFN (40+65)/2, MAA (70 + 52.5)/2, BWT 40-70, forgetting 30, MFT 67.5
    assert "| run_b | 2/3 | 52.50 | 61.25 | -30.00 | 30.00 | 67.50 |" in lines
    assert "| method | last stage | A | B | C |" in lines
    assert "| dymoe | s3 | 50.00 | 54.00 | 100.00 |" in lines
    assert "| run_b | s2 | 40.00 | 65.00 | – |" in lines
    _assert_png(out / "comparison.png")


def test_report_errors_and_duplicate_names(tmp_path, capsys):
    a = _make_run(tmp_path, "x1", MATRIX_CSV, method="m")
    b = _make_run(tmp_path, "x2", MATRIX_CSV, method="m")
    assert cli.main(["report", a, b, "--output-dir", str(tmp_path / "o"), "--no-plot"]) == 0
    out = capsys.readouterr().out
    assert "| m (x1) |" in out and "| m (x2) |" in out
    assert not (tmp_path / "o" / "comparison.png").exists()
    assert cli.main(["report", str(tmp_path / "missing")]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert cli.main(["report", a, "--output-dir", a]) == 2
    assert "would be overwritten" in capsys.readouterr().err


def test_write_run_report(tmp_path):
    m = AccuracyMatrix.from_csv_string(MATRIX_CSV)
    paths = write_run_report(m, str(tmp_path / "run"), title="DyMoE on CoIN")
    text = open(paths["report"]).read()
    assert text.startswith("# DyMoE on CoIN\n")
    lines = text.splitlines()
    assert "| stage | A | B | C |" in lines
    assert "| s1 | 80.00 | – | – |" in lines
    assert "| s3 | 50.00 | 54.00 | 100.00 |" in lines
    assert "| 68.00 | 73.50 | -18.00 | 20.50 | 80.00 |" in lines
    assert "![accuracy matrix](matrix.png)" in lines
    _assert_png(paths["plot"])
    assert paths["plot"] == os.path.join(str(tmp_path / "run"), "matrix.png")


def test_write_run_report_incomplete_matrix(tmp_path):
    m = AccuracyMatrix(["A", "B"], ["s1"])
    paths = write_run_report(m, str(tmp_path / "r"), plot=False)
    text = open(paths["report"]).read()
    assert "Metrics not available yet" in text and "task 'A' after stage 's1'" in text
    assert paths["plot"] is None


def test_report_uses_metrics_json_without_matrix(tmp_path, capsys):
    d = tmp_path / "only_metrics"
    d.mkdir()
    (d / "metrics.json").write_text(json.dumps({"mfn": 50.0, "maa": 60.0, "bwt": -1.0, "forgetting": 2.0,
                                                "mft": 51.0, "tasks": ["A", "B"], "stages": ["s1", "s2"]}))
    assert cli.main(["report", str(d), "--output-dir", str(tmp_path / "o"), "--no-plot"]) == 0
    assert "| only_metrics | 2/2 | 50.00 | 60.00 | -1.00 | 2.00 | 51.00 |" in capsys.readouterr().out
    empty = tmp_path / "empty_run"
    empty.mkdir()
    assert cli.main(["report", str(empty), "--no-plot", "--output-dir", str(tmp_path / "o")]) == 2
    assert "neither matrix.csv nor metrics.json" in capsys.readouterr().err
