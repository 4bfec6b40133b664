"""The plain-language ending of a run comparison (``make demo``): values, sentence choice, layout."""
import math

from llava_dymoe.eval.verdict import CLOSE, findings, table, verdict

# the numbers of a full demo run (2026-12-02, /tmp/demo_fresh): dymoe best on MFN and BWT, incmoelora on MFT
DEMO = {"dymoe": {"mfn": 17.333333333333336, "maa": 33.3, "bwt": -20.0, "forgetting": 20.0, "mft": 33.33333333333333},
        "incmoelora": {"mfn": 10.0, "bwt": -44.166666666666664, "mft": 45.333333333333336},
        "dymoe_plus": {"mfn": 3.3333333333333335, "bwt": -45.833333333333336, "mft": 40.0}}


def test_table_has_the_three_metrics_aligned_with_two_decimals():
    lines = table(DEMO)
    assert lines[0].split() == ["method", "MFN", "BWT", "MFT"]
    assert [l.split() for l in lines[1:]] == [["dymoe", "17.33", "-20.00", "33.33"],
                                              ["incmoelora", "10.00", "-44.17", "45.33"],
                                              ["dymoe_plus", "3.33", "-45.83", "40.00"]]
    assert len({len(l) for l in lines}) == 1  # columns line up
    assert table({"x": {}})[1].split() == ["x", "–", "–", "–"]  # a run without metrics.json


def test_best_mfn_that_also_forgets_least_and_a_more_plastic_other_method():
    assert findings(DEMO) == ("dymoe has the best mean final accuracy (MFN 17.3) and forgets least (BWT -20.0); "
                              "incmoelora learns each task best right after training on it (MFT 45.3) "
                              "but ends lower (MFN 10.0).")


def test_best_mfn_and_least_forgetting_are_different_methods():
    m = {"a": {"mfn": 30.0, "bwt": -25.0, "mft": 50.0}, "b": {"mfn": 20.0, "bwt": -5.0, "mft": 24.0}}
    assert findings(m) == "a has the best mean final accuracy (MFN 30.0); b forgets least (BWT -5.0)."


def test_ties_name_every_method():
    m = {"a": {"mfn": 30.0, "bwt": -5.0, "mft": 40.0}, "b": {"mfn": 30.0, "bwt": -5.0, "mft": 40.0},
         "c": {"mfn": 10.0, "bwt": -30.0, "mft": 40.0}}
    assert findings(m) == "a and b tie for the best mean final accuracy (MFN 30.0) and forget least (BWT -5.0)."


def test_close_mfn_names_no_winner():
    m = {"a": {"mfn": 10.0, "bwt": -1.0, "mft": 11.0}, "b": {"mfn": 10.0 + CLOSE / 2, "bwt": -9.0, "mft": 20.0}}
    assert findings(m) == (f"the methods end within {CLOSE:g} points of each other on MFN (10.0 to 11.0), "
                           "so no method stands out on this run.")
    zeros = {k: {"mfn": 0.0, "bwt": 0.0, "mft": 0.0} for k in "abc"}  # what --quick usually gives
    assert findings(zeros) == "every method ends at MFN 0.0, so no method stands out on this run."


def test_missing_or_single_runs():
    assert findings({"a": {}, "b": {}}) == "no run has metrics yet, so there is nothing to compare."
    assert findings({"a": {"mfn": 12.0, "bwt": -3.0, "mft": 15.0}, "b": {}}) == (
        "only a has metrics: MFN 12.0, BWT -3.0, MFT 15.0; there is no other method to compare with.")
    nan = {"a": {"mfn": 30.0, "bwt": math.nan, "mft": 40.0}, "b": {"mfn": 20.0, "bwt": -4.0, "mft": 45.0}}
    assert findings(nan).startswith("a has the best mean final accuracy (MFN 30.0); b forgets least (BWT -4.0)")


def test_verdict_layout_with_caveat_heatmaps_and_report():
    text = verdict(DEMO, "a tiny model.", heatmaps={m: f"/o/runs/{m}/matrix.png" for m in DEMO}, report="/o/report.md")
    lines = text.splitlines()
    assert lines[0] == "Verdict (in %)" and lines[1].split() == ["method", "MFN", "BWT", "MFT"]
    assert lines[5].startswith("  MFN = mean final accuracy; BWT = backward transfer (< 0: forgetting)")
    assert lines[6] == "What it shows: " + findings(DEMO)
    assert lines[7] == "What it does not show: a tiny model."
    assert lines[8:] == ["Heatmaps (accuracy after each stage, per run):", "  dymoe: /o/runs/dymoe/matrix.png",
                         "  incmoelora: /o/runs/incmoelora/matrix.png", "  dymoe_plus: /o/runs/dymoe_plus/matrix.png",
                         "Report: /o/report.md"]
