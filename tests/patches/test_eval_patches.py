"""E1/E2 on the real ``llava.model.builder``: delegation, the DyMoE branch, by-value copies, CPU forcing.

The upstream loader itself is replaced by a recorder (monkeypatch, restored after each test), so
these tests check the routing without building models; the end-to-end shim tests load for real.
"""
import json
import sys
import types

import pytest
import transformers

import llava.model.builder as builder
from llava_dymoe.patches import cpu_remap, vision_check
from llava_dymoe.patches.eval import HOOK_MODULE, eval_patch_set, eval_patches, make_loader_wrapper
from llava_dymoe.patches._base import PatchError, applied_patch_sets, is_ours

pytestmark = pytest.mark.llava11  # holds on both upstream lines (make test-llava11)

TUPLE = ("tok", "model", "proc", 2048)


@pytest.fixture
def upstream(monkeypatch):
    """Replace upstream's loader by a recorder with the same signature."""
    calls = []

    def load_pretrained_model(model_path, model_base, model_name, load_8bit=False, load_4bit=False,
                              device_map="auto", device="cuda", use_flash_attn=False, **kwargs):
        calls.append(dict(model_path=model_path, model_base=model_base, model_name=model_name,
                          load_8bit=load_8bit, device_map=device_map, device=device, **kwargs))
        return ("upstream",) + TUPLE[1:]

    monkeypatch.setattr(builder, "load_pretrained_model", load_pretrained_model)
    yield types.SimpleNamespace(fn=load_pretrained_model, calls=calls)
    assert not applied_patch_sets()


@pytest.fixture
def hooks(monkeypatch):
    """Stub ``is_dymoe_checkpoint`` / ``load_dymoe_for_eval`` (the real module may not exist yet)."""
    calls = []
    try:
        import importlib
        mod = importlib.import_module(HOOK_MODULE)
    except ModuleNotFoundError:
        mod = types.ModuleType(HOOK_MODULE)
        monkeypatch.setitem(sys.modules, HOOK_MODULE, mod)
        monkeypatch.setattr(sys.modules["llava_dymoe.integration"], HOOK_MODULE.rsplit(".", 1)[1], mod, raising=False)

    def load_dymoe_for_eval(model_path, model_base, model_name, **kwargs):
        calls.append(dict(model_path=model_path, model_base=model_base, model_name=model_name, **kwargs))
        return ("dymoe",) + TUPLE[1:]

    monkeypatch.setattr(mod, "is_dymoe_checkpoint", lambda path: "dymoe" in str(path), raising=False)
    monkeypatch.setattr(mod, "load_dymoe_for_eval", load_dymoe_for_eval, raising=False)
    return calls


def test_non_dymoe_paths_defer_to_upstream_unchanged(upstream, hooks):
    with eval_patch_set():
        wrapper = builder.load_pretrained_model
        assert is_ours(wrapper) and wrapper.__wrapped__ is upstream.fn
        out = wrapper("/ckpt/llava-v1.5-lora", "/base", "llava-v1.5-lora", True, device="mps", extra=1)
    assert out[0] == "upstream" and not hooks
    assert upstream.calls == [dict(model_path="/ckpt/llava-v1.5-lora", model_base="/base",
                                   model_name="llava-v1.5-lora", load_8bit=True, device_map="auto",
                                   device="mps", extra=1)]
    assert builder.load_pretrained_model is upstream.fn


def test_dymoe_paths_go_to_load_dymoe_for_eval(upstream, hooks):
    with eval_patch_set():
        # serve/cli style: load_8bit/load_4bit positionally; extra kwargs pass through
        out = builder.load_pretrained_model("/ckpt/dymoe-task2", "/base", "llava-dymoe-task2", False, False,
                                            device="cuda", use_flash_attn=True, foo="bar")
    assert out == ("dymoe",) + TUPLE[1:] and not upstream.calls
    assert hooks == [dict(model_path="/ckpt/dymoe-task2", model_base="/base", model_name="llava-dymoe-task2",
                          load_8bit=False, load_4bit=False, device_map="auto", device="cuda",
                          use_flash_attn=True, foo="bar")]


@pytest.mark.skipif(cpu_remap.cuda_available(), reason="CPU forcing only happens without CUDA")
def test_without_cuda_both_branches_are_forced_to_cpu(upstream, hooks):
    with eval_patches() as ps:
        d1 = ["vision-check"] if transformers.__version__ in vision_check.TRANSFORMERS else []  # D1 (speed only)
        assert cpu_remap.is_active() and [p.name for p in applied_patch_sets()] == ["cpu-remap", *d1, "eval"]
        assert ps.name == "eval"
        # upstream eval's call: load_pretrained_model(model_path, args.model_base, model_name)
        builder.load_pretrained_model("/ckpt/llava-tiny-lora", "/base", "llava-tiny-lora")
        builder.load_pretrained_model("/ckpt/dymoe-1", "/base", "llava-dymoe-1")
        builder.load_pretrained_model("/ckpt/llava-x", None, "llava-x", device_map={"": 0}, device="mps")
    assert upstream.calls[0]["device"] == "cpu" and upstream.calls[0]["device_map"] == "cpu"
    assert upstream.calls[1]["device"] == "mps" and upstream.calls[1]["device_map"] == {"": "cpu"}
    assert hooks[0]["device"] == "cpu" and hooks[0]["device_map"] == "cpu"
    assert not cpu_remap.is_active()


def test_by_value_copies_in_real_upstream_modules(upstream, hooks):
    import llava.eval.model_vqa as model_vqa
    import llava.eval.model_vqa_science as model_vqa_science

    # these modules copied the loader at import time; point them at the recorder like the builder
    for mod in (model_vqa, model_vqa_science):
        upstream_copy = mod.load_pretrained_model
        mod.load_pretrained_model = upstream.fn
    try:
        with eval_patch_set() as ps:
            assert model_vqa.load_pretrained_model is builder.load_pretrained_model
            assert model_vqa_science.load_pretrained_model is builder.load_pretrained_model
            assert {"llava.eval.model_vqa:load_pretrained_model",
                    "llava.eval.model_vqa_science:load_pretrained_model"} <= set(ps.rebound)
        assert model_vqa.load_pretrained_model is upstream.fn
    finally:
        for mod in (model_vqa, model_vqa_science):
            mod.load_pretrained_model = upstream_copy


def test_custom_loader_replacement_factory(upstream):
    seen = []

    def factory(original):
        seen.append(original)
        return make_loader_wrapper(original)

    with eval_patch_set(loader_replacement=factory):
        assert seen == [upstream.fn] and is_ours(builder.load_pretrained_model)


def test_missing_hook_module_is_loud_for_dymoe_only(upstream, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, HOOK_MODULE, None)  # import of the hooks module now fails
    plain, dymoe = tmp_path / "llava-plain-lora", tmp_path / "llava-dymoe"
    for d, cfg in ((plain, {"model_type": "llava_llama"}),
                   (dymoe, {"model_type": "llava_llama", "dymoe": {}})):
        d.mkdir()
        (d / "config.json").write_text(json.dumps(cfg))
    with eval_patch_set():
        assert builder.load_pretrained_model(str(plain), "/base", "llava-plain-lora")[0] == "upstream"
        with pytest.raises(PatchError, match="is a DyMoE checkpoint .* not importable"):
            builder.load_pretrained_model(str(dymoe), "/base", "llava-dymoe")
