"""``cli score --coin-repo``: run a CoIN checkout's eval script in a subprocess and compare.

The "checkout" is a stand-in written here (not CoIN's code): an ``ETrain/Eval/LLaVA/CoIN``
package whose scripts take CoIN's command-line flags and print ``Accuracy: X%``.
"""
import json
import textwrap

import pytest

from llava_dymoe import cli
from llava_dymoe.eval.coin_repo import parse_accuracy

# stand-in for eval_vizwiz: upper()-ed exact match by question id; STANDIN_OFFSET shifts the printout
VIZWIZ = textwrap.dedent("""
    import argparse, json, os
    p = argparse.ArgumentParser()
    p.add_argument("--annotation-file"); p.add_argument("--result-file"); p.add_argument("--output-dir")
    a = p.parse_args()
    refs = {r["question_id"]: r["answer"] for r in json.load(open(a.annotation_file))}
    res = [json.loads(l) for l in open(a.result_file)]
    right = sum(r["text"].upper() == refs[r["question_id"]].upper() for r in res)
    acc = 100.0 * right / len(res) + float(os.environ.get("STANDIN_OFFSET", "0"))
    print("Samples: {}\\nAccuracy: {:.2f}%\\n".format(len(res), acc))
""")
GQA_CONVERT = textwrap.dedent("""
    import argparse, json
    p = argparse.ArgumentParser(); p.add_argument("--src"); p.add_argument("--dst"); a = p.parse_args()
    json.dump([{"questionId": json.loads(l)["question_id"], "prediction": json.loads(l)["text"]}
               for l in open(a.src)], open(a.dst, "w"))
""")
GQA_EVAL = textwrap.dedent("""
    import argparse, json, os
    p = argparse.ArgumentParser()
    p.add_argument("--tier"); p.add_argument("--path"); p.add_argument("--output-dir"); a = p.parse_args()
    preds = json.load(open(os.path.join(a.path, a.tier + "_predictions.json")))
    gold = json.load(open("./cl_dataset/GQA/" + a.tier + "_questions.json"))
    print("Binary: 0.00%")
    print("Accuracy: {:.2f}%".format(100.0 * sum(p["prediction"] == gold[p["questionId"]] for p in preds) / len(preds)))
""")


def _checkout(tmp_path, scripts):
    pkg = tmp_path / "coin" / "ETrain" / "Eval" / "LLaVA" / "CoIN"
    pkg.mkdir(parents=True)
    for name, text in scripts.items():
        (pkg / f"{name}.py").write_text(text)
    return str(tmp_path / "coin")


def _files(tmp_path, preds, refs):
    ans, ref, ann = tmp_path / "answers.jsonl", tmp_path / "refs.jsonl", tmp_path / "val.json"
    ans.write_text("".join(json.dumps({"question_id": i, "prompt": "", "text": p}) + "\n" for i, p in enumerate(preds)))
    ref.write_text("".join(json.dumps({"question_id": i, "answer": r}) + "\n" for i, r in enumerate(refs)))
    ann.write_text(json.dumps([{"question_id": i, "answer": r} for i, r in enumerate(refs)]))
    return str(ans), str(ref), str(ann)


