"""The tiny LLaVA builder: deterministic, configurable, and its tokenizer fits LLaVA's v1 preprocessing."""
import hashlib
import json
import os

import pytest
import torch

from line_marks import on_line
from llava_dymoe.tiny import TinySizes, build_tiny_llava, main

pytestmark = pytest.mark.llava11  # holds on both upstream lines (make test-llava11)


def _digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _tensors(path):
    from safetensors.torch import load_file
    return load_file(path)


def test_deterministic_for_a_seed(tiny, tmp_path):
    again = build_tiny_llava(str(tmp_path / "again"), seed=0)
    for sub in ("llm/model.safetensors", "clip/model.safetensors", "llm/tokenizer.model"):
        a, b = os.path.join(tiny.root, sub), os.path.join(again.root, sub)
        if sub.endswith("safetensors"):
            ta, tb = _tensors(a), _tensors(b)
            assert ta.keys() == tb.keys()
            assert all(torch.equal(ta[k], tb[k]) for k in ta)
        else:
            assert _digest(a) == _digest(b)
    other = build_tiny_llava(str(tmp_path / "other"), seed=1)
    ta, tb = _tensors(tiny.llm + "/model.safetensors"), _tensors(other.llm + "/model.safetensors")
    assert not torch.equal(ta["model.layers.0.self_attn.q_proj.weight"],
                           tb["model.layers.0.self_attn.q_proj.weight"])
    # the tokenizer does not depend on the model seed
    assert _digest(tiny.llm + "/tokenizer.model") == _digest(other.llm + "/tokenizer.model")


def test_sizes_from_the_command_line(tmp_path):
    assert main([str(tmp_path / "m"), "--seed", "3", "--hidden-size", "32", "--num-hidden-layers", "1",
                 "--vocab-size", "600"]) == 0
    cfg = json.load(open(tmp_path / "m/llm/config.json"))
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"]) == (32, 1, 600)
    meta = json.load(open(tmp_path / "m/tiny.json"))
    assert meta["seed"] == 3 and meta["sizes"]["hidden_size"] == 32
    vcfg = json.load(open(tmp_path / "m/clip/config.json"))
    assert vcfg["num_hidden_layers"] == 2 and vcfg["image_size"] == 32


@pytest.mark.parametrize("bad", [dict(hidden_size=0), dict(hidden_size=30, num_attention_heads=4),
                                 dict(clip_num_hidden_layers=1), dict(image_size=30)])
def test_bad_sizes_are_refused(bad):
    with pytest.raises(ValueError):
        TinySizes(**bad)


@on_line("1.2", "llava-torch 1.1.1's preprocess_v1 counts multi-turn rounds of a legacy=False tokenizer one token "
                "off under transformers 4.31 ('tokenization mismatch'; see docs/upstream-lines.md)")
def test_tokenizer_matches_llava_v1_preprocessing(tiny, capsys):
    from transformers import AutoTokenizer
    import llava.conversation as conversation_lib
    from llava.train.train import preprocess_v1

    tok = AutoTokenizer.from_pretrained(tiny.llm, use_fast=False, model_max_length=256, padding_side="right")
    assert tok.legacy is False and type(tok).__name__ == "LlamaTokenizer"
    tok.pad_token = tok.unk_token
    old = conversation_lib.default_conversation
    conversation_lib.default_conversation = conversation_lib.conv_templates["v1"]
    try:
        answers = ["The square is red.", "Two.", "[0.12, 0.50, 0.33, 0.91]"]
        sources = [[{"from": "human", "value": "<image>\nWhat color is the square?"},
                    {"from": "gpt", "value": answers[0]},
                    {"from": "human", "value": "How many squares are there?"},
                    {"from": "gpt", "value": answers[1]},
                    {"from": "human", "value": "Where is it?"},
                    {"from": "gpt", "value": answers[2]}]]
        out = preprocess_v1(sources, tok, has_image=True)
    finally:
        conversation_lib.default_conversation = old
    assert "tokenization mismatch" not in capsys.readouterr().out
    labels = out["labels"][0]
    kept = labels[labels != -100]
    decoded = tok.decode(kept, skip_special_tokens=False)
    # every assistant turn is supervised, each followed by its end-of-sequence token
    assert decoded.replace(" ", "") == "".join(a + "</s>" for a in answers).replace(" ", "")
    for a in answers:
        assert a in tok.decode(kept)
