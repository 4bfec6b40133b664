"""Base-model fingerprint (issue 17 item 5): each task checkpoint records the base LLM; continuing a sequence
on, or evaluating with, another base of the same architecture is refused with both fingerprints named.

Another base = the tiny LLaVA built with another seed (same config, other weights).  Only the refusals run
processes (no training: the pre-flight refuses before any model loads); the accepted paths load in process."""
import json
import os
import shutil

import pytest

from llava_dymoe.integration import base_model as bm
from llava_dymoe.integration import checkpoint as ckpt
from llava_dymoe.integration.eval_loader import load_dymoe_for_eval
from llava_dymoe.integration.llava_args import dymoe_flags, llava_train_argv
from reliability_helpers import one_line_refusal as _one_line_refusal, run_module as _run, tree_hashes as _hashes


@pytest.fixture(scope="module")
def other_base(tmp_path_factory):
    """A tiny LLaVA of the same architecture with other weights (seed 1)."""
    from llava_dymoe.tiny import build_tiny_llava

    return build_tiny_llava(str(tmp_path_factory.mktemp("tiny_other")), seed=1)


def test_fingerprint_is_recorded_and_tells_bases_apart(sequence, tiny, other_base, tmp_path):
    mine = bm.base_fingerprint(tiny.llm)
    assert mine["config_sha256"] and mine["weights_fingerprint"]
    for path in sequence:
        assert bm.saved_fingerprint(path) == mine
    copy = tmp_path / "moved_llm"
    shutil.copytree(tiny.llm, copy)
    moved = bm.base_fingerprint(str(copy))  # another folder, the same model: the same base
    assert not bm.mismatch(mine, moved) and moved["weights_fingerprint"] == mine["weights_fingerprint"]
    other = bm.base_fingerprint(other_base.llm)
    assert other["config_sha256"] == mine["config_sha256"] and bm.mismatch(mine, other)
    cfg = json.load(open(copy / "config.json"))
    cfg["rope_theta"] = cfg.get("rope_theta", 10000.0) * 2
    json.dump(cfg, open(copy / "config.json", "w"))
    assert bm.base_fingerprint(str(copy))["config_sha256"] != mine["config_sha256"]
    assert bm.base_fingerprint("no-such-org/no-such-model") is None  # not resolvable offline: unchecked


def _task2_argv(tiny, base, data, prev, out, *extra):
    return llava_train_argv(base, tiny.clip, data.train_json, data.image_folder, str(out), lora=False, max_steps=1,
                            extra=dymoe_flags("dymoe", 2, str(prev)) + list(extra))


def test_continuing_on_another_base_is_refused_before_loading(sequence, tiny, other_base, smoke_data, tmp_path):
    t1 = sequence[0]
    before = _hashes(t1)
    out = tmp_path / "2_task_other_base"
    res = _run("llava_dymoe.train", *_task2_argv(tiny, other_base.llm, smoke_data, t1, out), timeout=300)
    line = _one_line_refusal(res, "--model_name_or_path", "is not the base model", "--dymoe_allow_base_mismatch True")
    saved, given = bm.saved_fingerprint(t1), bm.base_fingerprint(other_base.llm)
    assert saved["weights_fingerprint"][:12] in line and given["weights_fingerprint"][:12] in line
    assert not out.exists() and _hashes(t1) == before


def test_the_override_and_old_checkpoints_pass_the_check(sequence, tiny, other_base, smoke_data, tmp_path):
    from llava_dymoe.trainer.preflight import check_sequence_flags

    t1 = sequence[0]
    check_sequence_flags(_task2_argv(tiny, other_base.llm, smoke_data, t1, tmp_path / "o",
                                     "--dymoe_allow_base_mismatch", "True"))
    old = _without_fingerprint(t1, tmp_path / "old_t1")
    check_sequence_flags(_task2_argv(tiny, other_base.llm, smoke_data, old, tmp_path / "o"))
    check_sequence_flags(_task2_argv(tiny, tiny.llm, smoke_data, t1, tmp_path / "o"))  # the same base


def _without_fingerprint(path, dest):
    """A copy of a finished checkpoint as written before fingerprints existed (marker hashes updated)."""
    shutil.copytree(path, dest)
    cfg = json.load(open(dest / ckpt.CONFIG))
    del cfg["dymoe"]["base_model"]
    json.dump(cfg, open(dest / ckpt.CONFIG, "w"), indent=2)
    marker = json.load(open(dest / ckpt.MARKER))
    marker["sha256"][ckpt.CONFIG] = ckpt.sha256_file(str(dest / ckpt.CONFIG))
    json.dump(marker, open(dest / ckpt.MARKER, "w"))
    return dest


def test_evaluating_with_another_base_is_refused(sequence, tiny, other_base, smoke_data, tmp_path):
    t2 = sequence[1]
    before = _hashes(t2)
    with pytest.raises(ckpt.CheckpointError, match="--model-base .* is not the base model") as err:
        load_dymoe_for_eval(t2, other_base.llm, "x", device="cpu", device_map="cpu")
    assert bm.saved_fingerprint(t2)["weights_fingerprint"][:12] in str(err.value)
    assert bm.base_fingerprint(other_base.llm)["weights_fingerprint"][:12] in str(err.value)
    # through the eval shim: one line, exit 2, no answers file
    answers = tmp_path / "answers.jsonl"
    res = _run("llava_dymoe.eval", "llava.eval.model_vqa_loader", "--model-path", t2, "--model-base",
               other_base.llm, "--question-file", smoke_data.questions, "--image-folder", smoke_data.image_folder,
               "--answers-file", answers, "--temperature", "0", "--conv-mode", "vicuna_v1", timeout=300)
    _one_line_refusal(res, "--model-base", bm.EVAL_ALLOW_ENV + "=1")
    assert not answers.exists() and _hashes(t2) == before
    # the override, and a checkpoint written before fingerprints existed, load
    load_dymoe_for_eval(t2, other_base.llm, "x", device="cpu", device_map="cpu", allow_base_mismatch=True)
    old = _without_fingerprint(t2, tmp_path / "old_t2")
    load_dymoe_for_eval(str(old), other_base.llm, "x", device="cpu", device_map="cpu")