def test_agreement_is_recorded_beside_our_score(tmp_path, capsys):
    repo = _checkout(tmp_path, {"eval_vizwiz": VIZWIZ})
    ans, ref, ann = _files(tmp_path, ["Yes", "straße", "red.", "no"], ["yes", "STRASSE", "red", "yes"])
    out = tmp_path / "result.json"
    rc = cli.main(["score", "--scorer", "coin_vizwiz", "--answers", ans, "--references", ref,
                   "--coin-repo", repo, "--coin-annotation", ann, "--output", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    summary = json.loads(captured.out)
    assert summary["score"] == 50.0  # Yes / straße right, "red." and "no" wrong
    assert summary["coin_repo"] == {"task": "VizWiz", "accuracy": 50.0, "agree": True, "difference": 0.0}
    assert "DISAGREEMENT" not in captured.err
    full = json.loads(out.read_text())["coin_repo"]
    assert full["ours"] == 50.0 and full["coin_repo"] == 50.0 and "eval_vizwiz" in full["commands"][0]


def test_disagreement_is_loud_and_exits_1(tmp_path, capsys, monkeypatch):
    repo = _checkout(tmp_path, {"eval_vizwiz": VIZWIZ})
    ans, ref, ann = _files(tmp_path, ["yes", "no"], ["yes", "yes"])
    monkeypatch.setenv("STANDIN_OFFSET", "0.01")  # prints 50.01 %: beyond CoIN's 2-decimal rounding
    rc = cli.main(["score", "--scorer", "coin_vizwiz", "--answers", ans, "--references", ref,
                   "--coin-repo", repo, "--coin-annotation", ann])
    captured = capsys.readouterr()
    assert rc == 1
    assert "DISAGREEMENT on VizWiz" in captured.err and "50.01%" in captured.err
    assert json.loads(captured.out)["coin_repo"]["agree"] is False


def test_gqa_runs_both_scripts_from_the_working_directory(tmp_path, capsys):
    repo = _checkout(tmp_path, {"convert_gqa_for_eval": GQA_CONVERT, "eval_gqa": GQA_EVAL})
    (tmp_path / "coin/cl_dataset/GQA").mkdir(parents=True)
    (tmp_path / "coin/cl_dataset/GQA/testdev_balanced_questions.json").write_text(json.dumps({"0": "yes", "1": "no"}))
    ans, ref, _ = _files(tmp_path, ["yes", "yes"], ["yes", "no"])
    ans_text = (tmp_path / "answers.jsonl").read_text().replace('"question_id": 0', '"question_id": "0"')
    (tmp_path / "answers.jsonl").write_text(ans_text.replace('"question_id": 1', '"question_id": "1"'))
    rc = cli.main(["score", "--scorer", "coin_gqa", "--answers", ans, "--references", ref, "--coin-repo", repo])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert json.loads(captured.out)["coin_repo"]["accuracy"] == 50.0


def test_errors_are_reported(tmp_path, capsys):
    ans, ref, ann = _files(tmp_path, ["yes"], ["yes"])
    assert cli.main(["score", "--scorer", "coin_vizwiz", "--answers", ans, "--references", ref,
                     "--coin-repo", str(tmp_path)]) == 2
    assert "CoIN checkout" in capsys.readouterr().err
    repo = _checkout(tmp_path, {"eval_vizwiz": "raise SystemExit(3)\n"})
    assert cli.main(["score", "--scorer", "coin_vizwiz", "--answers", ans, "--references", ref,
                     "--coin-repo", repo, "--coin-annotation", ann]) == 2
    assert "failed (exit 3)" in capsys.readouterr().err
    assert cli.main(["score", "--scorer", "exact", "--answers", ans, "--references", ref, "--coin-repo", repo]) == 2
    assert "--coin-task" in capsys.readouterr().err


@pytest.mark.parametrize("text,want", [
    ("Samples: 10\nAccuracy: 55.50%\n", 55.5),
    ("Total: 4, Correct: 1, Accuracy: 25.00%", 25.0),          # ScienceQA's line
    ("Binary: 60.00%\nOpen: 40.00%\nAccuracy: 50.00%\n", 50.0),  # GQA's lines
    ("nothing here", None),
])
def test_parse_accuracy(text, want):
    assert parse_accuracy(text) == want


def test_cross_check_a_run_cell_by_cell(tmp_path):
    from types import SimpleNamespace

    from llava_dymoe.eval.coin_repo import annotation_for, cross_check_run

    repo = _checkout(tmp_path, {"eval_vizwiz": VIZWIZ})
    ans, _, ann = _files(tmp_path, ["Yes", "no"], ["yes", "yes"])  # CoIN: 50 %
    viz = SimpleNamespace(name="VizWiz", scorer="coin_vizwiz", annotation_file=ann, official_answers=None,
                          image_root=str(tmp_path))
    clean = SimpleNamespace(name="Other", scorer="exact", annotation_file=ann, official_answers=None,
                            image_root=str(tmp_path))
    suite = SimpleNamespace(tasks=[viz, clean])
    records = [{"name": "1_VizWiz", "scores": {"VizWiz": 50.0}},
               {"name": "2_Other", "scores": {"VizWiz": 75.0, "Other": 10.0}}]
    cells = cross_check_run(repo, suite, records, lambda rec, task: ans)
    assert [(c["stage"], c["task"], c["agree"]) for c in cells] == [("1_VizWiz", "VizWiz", True),
                                                                    ("2_Other", "VizWiz", False)]
    assert cells[1]["coin_repo"] == 50.0 and cells[1]["difference"] == 25.0
    assert annotation_for(SimpleNamespace(scorer="coin_textvqa", official_answers="tv.json")) == "tv.json"
    assert annotation_for(SimpleNamespace(scorer="coin_sqa", image_root="/d/cl_dataset")) == "/d/cl_dataset/ScienceQA"
    assert annotation_for(SimpleNamespace(scorer="coin_gqa")) is None


def test_cli_run_coin_repo_checks_every_coin_cell_of_the_run(tmp_path, capsys, monkeypatch):
    """``cli run --coin-repo``: after the run, each coin_* cell is scored by the checkout's script from the answers
    the runner wrote (RunLayout's eval folders); the cells land in coin_repo_check.json; a disagreement exits 1."""
    import os
    from types import SimpleNamespace

    from llava_dymoe.commands.run import _coin_cross_check
    from llava_dymoe.eval import suite as suite_mod
    from llava_dymoe.protocol.layout import ANSWERS, RunLayout

    repo = _checkout(tmp_path, {"eval_vizwiz": VIZWIZ})
    ans, _, ann = _files(tmp_path, ["Yes", "no"], ["yes", "yes"])  # CoIN: 50 %
    viz = SimpleNamespace(name="VizWiz", scorer="coin_vizwiz", annotation_file=ann, official_answers=None,
                          image_root=str(tmp_path))
    monkeypatch.setattr(suite_mod, "load_suite", lambda path, data_root=None: SimpleNamespace(tasks=[viz]))
    out = tmp_path / "run"
    layout = RunLayout(str(out), "dymoe")
    records = [{"name": "1_VizWiz", "stage": 1, "task": "VizWiz", "scores": {"VizWiz": 50.0}},
               {"name": "2_VizWiz", "stage": 2, "task": "VizWiz", "scores": {"VizWiz": 100.0}}]
    for rec in records:
        os.makedirs(layout.eval_dir(rec["stage"], rec["task"], "VizWiz"))
        with open(os.path.join(layout.eval_dir(rec["stage"], rec["task"], "VizWiz"), ANSWERS), "w") as f:
            f.write(open(ans).read())
    args = SimpleNamespace(output_dir=str(out), method="dymoe", coin_repo=repo, suite="s.yaml", data_root="d",
                           task_order=None, coin_python=None, coin_cwd=None)
    assert _coin_cross_check(args, SimpleNamespace(records=records)) == 1
    cells = json.load(open(out / "coin_repo_check.json"))
    assert [(c["stage"], c["agree"], c["coin_repo"]) for c in cells] == [("1_VizWiz", True, 50.0),
                                                                         ("2_VizWiz", False, 50.0)]
    err = capsys.readouterr()
    assert "DISAGREEMENT on VizWiz" in err.err and "1 of 2 cells agree" in err.out
    records[1]["scores"]["VizWiz"] = 50.0
    assert _coin_cross_check(args, SimpleNamespace(records=records)) == 0
