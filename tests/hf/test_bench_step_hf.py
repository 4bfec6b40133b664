"""benchmarks/bench_step_hf.py: adapter sizes by hand on both HF hosts, and one timed round runs."""
import os
import sys

import pytest

transformers = pytest.importorskip("transformers", minversion="5.0")

from hf_helpers import REPO  # noqa: E402

sys.path.insert(0, os.path.join(REPO, "benchmarks"))
import bench_step_hf  # noqa: E402


@pytest.mark.parametrize("host_model", ["hf-llava", "qwen2_5_vl"], indirect=True)
def test_adapter_sizes_by_hand(host_model):
    host, folder = host_model
    # tiny LLM: d 64, MLP 128, 2 layers; q/k/v/o and gate/up read 64, down reads 128
    per_layer_lora = 64 * (4 * (64 + 64) + 2 * (64 + 128) + (128 + 64))
    assert bench_step_hf.make_method(host, folder, "lora64")[1] == 2 * per_layer_lora == 139_264
    routers = 16 * (6 * 64 + 128)  # 16 router rows over each projection's input
    for method in ("dymoe1", "dymoe4"):  # only the newest bank trains
        model, n = bench_step_hf.make_method(host, folder, method)
        assert n == 2 * per_layer_lora + 2 * routers == 155_648
        banks = {k for name, p in model.named_parameters() if ".dymoe_A." in name for k in [name.rsplit(".", 1)[-1]]}
        assert len(banks) == int(method[5:])


def test_one_round_prints_the_table():
    rows = bench_step_hf.run(["hf-llava"], ["tiny"], batch=2, new_tokens=2, repeats=1, warmup=0)
    assert [r["method"] for r in rows] == list(bench_step_hf.METHODS)
    assert all(r["train_ms"] > 0 and r["gen_ms"] > 0 for r in rows)
    text = bench_step_hf.table(rows)
    assert text.count("\n| hf-llava | tiny |") == 3 and "| lora64 | 139,264 |" in text
