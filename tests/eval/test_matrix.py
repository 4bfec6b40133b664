"""AccuracyMatrix: cells, CSV / JSON round trips, malformed CSV errors."""
import math

import numpy as np
import pytest

from llava_dymoe.eval.matrix import AccuracyMatrix

TASKS = ["ScienceQA", "TextVQA", "ImageNet"]


def _matrix():
    m = AccuracyMatrix(TASKS, ["1_ScienceQA", "2_TextVQA"])
    m.set("1_ScienceQA", "ScienceQA", 82.5)
    m.set(1, 0, 80.25)
    m.set("2_TextVQA", "TextVQA", 57.03)
    return m


def test_new_matrix_is_all_nan_and_cells_set_get():
    m = AccuracyMatrix(TASKS, ["s1"])
    assert m.values.shape == (1, 3) and np.isnan(m.values).all()
    m.set("s1", "TextVQA", 12.5)
    assert m.get(0, 1) == 12.5 and math.isnan(m.get("s1", "ImageNet"))
    m.set("s1", "TextVQA", float("nan"))
    assert math.isnan(m.get("s1", "TextVQA"))
    with pytest.raises(KeyError, match="unknown task 'GQA'"):
        m.get("s1", "GQA")
    with pytest.raises(IndexError):
        m.get(3, 0)
    with pytest.raises(ValueError, match="inf"):
        m.set("s1", "TextVQA", float("inf"))


def test_add_stage_and_validation():
    m = AccuracyMatrix(TASKS)
    assert m.values.shape == (0, 3)
    assert m.add_stage("a") == 0 and m.add_stage("b") == 1
    assert m.values.shape == (2, 3) and np.isnan(m.values).all()
    with pytest.raises(ValueError, match="already exists"):
        m.add_stage("a")
    with pytest.raises(ValueError, match="duplicate task"):
        AccuracyMatrix(["a", "a"])
    with pytest.raises(ValueError, match="shape"):
        AccuracyMatrix(["a", "b"], ["s"], [[1.0]])


def test_constructor_copies_values():
    vals = np.array([[1.0, np.nan]])
    m = AccuracyMatrix(["a", "b"], ["s"], vals)
    m.set(0, 1, 5.0)
    assert np.isnan(vals[0, 1])


def test_csv_round_trip_is_exact(tmp_path):
    m = _matrix()
    path = m.to_csv(str(tmp_path / "matrix.csv"))
    text = open(path).read()
    assert text == "stage,ScienceQA,TextVQA,ImageNet\n1_ScienceQA,82.5,,\n2_TextVQA,80.25,57.03,\n"
    back = AccuracyMatrix.from_csv(path)
    assert back == m
    back.to_csv(str(tmp_path / "again.csv"))
    assert open(tmp_path / "again.csv").read() == text


def test_csv_reads_nan_spellings_spaces_and_blank_lines(tmp_path):
    p = tmp_path / "m.csv"
    p.write_text("stage, a , b\n\ns1, 10 ,NaN\ns2,nan,\n")
    m = AccuracyMatrix.from_csv(str(p))
    assert m.tasks == ["a", "b"] and m.stages == ["s1", "s2"]
    assert m.get("s1", "a") == 10.0 and np.isnan(m.values[[0, 1, 1], [1, 0, 1]]).all()


def test_json_round_trip(tmp_path):
    m = _matrix()
    d = m.to_dict()
    assert d["values"][0] == [82.5, None, None]
    path = m.to_json(str(tmp_path / "matrix.json"))
    assert AccuracyMatrix.from_json(path) == m
    empty = AccuracyMatrix(TASKS)
    assert AccuracyMatrix.from_dict(empty.to_dict()) == empty


@pytest.mark.parametrize("text,match", [
    ("", "empty file"),
    ("task,a,b\ns1,1,2\n", "line 1: first header cell must be 'stage'"),
    ("stage,a,a\ns1,1,2\n", "line 1: duplicate task"),
    ("stage,a,\ns1,1,2\n", "line 1: empty task"),
    ("stage,a,b\ns1,1\n", "line 2: 2 cells, but the header has 3"),
    ("stage,a,b\ns1,1,2,3\n", "line 2: 4 cells"),
    ("stage,a,b\ns1,1,2\n\ns2,x,2\n", "line 4: cell for task 'a' is 'x', not a number"),
    ("stage,a,b\ns1,1,inf\n", "line 2: cell for task 'b' is 'inf'"),
    ("stage,a,b\ns1,1,2\ns1,3,4\n", "line 3: stage 's1' appears twice"),
    ("stage,a,b\n,1,2\n", "line 2: empty stage name"),
])
def test_malformed_csv(tmp_path, text, match):
    p = tmp_path / "matrix.csv"
    p.write_text(text)
    with pytest.raises(ValueError, match=match) as info:
        AccuracyMatrix.from_csv(str(p))
    assert str(p) in str(info.value)


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        AccuracyMatrix.from_csv(str(tmp_path / "nope.csv"))
    bad = tmp_path / "m.json"
    bad.write_text('{"tasks": ["a"]}')
    with pytest.raises(ValueError, match="no 'stages' field"):
        AccuracyMatrix.from_json(str(bad))
