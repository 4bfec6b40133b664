"""Expected upstream warnings are one line on the console and whole in the log; others pass through.

The first test makes the real warning the way the demo does (a full LLaVA checkpoint, vision tower inside,
reloaded through upstream ``load_pretrained_model``); the others use a sample of its text.
"""
import io
import logging
import shutil

import pytest

from llava_dymoe.integration.upstream_warnings import EXPECTED, classify, collapse_expected, unused_vision_weights

_NAMES = ["model.vision_tower.vision_tower.vision_model.embeddings.class_embedding",
          "model.vision_tower.vision_tower.vision_model.embeddings.patch_embedding.weight",
          "model.vision_tower.vision_tower.vision_model.post_layernorm.weight"]


def _unused(names, path="/o/base/llava-base"):
    """The shape of transformers 4.37's warning (captured from a demo run, names shortened to three)."""
    return (f"Some weights of the model checkpoint at {path} were not used when initializing "
            f"LlavaLlamaForCausalLM: {names!r}\n"
            "- This IS expected if you are initializing LlavaLlamaForCausalLM from the checkpoint of a model trained "
            "on another task or with another architecture (e.g. initializing a BertForSequenceClassification model "
            "from a BertForPreTraining model).\n"
            "- This IS NOT expected if you are initializing LlavaLlamaForCausalLM from the checkpoint of a model "
            "that you expect to be exactly identical (initializing a BertForSequenceClassification model from a "
            "BertForSequenceClassification model).")


@pytest.fixture
def console():
    """A console handler on the transformers loggers, as the library's own stderr handler is."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    hf = logging.getLogger("transformers")
    hf.addHandler(handler)
    yield handler, stream
    hf.removeHandler(handler)


def test_real_base_reload_is_one_line_and_the_log_keeps_it(tiny, tmp_path, console):
    from llava_dymoe.integration.tiny_model import build_llava_model
    from llava_dymoe.synthetic.base import TOKENIZER_FILES
    from llava_dymoe.synthetic.evaluate import load_model

    path = tmp_path / "llava-base"  # what upstream train() saves for a full fine-tune: the CLIP weights inside
    build_llava_model(tiny.llm, tiny.clip).save_pretrained(path)
    for name in TOKENIZER_FILES:
        shutil.copy(f"{tiny.llm}/{name}", path / name)
    handler, stream = console
    stream.seek(0)
    stream.truncate()  # building it warned that a llama config makes a llava_llama model: not the reload
    log, summary = tmp_path / "upstream_warnings.log", io.StringIO()
    with collapse_expected(str(log), console=summary, handlers=[handler]) as counts:
        load_model(str(path))
        logging.getLogger("transformers.modeling_utils").warning("an unexpected upstream warning")
    assert counts == {"unused_vision_weights": 1}
    assert stream.getvalue() == "an unexpected upstream warning\n"  # the wall is gone, the rest passes
    assert summary.getvalue() == (
        "upstream: 1 expected 'weights not used' warning(s) while reloading the base (vision tower weights are "
        f"loaded separately, from the CLIP folder); full text in {log}\n")
    text = log.read_text()
    assert f"WARNING transformers.modeling_utils: Some weights of the model checkpoint at {path} were not used" in text
    assert all(n in text for n in _NAMES) and "This IS NOT expected" in text and len(text) > 2000
    assert text.rstrip().endswith("WARNING transformers.modeling_utils: an unexpected upstream warning")
    assert handler.filters == []  # detached on exit


def test_only_vision_tower_unused_weights_are_expected():
    assert unused_vision_weights(_unused(_NAMES))
    assert classify(_unused(_NAMES)) is EXPECTED[0]
    # one non-vision weight unused (e.g. experts that did not load) is a real problem: shown in full
    assert classify(_unused(_NAMES + ["model.layers.0.self_attn.q_proj.dymoe_A.t0"])) is None
    assert classify(_unused([])) is None
    missing = ("Some weights of LlavaLlamaForCausalLM were not initialized from the model checkpoint at /o and are "
               f"newly initialized: {_NAMES!r}")
    assert classify(missing) is None and classify("anything else") is None


def test_sample_collapsed_unexpected_shown_and_both_logged(tmp_path, console):
    handler, stream = console
    second = logging.StreamHandler(io.StringIO())  # a record seen by two handlers is logged once
    logging.getLogger("transformers").addHandler(second)
    log, summary = tmp_path / "sub" / "w.log", io.StringIO()
    try:
        with collapse_expected(str(log), console=summary, handlers=[handler, second]) as counts:
            mu = logging.getLogger("transformers.modeling_utils")
            mu.warning(_unused(_NAMES))
            mu.warning("a new upstream warning")
            mu.warning(_unused(_NAMES, path="/o/other"))
    finally:
        logging.getLogger("transformers").removeHandler(second)
    assert counts == {"unused_vision_weights": 2}
    assert stream.getvalue() == second.stream.getvalue() == "a new upstream warning\n"
    assert summary.getvalue().startswith("upstream: 2 expected 'weights not used' warning(s) while reloading")
    text = log.read_text()
    assert text.count("Some weights of the model checkpoint at") == 2 and text.count("a new upstream warning") == 1
    assert "/o/other" in text and _NAMES[-1] in text


def test_nothing_expected_no_summary_line(tmp_path, console):
    handler, stream = console
    summary = io.StringIO()
    with collapse_expected(str(tmp_path / "w.log"), console=summary, handlers=[handler]):
        logging.getLogger("transformers").warning("plain")
    assert summary.getvalue() == "" and stream.getvalue() == "plain\n"


def test_default_targets_are_the_transformers_console_handlers(tmp_path):
    from llava_dymoe.integration import upstream_warnings

    handlers = upstream_warnings._transformers_handlers()
    assert handlers and all(isinstance(h, logging.Handler) for h in handlers)
    with collapse_expected(str(tmp_path / "w.log"), console=io.StringIO()):
        assert all(len(h.filters) >= 1 for h in handlers)
    assert all(not any(isinstance(f, upstream_warnings._Collapse) for f in h.filters) for h in handlers)
