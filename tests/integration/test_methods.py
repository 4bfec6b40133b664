"""Method recipes resolve to the configurations method.md describes."""
import pytest

from llava_dymoe.config import DyMoEConfig
from llava_dymoe.methods import AUX_LADDER_COEF, METHODS, get_method


def test_dymoe_is_the_paper_default_and_incmoelora_turns_tag_and_rsr_off():
    assert get_method("dymoe").build_config() == DyMoEConfig()
    inc = get_method("incmoelora").build_config()
    assert (inc.use_tag, inc.c_exc, inc.c_spe, inc.c_aux) == (False, 0.0, 0.0, 0.0)
    assert inc.experts_per_task == 16 and inc.top_k == 16 and inc.router_temperature == 0.01


def test_ablation_ladder_adds_one_component_per_step():
    ladder = ["incmoelora", "incmoelora_aux", "incmoelora_aux_tag", "incmoelora_aux_tag_exc", "dymoe_aux"]
    cfgs = [get_method(n).build_config() for n in ladder]
    on = [(c.c_aux > 0, c.use_tag, c.c_exc > 0, c.c_spe > 0) for c in cfgs]
    assert on == [(False, False, False, False), (True, False, False, False), (True, True, False, False),
                  (True, True, True, False), (True, True, True, True)]
    assert cfgs[-1].c_aux == AUX_LADDER_COEF and cfgs[-1].c_exc == cfgs[-1].c_spe == 1e-3


def test_flags_override_the_recipe_and_bad_values_name_the_field():
    assert get_method("dymoe").build_config({"tau": 0.3}).tau == 0.3
    with pytest.raises(ValueError, match="tau"):
        get_method("dymoe").build_config({"tau": 1.5})
    assert {"dymoe", "incmoelora"} <= set(METHODS.names())
