"""DeepSpeed on one rank (gloo on CPU) on the HF hosts, with scripts/zero2.json and zero3.json unchanged: two DyMoE
tasks, task 1's banks bit-identical after task 2, and task 1's banks equal to a plain (no DeepSpeed) run of the
same task to float rounding (DeepSpeed's optimizer and, under ZeRO-3, gathered partitioned parameters).
The first DeepSpeed run of a venv JIT-compiles ``deepspeed_shm_comm`` (about 35 s on idle cores; stack.md)."""
import os

import pytest

transformers = pytest.importorskip("transformers", minversion="5.0")

import torch  # noqa: E402
from hf_helpers import REPO, run_train_hf, train_args  # noqa: E402


@pytest.mark.parametrize("host_model,stage", [("hf-llava", 2), ("hf-llava", 3), ("qwen2_5_vl", 2), ("qwen2_5_vl", 3)],
                         indirect=["host_model"])
def test_zero_one_rank_two_tasks(host_model, stage, hf_tasks, tmp_path):
    from safetensors.torch import load_file

    from llava_dymoe.integration.llava_args import single_rank_env

    ds = ["--deepspeed", os.path.join(REPO, "scripts", f"zero{stage}.json")]
    model = host_model[1]
    first, second = hf_tasks
    plain = run_train_hf(train_args(model, first, tmp_path / "plain", 1))
    assert plain.returncode == 0, plain.stderr[-3000:]
    for task, data, prev in ((1, first, None), (2, second, tmp_path / "t1")):
        proc = run_train_hf(train_args(model, data, tmp_path / f"t{task}", task, prev=prev, extra=ds),
                            env_extra=single_rank_env())
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert f"trained under DeepSpeed ZeRO stage {stage} on 1 rank(s)" in proc.stderr
        assert "NCCL" not in proc.stderr
    ref = load_file(str(tmp_path / "plain" / "dymoe_experts.safetensors"))
    a = load_file(str(tmp_path / "t1" / "dymoe_experts.safetensors"))
    b = load_file(str(tmp_path / "t2" / "dymoe_experts.safetensors"))
    assert len(a) == 42 and all(torch.equal(b[k], v) for k, v in a.items())
    assert any(k.endswith(".t1") and ".dymoe_B." in k and v.abs().sum() > 0 for k, v in b.items())
    assert set(a) == set(ref) and any(v.abs().sum() > 0 for k, v in ref.items() if ".dymoe_B." in k)
    worst = max(float((a[k] - v).abs().max()) for k, v in ref.items())
    assert worst < 5e-5, worst  # measured: at most 1e-5 (qwen2_5_vl, ZeRO-3)


@pytest.mark.slow
@pytest.mark.parametrize("host_model,stage", [("hf-llava", 2), ("qwen2_5_vl", 3)], indirect=["host_model"])
def test_two_ranks_two_tasks(host_model, stage, hf_tasks, tmp_path):
    """The DeepSpeed launcher with two CPU ranks (gloo): both ranks train, rank 0 writes; old banks kept."""
    import sys

    from safetensors.torch import load_file

    from llava_dymoe.integration.llava_args import free_port

    launcher = [os.path.join(os.path.dirname(sys.executable), "deepspeed"), "--num_gpus", "2", "--master_port",
                str(free_port()), "--module"]
    ds = ["--deepspeed", os.path.join(REPO, "scripts", f"zero{stage}.json")]
    first, second = hf_tasks
    for task, data, prev in ((1, first, None), (2, second, tmp_path / "t1")):
        proc = run_train_hf(train_args(host_model[1], data, tmp_path / f"t{task}", task, prev=prev, extra=ds),
                            launcher=launcher)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
        out = proc.stdout + proc.stderr
        assert f"trained under DeepSpeed ZeRO stage {stage} on 2 rank(s)" in out
    a = load_file(str(tmp_path / "t1" / "dymoe_experts.safetensors"))
    b = load_file(str(tmp_path / "t2" / "dymoe_experts.safetensors"))
    assert len(a) == 42 and all(torch.equal(b[k], v) for k, v in a.items())
