"""`make demo` in its reduced mode (what CI runs): the whole pipeline and the report, real outputs."""
import json
import os

import pytest


def test_demo_smoke_end_to_end(tmp_path, capsys):
    from llava_dymoe.demo import main

    assert main(["--smoke", "--output-dir", str(tmp_path / "demo"), "--steps", "4"]) == 0
    out = capsys.readouterr().out
    assert "[4/4]" in out and "exact match" in out
    answers = [json.loads(l) for l in open(tmp_path / "demo" / "answers.jsonl")]
    assert len(answers) == 8 and all(isinstance(a["text"], str) for a in answers)
    state = json.load(open(tmp_path / "demo/checkpoints/llava-tiny-lora/trainer_state.json"))
    assert state["global_step"] == 4


def test_continual_demo_quick_mode_covers_the_pipeline(tmp_path, capsys):
    from llava_dymoe.demo import METHODS, main

    out = tmp_path / "demo"
    assert main(["--quick", "--output-dir", str(out)]) == 0
    report = open(out / "report.md").read()
    for method in METHODS:
        run = out / "runs" / method
        assert {"matrix.csv", "metrics.json", "report.md", "matrix.png", "run.json"} <= set(os.listdir(run))
        metrics = json.load(open(run / "metrics.json"))
        assert {"mfn", "maa", "bwt"} <= set(metrics)
        assert f"| {method} | 5/5 |" in report
        assert json.load(open(run / "run.json"))["method"] == method
    assert (out / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    captured = capsys.readouterr()
    assert "MFN" in captured.out
    assert all(f"[{k}/3]" in captured.out for k in (1, 2, 3))
    # progress bars: the base stage follows its training log, the runs count finished stages (runs x 5 tasks)
    assert "base model d=128" in captured.err and "30/30" in captured.err
    stages = 5 * len(METHODS)
    assert "demo runs" in captured.err and f"{stages}/{stages}" in captured.err
