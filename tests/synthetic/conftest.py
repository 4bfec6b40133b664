"""One small synthetic suite per test session (written locally in about a second)."""
import pytest


@pytest.fixture(scope="session")
def synthetic_suite(tmp_path_factory):
    from llava_dymoe.synthetic.generate import generate_suite

    return generate_suite(str(tmp_path_factory.mktemp("synthetic")), seed=0, n_train=60, n_test=30)
