"""Fixtures of the HF-host tests (``make test-hf`` in .venv-hf): the tiny HF LLaVA and two small tasks.

Every test module here starts with ``pytest.importorskip("transformers", minversion="5.0")``, so the folder
skips in the upstream venvs (transformers 4.37.2 / 4.31.0).
"""
import json

import pytest


@pytest.fixture(scope="session")
def hf_tiny(tmp_path_factory):
    from llava_dymoe.hosts.hf_tiny import build_tiny_hf_llava

    return build_tiny_hf_llava(str(tmp_path_factory.mktemp("hf_tiny")), seed=0)


@pytest.fixture(scope="session")
def qwen_tiny(tmp_path_factory):
    from llava_dymoe.hosts.hf_tiny import build_tiny_qwen2_5_vl

    return build_tiny_qwen2_5_vl(str(tmp_path_factory.mktemp("qwen_tiny")), seed=0)


@pytest.fixture(scope="session")
def host_model(request, hf_tiny, qwen_tiny):
    """``(host name, tiny model folder)`` for ``@pytest.mark.parametrize("host_model", HOSTS, indirect=True)``."""
    return request.param, {"hf-llava": hf_tiny, "qwen2_5_vl": qwen_tiny}[request.param]


@pytest.fixture(scope="session")
def hf_tasks(tmp_path_factory):
    """Two LLaVA-format tasks with different answers (task 2 asks for a word, task 1 for a sentence)."""
    from llava_dymoe.smoke_data import write_smoke_dataset

    root = tmp_path_factory.mktemp("hf_tasks")
    first = write_smoke_dataset(str(root / "t1"), n_train=8, n_test=2, seed=0)
    second = write_smoke_dataset(str(root / "t2"), n_train=8, n_test=2, seed=1)
    with open(second.train_json) as f:
        samples = json.load(f)
    for s in samples:  # a second task of its own: one-word answers
        s["conversations"][0]["value"] = "<image>\nAnswer with one word: which colour is the square?"
        s["conversations"][1]["value"] = s["conversations"][1]["value"].split()[-1].rstrip(".")
    with open(second.train_json, "w") as f:
        json.dump(samples, f)
    return first, second
