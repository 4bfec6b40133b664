"""UCIT's four question tasks: 30+ hand cases each, expected score under both profiles.

Every row states, by hand, the score of one (prediction, answer) pair under the ``ucit`` profile
(the authors' ``eval_deepseek_r1.py``: ``pred.upper() == answer.upper()``, nothing stripped)
and under the clean profile ``ucit.yaml`` gives the task (``exact`` for ImageNet-R and ArxivQA:
lower-case, strip, one trailing period; ``vqa_soft`` with one answer for IconQA and CLEVR-Math:
the VQA normalisation of numbers, articles and punctuation).  Each row is also checked against
a naive re-statement of the authors' rule written here, independent of the package.
"""
import json
import os

import pytest

from llava_dymoe.eval.scorers import get, score_file
from llava_dymoe.eval.suite import load_suite

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def authors_rule(pred, answer):
    """The authors' per-sample rule, re-stated naively: upper-case both strings, compare."""
    return 1.0 if pred.upper() == answer.upper() else 0.0


# (prediction, answer, ucit, clean)
IMAGENET_R = [  # clean = exact
    ("goldfish", "goldfish", 1, 1),
    ("Goldfish", "goldfish", 1, 1),
    ("GOLDFISH", "goldfish", 1, 1),
    ("goldfish.", "goldfish", 0, 1),
    ("goldfish ", "goldfish", 0, 1),
    (" goldfish", "goldfish", 0, 1),
    ("goldfish\n", "goldfish", 0, 1),
    ("a goldfish", "goldfish", 0, 0),
    ("goldfish..", "goldfish", 0, 0),
    ("gold fish", "goldfish", 0, 0),
    ("The image shows a goldfish.", "goldfish", 0, 0),
    ("", "goldfish", 0, 0),
    ("great white shark", "great white shark", 1, 1),
    ("Great White Shark", "great white shark", 1, 1),
    ("great_white_shark", "great white shark", 0, 0),
    ("great  white shark", "great white shark", 0, 0),
    ("great white shark!", "great white shark", 0, 0),
    ("hammerhead", "hammerhead shark", 0, 0),
    ("hammerhead shark", "hammerhead", 0, 0),
    ("tabby cat", "tabby cat", 1, 1),
    ("Tabby cat.", "tabby cat", 0, 1),
    ("cat", "tabby cat", 0, 0),
    ("jack-o'-lantern", "jack-o'-lantern", 1, 1),
    ("jack-o-lantern", "jack-o'-lantern", 0, 0),
    ("jack o'lantern", "jack-o'-lantern", 0, 0),
    ("straße", "STRASSE", 1, 0),   # upper() folds ß to SS, lower() does not
    ("STRASSE", "straße", 1, 0),
    ("ﬁsh", "FISH", 1, 0),        # the ligature upper()s to FI
    ("pug", "pug", 1, 1),
    ("pug\t", "pug", 0, 1),
    ("pugs", "pug", 0, 0),
    ("Pug. ", "pug", 0, 1),
]

ARXIVQA = [  # clean = exact
    ("A", "A", 1, 1),
    ("a", "A", 1, 1),
    ("B", "A", 0, 0),
    ("A.", "A", 0, 1),
    ("A. ", "A", 0, 1),
    (" A", "A", 0, 1),
    ("(A)", "A", 0, 0),
    ("A)", "A", 0, 0),
    ("[A]", "A", 0, 0),
    ("Option A", "A", 0, 0),
    ("The answer is A.", "A", 0, 0),
    ("A. The curve increases.", "A", 0, 0),
    ("A\n", "A", 0, 1),
    ("", "A", 0, 0),
    ("AB", "A", 0, 0),
    ("A, B", "A", 0, 0),
    ("D", "D", 1, 1),
    ("d", "D", 1, 1),
    ("d.", "D", 0, 1),
    ("C", "C) 0.5", 0, 0),
    ("C) 0.5", "C) 0.5", 1, 1),
    ("c) 0.5", "C) 0.5", 1, 1),
    ("C) 0.50", "C) 0.5", 0, 0),
    ("C)  0.5", "C) 0.5", 0, 0),
    ("C) 0.5.", "C) 0.5", 0, 1),
    ("B. Decreasing", "B. Decreasing", 1, 1),
    ("b. decreasing", "B. Decreasing", 1, 1),
    ("B. Decreasing.", "B. Decreasing", 0, 1),
    ("B", "B. Decreasing", 0, 0),
    ("Decreasing", "B. Decreasing", 0, 0),
    ("ß", "SS", 1, 0),
    ("E", "e", 1, 1),
]

