"""Shared fixtures: one tiny LLaVA and one smoke dataset per test session (built locally, no hub)."""
import os
import sys

import pytest

# the reliability helpers (file hashes, entry-point subprocesses, refusal checks) serve every test folder
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "reliability"))


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """The embedded default model: ``llava_dymoe.tiny`` with the default sizes and seed 0."""
    from llava_dymoe.tiny import build_tiny_llava

    return build_tiny_llava(str(tmp_path_factory.mktemp("tiny")), seed=0)


@pytest.fixture(scope="session")
def smoke_data(tmp_path_factory):
    from llava_dymoe.smoke_data import write_smoke_dataset

    return write_smoke_dataset(str(tmp_path_factory.mktemp("smoke_data")), n_train=16, n_test=4, seed=0)


@pytest.fixture(autouse=True)
def _quiet_threads(monkeypatch):
    # keep subprocesses from oversubscribing the 2 cores of CI machines
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "2"))
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
