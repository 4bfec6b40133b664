import pytest

from llava_dymoe.registry import Registry


def test_register_get_aliases_and_normalisation():
    reg = Registry("method")

    @reg.register("IncMoE-LoRA", aliases=["inc"])
    def f():
        return 1

    assert reg.get("incmoe_lora") is f and reg.get("INC") is f and reg.get("incmoe-lora") is f
    assert reg.names() == ["incmoe_lora"] and "inc" in reg and "nope" not in reg and len(reg) == 1


def test_duplicates_raise_unless_override():
    reg = Registry("scorer")
    reg.add("exact", 1)
    with pytest.raises(ValueError, match="already registered"):
        reg.add("exact", 2)
    reg.add("exact", 3, override=True)
    assert reg.get("exact") == 3


def test_unknown_name_lists_known_and_close_matches():
    reg = Registry("method")
    reg.add("dymoe", 1)
    reg.add("incmoelora", 2)
    with pytest.raises(KeyError) as e:
        reg.get("dymo")
    msg = str(e.value)
    assert "unknown method 'dymo'" in msg and "dymoe, incmoelora" in msg and "Did you mean 'dymoe'" in msg


def test_every_registered_method_is_named_in_the_method_help():
    """``--dymoe_method`` / ``cli run --method`` help lists every recipe (the baselines a selector faces included)."""
    import re

    from llava_dymoe.methods import METHODS
    from llava_dymoe.trainer.arguments import method_help

    for training_flag in (True, False):
        text = method_help(training_flag)
        missing = [m for m in METHODS.names() if not re.search(rf"(?<![\w]){re.escape(m)}(?![\w])", text)]
        assert not missing, missing