ICONQA = [  # clean = vqa_soft against one answer (normalised exact match)
    ("3", "3", 1, 1),
    ("three", "3", 0, 1),
    ("Three", "3", 0, 1),
    ("3.", "3", 0, 1),
    ("3 ", "3", 0, 1),
    ("03", "3", 0, 0),
    ("3.0", "3", 0, 0),
    ("4", "3", 0, 0),
    ("", "3", 0, 0),
    ("There are 3.", "3", 0, 0),
    ("10", "10", 1, 1),
    ("ten", "10", 0, 1),
    ("eleven", "11", 0, 0),          # the VQA table stops at ten
    ("1,000", "1000", 0, 1),         # commas are deleted
    ("1000", "1,000", 0, 1),
    ("circle", "circle", 1, 1),
    ("Circle", "circle", 1, 1),
    ("a circle", "circle", 0, 1),    # articles dropped
    ("the circle", "circle", 0, 1),
    ("circles", "circle", 0, 0),
    ("circle!", "circle", 0, 1),
    ("(circle)", "circle", 0, 1),
    ("yes", "yes", 1, 1),
    ("Yes.", "yes", 0, 1),
    ("no", "yes", 0, 0),
    ("3:30", "3:30", 1, 1),
    ("3:30.", "3:30", 0, 1),
    ("half past three", "3:30", 0, 0),
    ("5 cm", "5", 0, 0),             # units are kept
    ("5cm", "5 cm", 0, 0),
    ("$5", "5", 0, 0),               # $ is not a VQA punctuation mark
    ("none", "0", 0, 1),             # none -> 0
]

CLEVR_MATH = [  # clean = vqa_soft against one answer (normalised exact match)
    ("2", "2", 1, 1),
    ("two", "2", 0, 1),
    ("Two", "2", 0, 1),
    ("TWO.", "2", 0, 1),
    ("2.", "2", 0, 1),
    ("2 ", "2", 0, 1),
    (" 2", "2", 0, 1),
    ("2\n", "2", 0, 1),
    ("3", "2", 0, 0),                # off by one: wrong under both
    ("1", "2", 0, 0),
    ("2.0", "2", 0, 0),
    ("02", "2", 0, 0),
    ("+2", "2", 0, 1),               # + is a punctuation mark, removed
    ("-2", "2", 0, 1),               # so is -: a negative count reads as its magnitude
    ("0", "0", 1, 1),
    ("zero", "0", 0, 1),
    ("none", "0", 0, 1),
    ("no", "0", 0, 0),
    ("", "0", 0, 0),
    ("The answer is 2.", "2", 0, 0),
    ("2 objects", "2", 0, 0),
    ("2 cubes", "2", 0, 0),
    ("10", "10", 1, 1),
    ("ten", "10", 0, 1),
    ("1 0", "10", 0, 0),
    ("7", "7", 1, 1),
    ("seven", "7", 0, 1),
    ("sevens", "7", 0, 0),
    ("7!", "7", 0, 1),
    ("7?", "7", 0, 1),
    ("²", "2", 0, 0),               # superscript two is not the digit
    ("2", "two", 0, 1),              # a word answer normalises too
]

TASKS = {"ImageNet-R": (IMAGENET_R, "exact"), "ArxivQA": (ARXIVQA, "exact"),
         "IconQA": (ICONQA, "vqa_soft"), "CLEVR-Math": (CLEVR_MATH, "vqa_soft")}
ROWS = [(task, i, *row) for task, (rows, _) in TASKS.items() for i, row in enumerate(rows)]


def test_every_task_has_at_least_30_cases_and_the_suite_uses_these_scorers():
    suite = load_suite(os.path.join(REPO, "eval_suites", "ucit.yaml"))
    for task, (rows, clean) in TASKS.items():
        assert len(rows) >= 30, task
        assert suite.task(task).scorer == "ucit_exact" and suite.task(task).clean_scorer == clean


@pytest.mark.parametrize("task,i,pred,answer,ucit,clean", ROWS, ids=[f"{r[0]}-{r[1]}" for r in ROWS])
def test_hand_case(task, i, pred, answer, ucit, clean):
    assert authors_rule(pred, answer) == ucit, "the hand-stated ucit score disagrees with the authors' rule"
    assert get("ucit_exact")(pred, answer) == ucit
    assert get(TASKS[task][1])(pred, answer) == clean


def _jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


