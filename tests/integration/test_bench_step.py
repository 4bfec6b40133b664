"""benchmarks/bench_step.py: the 7B figures by hand, and the per-layer formula against built models."""
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))
import bench_step  # noqa: E402


def test_7b_figures_by_hand():
    rows = {r["method"]: r for r in bench_step.figures_7b()}
    # one DyMoE bank per projection: 64 x (in + out) + 16 router rows x in
    attn = 64 * (4096 + 4096) + 16 * 4096
    mlp_up = 64 * (4096 + 11008) + 16 * 4096
    down = 64 * (11008 + 4096) + 16 * 11008
    assert rows["dymoe"]["adapter"] == 32 * (4 * attn + 2 * mlp_up + down) == 178_126_848
    assert rows["lora128"]["adapter"] == 32 * 128 * (4 * 8192 + 3 * 15104) == 319_815_680
    proj = 1024 * 4096 + 4096 + 4096 * 4096 + 4096
    assert rows["dymoe"]["trainable"] == 178_126_848 + proj
    assert rows["dymoe"]["adam_fp32"] == 8 * rows["dymoe"]["trainable"]
    assert rows["dymoe"]["ckpt_bf16_after_8"] == 2 * (8 * 178_126_848 + proj)


@pytest.mark.parametrize("methods", [("lora128", "lora64", "dymoe1", "dymoe3")])
def test_formula_matches_built_models_and_one_step_runs(tiny, methods, tmp_path):
    import torch
    size = bench_step.SIZES["tiny"]
    base = bench_step.build_base(size, tiny.clip, torch.float32, "cpu")
    models = {}
    for m in methods:
        models[m], params = bench_step.make_method(base, m, torch.float32)
        assert all(p.requires_grad for p in params)
    bench_step.check_formula(size, models)  # raises SystemExit on a mismatch
    # the shared base: one copy of the frozen weights
    w = base.get_model().layers[0].self_attn.q_proj.weight
    for m, model in models.items():
        q = dict(model.named_modules())
        assert any(getattr(mod, "weight", None) is w for mod in q.values()), m
    size = bench_step.Size(**{**size.__dict__, "seq": 16, "batch": 1})
    batch = bench_step.make_batch(size, 32, "cpu", torch.float32)
    step, _ = bench_step.train_step_fn(models["dymoe3"], [p for p in models["dymoe3"].parameters()
                                                           if p.requires_grad], batch, "cpu")
    step()
