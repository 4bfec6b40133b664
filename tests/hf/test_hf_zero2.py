"""DeepSpeed ZeRO-2 on one rank (gloo on CPU) on the HF LLaVA host: two DyMoE tasks with scripts/zero2.json
unchanged, task 1's banks bit-identical after task 2.  The first DeepSpeed run of a venv JIT-compiles
``deepspeed_shm_comm`` (about 35 s on idle cores; stack.md section 3)."""
import os

import pytest

transformers = pytest.importorskip("transformers", minversion="5.0")

import torch  # noqa: E402
from hf_helpers import REPO, run_train_hf, train_args  # noqa: E402


def test_zero2_one_rank_two_tasks(hf_tiny, hf_tasks, tmp_path):
    from safetensors.torch import load_file

    from llava_dymoe.integration.llava_args import single_rank_env

    zero2 = ["--deepspeed", os.path.join(REPO, "scripts", "zero2.json")]
    first, second = hf_tasks
    logs = []
    for task, data, prev in ((1, first, None), (2, second, tmp_path / "t1")):
        proc = run_train_hf(train_args(hf_tiny, data, tmp_path / f"t{task}", task, prev=prev, extra=zero2),
                            env_extra=single_rank_env())
        assert proc.returncode == 0, proc.stderr[-3000:]
        logs.append(proc.stderr)
        assert "trained under DeepSpeed ZeRO stage 2 on 1 rank(s)" in proc.stderr
    a = load_file(str(tmp_path / "t1" / "dymoe_experts.safetensors"))
    b = load_file(str(tmp_path / "t2" / "dymoe_experts.safetensors"))
    assert len(a) == 42 and all(torch.equal(b[k], v) for k, v in a.items())
    assert any(k.endswith(".t1") and ".dymoe_B." in k and v.abs().sum() > 0 for k, v in b.items())
    assert all("NCCL" not in log for log in logs)
