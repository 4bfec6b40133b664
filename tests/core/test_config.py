"""DyMoEConfig: defaults (method.md §1, §3), JSON round trip, validation naming the field."""
import dataclasses
import json

import pytest

from llava_dymoe.config import FORMAT_VERSION, KNOWN_TARGET_MODULES, DyMoEConfig


def test_defaults_follow_method_spec():
    cfg = DyMoEConfig()
    assert cfg.target_modules == list(KNOWN_TARGET_MODULES) == [
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert (cfg.experts_per_task, cfg.expert_rank, cfg.top_k) == (16, 4, 16)
    assert (cfg.router_scale, cfg.router_temperature, cfg.tau, cfg.rsr_temperature) == (1.0, 0.01, 0.2, 0.1)
    assert (cfg.c_exc, cfg.c_spe, cfg.c_aux, cfg.rsr_start) == (1e-3, 1e-3, 0.0, 0.5)
    assert cfg.use_tag is True and cfg.num_tasks == 0 and cfg.format_version == FORMAT_VERSION
    assert cfg.lora_alpha == 128.0 and cfg.lora_dropout == 0.05
    assert cfg.bank_rank == 64 and cfg.scaling == 2.0
    for f in dataclasses.fields(DyMoEConfig):
        assert f.metadata.get("help"), f"field {f.name} has no help text"
    cited = [f.name for f in dataclasses.fields(DyMoEConfig) if "method.md" in f.metadata["help"]]
    assert len(cited) >= 14


def test_json_round_trip(tmp_path):
    cfg = DyMoEConfig(top_k=8, tau=0.3, target_modules=["q_proj", "v_proj"], num_tasks=3, use_tag=False)
    assert DyMoEConfig.from_dict(cfg.to_dict()) == cfg
    assert DyMoEConfig.from_json(cfg.to_json()) == cfg
    path = tmp_path / "sub" / "dymoe.json"
    cfg.save(str(path))
    assert DyMoEConfig.load(str(path)) == cfg
    assert json.loads(path.read_text())["target_modules"] == ["q_proj", "v_proj"]
    assert DyMoEConfig(target_modules=("q_proj",)).to_dict()["target_modules"] == ["q_proj"]


def test_from_dict_missing_keys_take_defaults():
    assert DyMoEConfig.from_dict({"top_k": 4}) == DyMoEConfig(top_k=4)
    assert DyMoEConfig.from_dict({}) == DyMoEConfig()


def test_from_dict_rejects_unknown_keys_and_newer_versions():
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['router_kind'\].*newer"):
        DyMoEConfig.from_dict({"top_k": 4, "router_kind": "x"})
    with pytest.raises(ValueError, match="format_version"):
        DyMoEConfig.from_dict({"format_version": FORMAT_VERSION + 1})
    with pytest.raises(ValueError, match="invalid JSON"):
        DyMoEConfig.from_json("{not json")
    with pytest.raises(ValueError, match="dict"):
        DyMoEConfig.from_dict([1, 2])


@pytest.mark.parametrize("field_name,value", [
    ("top_k", 0), ("top_k", 2.0), ("top_k", True),
    ("expert_rank", 0), ("expert_rank", -4), ("expert_rank", 4.0),
    ("experts_per_task", 0), ("experts_per_task", "16"),
    ("tau", -0.1), ("tau", 1.5), ("tau", float("nan")),
    ("router_temperature", 0.0), ("rsr_temperature", -1.0), ("lora_alpha", 0),
    ("c_exc", -1e-3), ("c_spe", -1.0), ("c_aux", -0.5),
    ("rsr_start", 1.01), ("rsr_start", -0.5),
    ("lora_dropout", 1.0), ("lora_dropout", -0.1),
    ("target_modules", ["q_proj", "lm_head"]), ("target_modules", []), ("target_modules", "q_proj"),
    ("target_modules", ["q_proj", "q_proj"]),
    ("num_tasks", -1), ("format_version", 0), ("use_tag", "yes"), ("router_scale", float("inf")),
])
def test_invalid_values_raise_naming_the_field(field_name, value):
    with pytest.raises(ValueError, match=field_name):
        DyMoEConfig(**{field_name: value})


def test_router_scale_may_be_non_positive():
    assert DyMoEConfig(router_scale=0.0).router_scale == 0.0  # dot-product fallback (method.md §1.4)
