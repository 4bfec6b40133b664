"""``bank-choice``: which cue routes a task's inputs to its own bank (``diagnostics/bank_choice.py``).

The shares are checked against an independent count: with ``bank_scope=sequence`` each prompt's tokens sit in the
bank the layer decided for the prompt (``_dymoe_seq_bank``, read by a forward hook), so a module's share of a
bank is the token-weighted share of prompts that chose it."""
import json
import os

import pytest
import torch

from llava_dymoe.cli import main
from llava_dymoe.diagnostics.bank_choice import SHARED_TEXT, prompts
from llava_dymoe.diagnostics.probe import Probe, read_questions
from llava_dymoe.integration.inject import dymoe_layers


def test_prompt_conditions_keep_images_and_replace_texts():
    a = [{"question_id": f"a{i}", "image": f"a{i}.png", "text": f"question a{i}"} for i in range(3)]
    b = [{"question_id": f"b{i}", "image": f"b{i}.png", "text": f"question b{i}"} for i in range(2)]
    tasks = [("A", a), ("B", b)]
    assert prompts(tasks, "as_asked") == [a, b]
    only = prompts(tasks, "image_only")
    assert [[r["image"] for r in rows] for rows in only] == [[r["image"] for r in a], [r["image"] for r in b]]
    assert {r["text"] for rows in only for r in rows} == {SHARED_TEXT}
    swapped = prompts(tasks, "swapped")
    assert [r["text"] for r in swapped[0]] == ["question b0", "question b1", "question b0"]  # B's texts, cycled
    assert [r["text"] for r in swapped[1]] == ["question a0", "question a1"]
    assert [r["question_id"] for r in swapped[0]] == ["a0", "a1", "a2"] and a[0]["text"] == "question a0"
    with pytest.raises(ValueError, match="unknown condition 'x'"):
        prompts(tasks, "x")


def _naive_shares(ckpt, model_base, rows, image_folder):
    """Per module, the token-weighted share of each bank over the prompts, from the layers' own decisions."""
    probe = Probe(ckpt, model_base)
    counts = {}
    hooks = []
    for name, layer in dymoe_layers(probe.model):
        def hook(m, args, out, name=name):
            n = args[0].shape[:-1].numel()
            bank = m._dymoe_seq_bank.reshape(-1)
            assert bank.numel() == 1
            c = counts.setdefault(name, torch.zeros(m.num_tasks, dtype=torch.float64))
            c[int(bank[0])] += n
        hooks.append(layer.register_forward_hook(hook))
    try:
        with torch.inference_mode():
            for _, ids, pixels, _ in probe.questions(rows, image_folder):
                probe.model(input_ids=ids, images=pixels)
    finally:
        for h in hooks:
            h.remove()
    shares = [c / c.sum() for c in counts.values()]
    return (sum(shares) / len(shares)).tolist()


def test_bank_choice_on_a_sequence_scope_checkpoint(variant_sequences, tiny, smoke_data, tmp_path, capsys):
    ckpt = variant_sequences["dymoe_seqbank"][1]
    out = tmp_path / "bank_choice"
    argv = ["bank-choice", "--ckpt", ckpt, "--model-base", tiny.llm, "--task", f"A={smoke_data.questions}",
            "--task", f"B={smoke_data.questions}", "--image-folder", smoke_data.image_folder, "--max-questions", "3",
            "--output-dir", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    report = json.load(open(out / "bank_choice.json"))
    assert report["tasks"] == ["A", "B"] and report["num_tasks"] == 2
    assert list(report["conditions"]) == ["as_asked", "image_only", "swapped"]
    rows = read_questions(smoke_data.questions, 3)
    for condition, texts in (("as_asked", None), ("image_only", SHARED_TEXT)):
        want = _naive_shares(ckpt, tiny.llm, [{**r, "text": texts or r["text"]} for r in rows],
                             smoke_data.image_folder)
        got = report["conditions"][condition]
        assert got["A"]["banks"] == pytest.approx(want, abs=1e-9) == got["B"]["banks"]
        assert got["A"]["own"] == pytest.approx(want[0]) and got["B"]["own"] == pytest.approx(want[1])
        assert got["A"]["n_questions"] == 3
    # A and B ask the same questions: swapping their texts changes nothing, and the text's bank is the other one
    sw = report["conditions"]["swapped"]
    assert sw["A"]["banks"] == pytest.approx(report["conditions"]["as_asked"]["A"]["banks"], abs=1e-12)
    assert sw["A"]["text"] == pytest.approx(sw["A"]["banks"][1]) and sw["B"]["text"] == pytest.approx(
        sw["B"]["banks"][0])
    md = open(out / "bank_choice.md").read()
    assert "| task | own bank, as_asked | own bank, image_only | own bank, swapped | text's bank, swapped |" in md
    assert f"| A | {report['conditions']['as_asked']['A']['own']:.3f} |" in md and md in printed


def test_bank_choice_refusals(variant_sequences, tiny, smoke_data, tmp_path, capsys):
    ckpt = variant_sequences["dymoe_seqbank"][0]  # one bank
    base = ["bank-choice", "--ckpt", ckpt, "--model-base", tiny.llm, "--image-folder", smoke_data.image_folder,
            "--max-questions", "1"]
    assert main(base + ["--task", f"A={smoke_data.questions}", "--task", f"B={smoke_data.questions}"]) == 2
    assert "has 1 bank(s) but 2 tasks were given" in capsys.readouterr().err
    assert main(base + ["--task", smoke_data.questions, "--task", f"B={smoke_data.questions}"]) == 2
    assert "expected NAME=QUESTIONS" in capsys.readouterr().err
    assert main(base + ["--task", f"A={smoke_data.questions}"]) == 2
    assert "at least two tasks" in capsys.readouterr().err
    assert main(base + ["--task", f"A={smoke_data.questions}", "--task", f"A={smoke_data.questions}"]) == 2
    assert "task names must differ" in capsys.readouterr().err
    two = ["--task", f"A={smoke_data.questions}", "--task", f"B={smoke_data.questions}"]
    assert main([a if a != "1" else "0" for a in base] + two) == 2  # --max-questions 0
    assert "--max-questions must be at least 1, got 0" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "bank_choice")