@pytest.mark.parametrize("task", list(TASKS))
def test_file_score_is_the_authors_accuracy_over_answer_lines(tmp_path, task):
    rows, clean = TASKS[task]
    refs, answers = tmp_path / "refs.jsonl", tmp_path / "answers.jsonl"
    _jsonl(refs, [{"question_id": f"q{i}", "answer": a} for i, (_, a, _, _) in enumerate(rows)])
    _jsonl(answers, [{"question_id": f"q{i}", "text": p} for i, (p, _, _, _) in enumerate(rows)])
    got = score_file("ucit_exact", str(answers), str(refs))
    assert got["n"] == len(rows) and got["missing"] == []
    assert got["score"] == pytest.approx(100.0 * sum(r[2] for r in rows) / len(rows))
    assert score_file(clean, str(answers), str(refs))["score"] == pytest.approx(100.0 * sum(r[3] for r in rows)
                                                                                 / len(rows))


def test_runner_profiles_write_the_clean_matrix_with_the_ucit_label(tmp_path):
    from llava_dymoe.eval.matrix import AccuracyMatrix
    from llava_dymoe.eval.profiles import MATRIX_CLEAN_CSV, SUITE_PROFILES, write_clean_outputs
    from llava_dymoe.protocol.layout import RunLayout

    suite = load_suite(os.path.join(REPO, "eval_suites", "ucit.yaml"), data_root=str(tmp_path))
    for task in ("ImageNet-R", "ArxivQA"):
        os.makedirs(os.path.dirname(suite.task(task).reference_file), exist_ok=True)
    _jsonl(suite.task("ImageNet-R").reference_file, [{"question_id": 1, "answer": "goldfish"},
                                                      {"question_id": 2, "answer": "pug"}])
    _jsonl(suite.task("ArxivQA").reference_file, [{"question_id": 1, "answer": "A"}, {"question_id": 2, "answer": "B"}])
    layout = RunLayout(str(tmp_path / "out"), "dymoe")
    answers = {(1, "ImageNet-R"): ["goldfish.", "pug"],   # ucit 50, clean 100
               (2, "ImageNet-R"): ["Goldfish", "pug "],   # ucit 50, clean 100
               (2, "ArxivQA"): ["A.", "(B)"]}              # ucit 0, clean 50
    records = []
    for t, task in ((1, "ImageNet-R"), (2, "ArxivQA")):
        scores = {}
        for (s, evaluated), preds in answers.items():
            if s == t:
                path = os.path.join(layout.eval_dir(t, task, evaluated), "answers.jsonl")
                os.makedirs(os.path.dirname(path), exist_ok=True)
                _jsonl(path, [{"question_id": i + 1, "text": p} for i, p in enumerate(preds)])
                scores[evaluated] = score_file("ucit_exact", path, suite.task(evaluated).reference_file)["score"]
        records.append({"stage": t, "task": task, "name": layout.stage_name(t, task), "scores": scores})
    assert records[1]["scores"] == {"ImageNet-R": 50.0, "ArxivQA": 0.0}
    os.makedirs(layout.root, exist_ok=True)
    (tmp_path / "out/report.md").write_text("# run\n")
    clean = write_clean_outputs(layout, suite, records)
    nan = float("nan")
    want = AccuracyMatrix(suite.task_names, ["1_ImageNet-R", "2_ArxivQA"],
                          [[100.0, nan, nan, nan, nan, nan], [100.0, 50.0, nan, nan, nan, nan]])
    assert clean == want and AccuracyMatrix.from_csv(str(tmp_path / "out" / MATRIX_CLEAN_CSV)) == want
    report = (tmp_path / "out/report.md").read_text()
    assert f"| {SUITE_PROFILES['ucit'][0]} | `matrix.csv` |" in report and SUITE_PROFILES["ucit"][1] in report


def test_the_difference_rows_of_docs_scoring_md():
    import re

    row = re.compile(r"^\| (U\d+) \| ([^|]+) \| `(.*?)` \| `(.*?)` \| ([01]) \| ([01]) \| (.+) \|$")
    with open(os.path.join(REPO, "docs", "scoring.md"), encoding="utf-8") as f:
        rows = [m.groups() for m in map(row.match, f.read().splitlines()) if m]
    assert [r[0] for r in rows] == [f"U{i}" for i in range(1, len(rows) + 1)] and len(rows) >= 8
    suite = load_suite(os.path.join(REPO, "eval_suites", "ucit.yaml"))
    assert {r[1].strip() for r in rows} == {"ImageNet-R", "ArxivQA", "IconQA", "CLEVR-Math"}
    for _, task, pred, ref, ucit, clean, _ in rows:
        spec = suite.task(task.strip())
        pred, ref = json.loads(pred), json.loads(ref)
        assert get(spec.scorer)(pred, ref) == authors_rule(pred, ref) == float(ucit)
        assert get(spec.clean_scorer)(pred, ref) == float(clean) != float(ucit)
