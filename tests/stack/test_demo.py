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
        assert f"| {method} | 3/3 |" in report  # --quick: the suite's first three tasks
        assert json.load(open(run / "run.json"))["method"] == method
    assert (out / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    captured = capsys.readouterr()
    assert "MFN" in captured.out
    assert "the synthetic suite (eval_suites/synthetic.yaml, the easy one" in captured.out  # it says which suite
    # the ending a newcomer reads: the verdict table, what it shows and not, heatmaps and report
    ending = captured.out[captured.out.index("Verdict (in %)"):]
    assert all(f"  {m}: {out / 'runs' / m / 'matrix.png'}" in ending for m in METHODS)
    assert "What it shows: " in ending and "What it does not show: --quick trains 4 steps per task" in ending
    assert f"Report: {out / 'report.md'}" in ending
    assert all(f"[{k}/3]" in captured.out for k in (1, 2, 3))
    # progress bars: the base stage follows its training log, the runs count finished stages (runs x 3 tasks)
    assert "base model d=128" in captured.err and "30/30" in captured.err
    stages = 3 * len(METHODS)
    assert "demo runs" in captured.err and f"{stages}/{stages}" in captured.err


def test_demo_verdict_reads_the_runs_metrics(tmp_path):
    """The ending of ``make demo`` from the run folders (fake metrics, no pipeline)."""
    from llava_dymoe.demo import FULL, QUICK, demo_verdict

    values = {"dymoe": (17.33, -20.0, 33.33), "incmoelora": (10.0, -44.17, 45.33), "dymoe_plus": (3.33, -45.83, 40.0)}
    runs = []
    for method, (mfn, bwt, mft) in values.items():
        folder = tmp_path / "runs" / method
        folder.mkdir(parents=True)
        if method != "dymoe_plus":  # a run that left no metrics.json shows dashes, the others still compare
            (folder / "metrics.json").write_text(json.dumps({"mfn": mfn, "maa": 0.0, "bwt": bwt, "mft": mft}))
        runs.append((method, str(folder)))
    text = demo_verdict(str(tmp_path), FULL, 0, runs, n_tasks=5)
    lines = text.splitlines()
    assert [l.split() for l in lines[1:5]] == [["method", "MFN", "BWT", "MFT"],
                                               ["dymoe", "17.33", "-20.00", "33.33"],
                                               ["incmoelora", "10.00", "-44.17", "45.33"],
                                               ["dymoe_plus", "–", "–", "–"]]
    assert "What it shows: dymoe has the best mean final accuracy (MFN 17.3) and forgets least (BWT -20.0)" in text
    assert ("What it does not show: a tiny synthetic LLaVA trained on CPU, 5 toy tasks of 20 test questions, "
            "one seed (0): not CoIN numbers") in text
    assert f"  dymoe_plus: {tmp_path / 'runs' / 'dymoe_plus' / 'matrix.png'}" in lines
    assert f"Report: {tmp_path / 'report.md'} (plot: {tmp_path / 'comparison.png'})" in lines
    assert "--quick" not in text
    quick = demo_verdict(str(tmp_path), QUICK, 3, runs, n_tasks=5)
    assert ("What it does not show: --quick trains 4 steps per task, so these numbers only show that the "
            "pipeline runs") in quick
    assert "one seed (3)" in quick
