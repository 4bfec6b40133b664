"""Fixtures of the reliability tests: a fresh smoke dataset per test (the test may break it)."""
import pytest


@pytest.fixture
def data(tmp_path):
    """A fresh 8-sample smoke dataset the test may break."""
    from llava_dymoe.smoke_data import write_smoke_dataset

    return write_smoke_dataset(str(tmp_path / "data"), n_train=8, n_test=4, seed=0)
