"""Metrics on hand-computed matrices (full, partial, T = 1, NaN upper triangle); inputs never mutated."""
import math

import numpy as np
import pytest

from llava_dymoe.eval import metrics as M
from llava_dymoe.eval.matrix import AccuracyMatrix

NAN = float("nan")
# R[t, i]: score on task i after stage t
R = np.array([
    [80.0, NAN, NAN],
    [85.0, 60.0, NAN],
    [50.0, 54.0, 100.0],
])


def test_full_matrix_hand_computed():
    assert M.mfn(R) == 68.0                     # (50 + 54 + 100) / 3
    assert M.maa(R) == 73.5                     # (80 + (85+60)/2 + 68) / 3
    assert M.bwt(R) == -18.0                    # ((50-80) + (54-60)) / 2
    assert M.forgetting(R) == 20.5              # ((max(80,85)-50) + (60-54)) / 2
    assert M.mft(R) == 80.0                     # (80 + 60 + 100) / 3


def test_partial_run_uses_finished_stages():
    part = R[:2]
    assert M.mfn(part) == 72.5                  # (85 + 60) / 2
    assert M.maa(part) == 76.25                 # (80 + 72.5) / 2
    assert M.bwt(part) == 5.0                   # 85 - 80
    assert M.forgetting(part) == -5.0           # max(80) - 85
    assert M.mft(part) == 70.0


def test_single_stage():
    one = np.array([[80.0, NAN, NAN]])
    s = M.summary(one)
    assert (s["mfn"], s["maa"], s["bwt"], s["forgetting"], s["mft"]) == (80.0, 80.0, 0.0, 0.0, 80.0)
    assert not any(isinstance(v, float) and math.isnan(v) for v in s.values())


def test_upper_triangle_is_ignored():
    filled = R.copy()
    filled[0, 1:] = [5.0, 7.0]                  # zero-shot scores on future tasks
    filled[1, 2] = 9.0
    assert M.summary(filled)["mfn"] == M.summary(R)["mfn"]
    for f in (M.mfn, M.maa, M.bwt, M.forgetting, M.mft):
        assert f(filled) == f(R)


def test_inputs_not_mutated():
    arr = R.copy()
    m = AccuracyMatrix(["a", "b", "c"], ["s1", "s2", "s3"], R)
    before = m.values.copy()
    M.summary(arr)
    M.summary(m)
    np.testing.assert_array_equal(arr, R)
    np.testing.assert_array_equal(m.values, before)
    lst = [[80.0, None], [70.0, 60.0]]
    M.summary(np.array(lst, dtype=float))
    assert lst == [[80.0, None], [70.0, 60.0]]


def test_summary_names_and_types():
    m = AccuracyMatrix(["a", "b", "c"], ["s1", "s2", "s3"], R)
    s = M.summary(m)
    assert list(s) == ["mfn", "maa", "bwt", "forgetting", "mft", "tasks", "stages"]
    assert s["tasks"] == ["a", "b", "c"] and s["stages"] == ["s1", "s2", "s3"]
    assert all(type(s[k]) is float for k in ("mfn", "maa", "bwt", "forgetting", "mft"))


def test_missing_required_cells_raise_with_names():
    m = AccuracyMatrix(["a", "b", "c"], ["s1", "s2", "s3"], R)
    m.set("s3", "b", NAN)
    with pytest.raises(ValueError, match="task 'b' after stage 's3'"):
        M.mfn(m)
    holes = R.copy()
    holes[1, 0] = NAN                           # intermediate cell: MAA needs it, forgetting does not
    with pytest.raises(ValueError, match="MAA"):
        M.maa(holes)
    assert M.forgetting(holes) == ((80 - 50) + (60 - 54)) / 2
    assert M.mfn(holes) == 68.0
    diag = R.copy()
    diag[1, 1] = NAN
    for f in (M.bwt, M.mft, M.forgetting):
        with pytest.raises(ValueError, match="stage 1"):
            f(diag)


def test_shape_errors():
    with pytest.raises(ValueError, match="3 stages but 2 tasks"):
        M.mfn(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="no stages"):
        M.summary(AccuracyMatrix(["a"]))
    with pytest.raises(ValueError, match="2-D"):
        M.mfn([1.0, 2.0])
