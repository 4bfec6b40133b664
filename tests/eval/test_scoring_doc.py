"""Every difference row of docs/scoring.md is scored by the coin and clean scorers coin.yaml names."""
import json
import os
import re

import pytest

from llava_dymoe.eval.scorers import get
from llava_dymoe.eval.suite import load_suite

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOC = os.path.join(REPO, "docs", "scoring.md")
ROW = re.compile(r"^\| (D\d+) \| ([^|]+) \| `(.*?)` \| `(.*?)` \| ([^|]+) \| ([^|]+) \| (.+) \|$")


def _rows():
    with open(DOC, encoding="utf-8") as f:
        return [m.groups() for m in map(ROW.match, f.read().splitlines()) if m]


def _score(name, pred, ref):
    try:
        return get(name)(pred, ref)
    except ValueError:
        return "error"


def test_rows_are_numbered_once_and_cover_every_task():
    rows = _rows()
    assert [r[0] for r in rows] == [f"D{i}" for i in range(1, len(rows) + 1)]
    assert {r[1].strip() for r in rows} == set(load_suite(os.path.join(REPO, "eval_suites", "coin.yaml")).task_names)


@pytest.mark.parametrize("row", _rows(), ids=lambda r: r[0])
def test_difference_row(row):
    _, task, pred, ref, coin, clean, _ = row
    spec = load_suite(os.path.join(REPO, "eval_suites", "coin.yaml")).task(task.strip())
    pred, ref = json.loads(pred), json.loads(ref)
    clean_ref = ref["answer"] if isinstance(ref, dict) else ref
    want_coin = coin.strip() if coin.strip() == "error" else float(coin)
    assert _score(spec.scorer, pred, ref) == want_coin
    assert _score(spec.clean_scorer, pred, clean_ref) == float(clean)
    assert want_coin != float(clean)  # a row must show a difference
