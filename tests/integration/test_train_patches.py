"""Train patches T1-T3: applied on demand, idempotent, reverted to the very same upstream objects."""
import dataclasses

import pytest

pytestmark = pytest.mark.llava11  # holds on both upstream lines (make test-llava11)


def test_apply_is_idempotent_and_revert_restores_upstream_objects():
    import llava.train.train as T
    from llava_dymoe.patches.train import train_patch_set
    from llava_dymoe.trainer.trainer import DyMoETrainerMixin

    originals = {n: getattr(T, n) for n in ("TrainingArguments", "ModelArguments", "LLaVATrainer",
                                           "safe_save_model_for_hf_trainer")}
    ps = train_patch_set()
    ps.apply()
    try:
        assert issubclass(T.TrainingArguments, originals["TrainingArguments"])
        assert {"dymoe_method", "dymoe_task_id", "dymoe_prev_ckpt", "dymoe_top_k", "dymoe_tau"} <= {
            f.name for f in dataclasses.fields(T.TrainingArguments)}
        assert issubclass(T.LLaVATrainer, DyMoETrainerMixin) and issubclass(T.LLaVATrainer, originals["LLaVATrainer"])
        assert T.safe_save_model_for_hf_trainer.__wrapped__ is originals["safe_save_model_for_hf_trainer"]
        patched = {n: getattr(T, n) for n in originals}
        ps.apply()  # idempotent
        assert {n: getattr(T, n) for n in originals} == patched
        second = train_patch_set().apply()  # a second set sees the sentinel and patches nothing
        try:
            assert second.rebound == () and {n: getattr(T, n) for n in originals} == patched
        finally:
            second.revert()
    finally:
        ps.revert()
    assert {n: getattr(T, n) for n in originals} == originals


def test_importing_the_package_patches_nothing():
    import subprocess
    import sys

    code = ("import llava.train.train as T; orig = T.LLaVATrainer; import llava_dymoe, llava_dymoe.train, "
            "llava_dymoe.patches.train, llava_dymoe.trainer.trainer; assert T.LLaVATrainer is orig; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_attn_implementation_flag_is_split_off():
    from llava_dymoe.train import seed_from_argv, split_attn_implementation

    assert split_attn_implementation(["--a", "1", "--attn_implementation", "flash_attention_2", "--b"]) == (
        "flash_attention_2", ["--a", "1", "--b"])
    assert split_attn_implementation(["--attn_implementation=sdpa"]) == ("sdpa", [])
    with pytest.raises(SystemExit, match="choose eager, sdpa or flash_attention_2"):
        split_attn_implementation(["--attn_implementation", "flash"])
    assert seed_from_argv(["--seed", "7"]) == 7 and seed_from_argv([]) == 42
