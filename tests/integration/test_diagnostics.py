"""Routing diagnostics on real tiny checkpoints: training-time logging, ``drift`` and ``tokens`` commands."""
import json
import os

import pytest

from llava_dymoe.cli import main
from llava_dymoe.integration import checkpoint as ckpt
from llava_dymoe.integration.llava_args import DYMOE_TRAIN_MODULE, dymoe_flags, llava_train_argv, run_python

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def test_log_routing_writes_logs_and_hashed_summary(sequence, tiny, smoke_data, tmp_path):
    out = tmp_path / "2_task_logged"
    argv = llava_train_argv(tiny.llm, tiny.clip, smoke_data.train_json, smoke_data.image_folder, str(out),
                            lora=False, max_steps=3,
                            extra=dymoe_flags("dymoe", 2, sequence[0], lora_dropout=0, log_routing=True))
    run_python(DYMOE_TRAIN_MODULE, argv, module=True, log_path=str(out) + ".log", timeout=600)
    steps = [h for h in json.load(open(out / "trainer_state.json"))["log_history"] if "loss" in h]
    assert steps
    for h in steps:
        fracs = h["dymoe/frac_new"] + h["dymoe/frac_old"] + h["dymoe/frac_ambiguous"]
        assert fracs == pytest.approx(1.0, abs=1e-6) and 0.0 <= h["dymoe/g_new"] <= 1.0
    marker = ckpt.verify(str(out))
    assert "routing_stats.json" in marker["sha256"]
    record = json.load(open(out / "routing_stats.json"))
    n_modules = tiny.sizes.num_hidden_layers * len(TARGETS)
    assert record["task_id"] == 2 and len(record["layers"]) == n_modules
    row = next(iter(record["layers"].values()))
    assert len(row["bank_mass"]) == 2 and len(row["top1_hist"]) == 32 and row["n_tokens"] > 0
    # without the flag: no file, and the marker covers exactly the standard files (test_sequence)
    assert not os.path.exists(os.path.join(sequence[1], "routing_stats.json"))


def test_extra_file_names_are_checked(tmp_path):
    with pytest.raises(ckpt.CheckpointError, match="plain file name"):
        ckpt.write_task_checkpoint(str(tmp_path), model_config=None, dymoe_cfg=None, method="dymoe", task_id=1,
                                   experts={}, non_lora={}, run_args={}, extra_files={"../x.json": "{}"})
    assert not os.listdir(tmp_path)


def _drift(argv):
    assert main(["drift", *argv]) == 0


def test_drift_is_exactly_zero_for_the_same_checkpoint(sequence, tiny, smoke_data, tmp_path):
    t2 = sequence[1]
    _drift(["--before", t2, "--after", t2, "--questions", smoke_data.questions, "--image-folder",
            smoke_data.image_folder, "--model-base", tiny.llm, "--output-dir", str(tmp_path), "--max-questions", "2"])
    assert {"drift.json", "drift.md", "drift_heatmap.png"} <= set(os.listdir(tmp_path))
    report = json.load(open(tmp_path / "drift.json"))
    (stage,) = report["stages"]
    assert stage["mean_drift"] == 0.0 and stage["mean_top1_changed"] == 0.0
    assert all(m["drift"] == 0.0 and m["top1_changed"] == 0.0 for m in stage["modules"].values())
    assert report["projections"] == list(TARGETS) and report["layers"] == list(range(tiny.sizes.num_hidden_layers))


def test_drift_over_a_sequence(sequence, tiny, smoke_data, tmp_path):
    t1, t2 = sequence
    _drift(["--before", t1, "--after", t2, "--after", t2, "--questions", smoke_data.questions, "--image-folder",
            smoke_data.image_folder, "--model-base", tiny.llm, "--output-dir", str(tmp_path),
            "--references", smoke_data.references, "--max-questions", "2", "--max-new-tokens", "4"])
    assert {"drift.json", "drift.md", "drift_heatmap.png", "drift_by_stage.png"} <= set(os.listdir(tmp_path))
    report = json.load(open(tmp_path / "drift.json"))
    assert report["num_tasks_before"] == 1 and len(report["stages"]) == 2 and report["scorer"] == "exact"
    assert 0.0 <= report["accuracy_before"] <= 1.0
    s = report["stages"][0]
    assert s["num_tasks"] == 2 and 0.0 < s["mean_drift"] < 1.0 and 0.0 <= s["accuracy"] <= 1.0
    assert len(s["drift_matrix"]) == tiny.sizes.num_hidden_layers and len(s["drift_matrix"][0]) == len(TARGETS)
    assert report["stages"][1]["mean_drift"] == s["mean_drift"]
    assert "| layer | q_proj" in open(tmp_path / "drift.md").read()


def test_drift_rejects_reversed_order(sequence, tiny, smoke_data, tmp_path, capsys):
    t1, t2 = sequence
    assert main(["drift", "--before", t2, "--after", t1, "--questions", smoke_data.questions, "--image-folder",
                 smoke_data.image_folder, "--model-base", tiny.llm, "--output-dir", str(tmp_path),
                 "--max-questions", "1"]) == 2
    assert "training order" in capsys.readouterr().err


def test_tokens_against_a_checkpoint(sequence, tiny, smoke_data, tmp_path):
    assert main(["tokens", "--ckpt", sequence[0], "--data", smoke_data.train_json, "--image-folder",
                 smoke_data.image_folder, "--model-base", tiny.llm, "--output-dir", str(tmp_path),
                 "--tau", "0.2", "--max-samples", "3"]) == 0
    assert {"tokens.json", "tokens.md", "d_rel_hist.png"} <= set(os.listdir(tmp_path))
    report = json.load(open(tmp_path / "tokens.json"))
    assert report["num_old_tasks"] == 1 and report["fresh_bank_task_id"] == 2 and report["n_samples"] == 3
    m = report["mean"]
    assert m["frac_new"] + m["frac_old"] + m["frac_ambiguous"] == pytest.approx(1.0)
    assert set(report["by_kind"]) == {"image", "instruction", "answer"}
    assert len(report["per_layer"]) == tiny.sizes.num_hidden_layers
    n_modules = tiny.sizes.num_hidden_layers * len(TARGETS)
    assert sum(report["d_rel_hist"]["counts"]) == report["n_tokens"] * n_modules
