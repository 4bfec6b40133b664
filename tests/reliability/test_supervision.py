"""Silent success refused: training data whose answers all lie beyond ``--model_max_length``.

Upstream truncates such a sample before its first answer, trains on it with loss 0 and the task counts
as finished having learned nothing.  The training pre-flight (and ``cli run``'s) now runs the length
pass whenever the base's tokenizer is at hand, and a task none of whose steps had a supervised token is
never marked finished (``dymoe_task.json``)."""
import json
import os
import time
from types import SimpleNamespace

import pytest

from llava_dymoe.cli import main as cli
from llava_dymoe.errors import DataError
from llava_dymoe.integration.llava_args import dymoe_flags, llava_train_argv

from reliability_helpers import one_line_refusal, run_module, tree_hashes, write_suite

LONG = " ".join(["word"] * 400)


def _lengthen(data, which=None):
    samples = json.load(open(data.train_json))
    for i, s in enumerate(samples):
        if which is None or i in which:
            s["conversations"][0]["value"] += " " + LONG  # the question: the answer starts after it
    json.dump(samples, open(data.train_json, "w"))


def _argv(tiny, data, out, *extra):
    return llava_train_argv(tiny.llm, tiny.clip, data.train_json, data.image_folder, str(out), lora=False,
                            max_steps=1) + dymoe_flags("dymoe", 1) + list(extra)


def test_training_preflight_refuses_samples_without_supervised_tokens(tiny, data, tmp_path):
    """input: every question ~400 tokens, --model_max_length 256; refused before the model loads, no folder."""
    from llava_dymoe.trainer.preflight import training_preflight

    _lengthen(data)
    before = tree_hashes(data.root)
    out = tmp_path / "out"
    with pytest.raises(DataError) as e:
        training_preflight(_argv(tiny, data, out))
    msg = str(e.value)
    assert "8 of 8 samples" in msg and "lose every supervised token at --model_max_length 256" in msg
    assert "the longest: about 4" in msg and "Raise --model_max_length" in msg
    assert "no answer left x8" in e.value.details
    assert not out.exists() and tree_hashes(data.root) == before


def test_partly_truncated_samples_only_warn(tiny, data, tmp_path, caplog):
    from llava_dymoe.trainer.preflight import training_preflight

    samples = json.load(open(data.train_json))
    samples[3]["conversations"][1]["value"] += " " + LONG  # the answer is cut, its start is kept
    json.dump(samples, open(data.train_json, "w"))
    with caplog.at_level("WARNING", logger="llava_dymoe.preflight"):
        training_preflight(_argv(tiny, data, tmp_path / "out"))
    assert "1 of 8 samples are longer than --model_max_length 256" in caplog.text


def test_no_tokenizer_at_hand_skips_the_pass(data, tmp_path):
    from llava_dymoe.integration.data_lengths import tokenizer_at_hand

    assert tokenizer_at_hand(str(tmp_path)) is None and tokenizer_at_hand("no-such-org/no-such-model") is None
    assert tokenizer_at_hand(None) is None


def test_cli_run_refuses_before_the_run_folder(tiny, data, tmp_path, capsys):
    suite = write_suite(tmp_path / "s.yaml", data)
    _lengthen(data, which={2, 5})
    out = tmp_path / "run"
    code = cli(["run", "--suite", suite, "--data-root", data.root, "--method", "dymoe", "--output-dir", str(out),
                "--base", tiny.llm, "--vision-tower", tiny.clip, "--no-plot"])
    err = capsys.readouterr().err
    assert code == 2 and "2 of 8 samples" in err and "(or pass --skip-data-check)" in err, err[-2000:]
    assert not out.exists()


def test_a_task_without_a_supervised_token_is_never_marked_finished(tiny, data, tmp_path):
    """input: the same data with --skip_data_check; one real step (loss 0) -> exit 2, no dymoe_task.json."""
    _lengthen(data)
    out = tmp_path / "out"
    start = time.perf_counter()
    res = run_module("llava_dymoe.train", *_argv(tiny, data, out, "--skip_data_check"), env={"OMP_NUM_THREADS": "1"})
    print(f"one refused tiny step: {time.perf_counter() - start:.1f} s")
    one_line_refusal(res, "none of the 1 training step(s) had a supervised token", "not marked finished",
                     "--model_max_length 256")
    assert not os.path.exists(out / "dymoe_task.json")


def test_check_supervised_counts_every_rank_and_spares_resumed_runs():
    from llava_dymoe.trainer.saving import check_supervised

    args = SimpleNamespace(world_size=1, model_max_length=64)
    check_supervised(SimpleNamespace(args=args, dymoe_steps=3, dymoe_supervised=5))
    check_supervised(SimpleNamespace(args=args, dymoe_steps=0, dymoe_supervised=0))  # resumed at its last step
    with pytest.raises(DataError, match="none of the 3 training step"):
        check_supervised(SimpleNamespace(args=args, dymoe_steps=3, dymoe_supervised=0))
