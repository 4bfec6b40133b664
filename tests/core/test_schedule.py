"""RSR schedule (method.md §3.3): 0 before rsr_start, linear ramp to 1 at the end of the task."""
import pytest

from llava_dymoe.core.schedule import rsr_schedule


@pytest.mark.parametrize("progress,start,expected", [
    (0.0, 0.5, 0.0), (0.25, 0.5, 0.0), (0.4999, 0.5, 0.0), (0.5, 0.5, 0.0), (0.75, 0.5, 0.5),
    (1.0, 0.5, 1.0), (1.7, 0.5, 1.0), (-3.0, 0.5, 0.0),
    (0.0, 0.0, 0.0), (0.3, 0.0, 0.3), (1.0, 0.0, 1.0),
    (0.99, 1.0, 0.0), (1.0, 1.0, 1.0), (0.9, 0.8, 0.5),
])
def test_rsr_schedule_values(progress, start, expected):
    assert rsr_schedule(progress, start) == pytest.approx(expected, abs=1e-12)


def test_rsr_schedule_monotone_and_default_start():
    values = [rsr_schedule(i / 100) for i in range(101)]
    assert values == sorted(values)
    assert values[50] == 0.0 and values[100] == 1.0
    assert rsr_schedule(10 / 20) == 0.0 and rsr_schedule(15 / 20) == pytest.approx(0.5)


@pytest.mark.parametrize("start", [-0.1, 1.5, float("nan"), True])
def test_rsr_schedule_bad_start(start):
    with pytest.raises(ValueError, match="start"):
        rsr_schedule(0.5, start)


def test_rsr_schedule_bad_progress():
    with pytest.raises(ValueError, match="progress"):
        rsr_schedule(float("nan"))
