"""A run folder's identity (``protocol/options.py``): the recipe a method name stood for is part of it, so a name whose
meaning moved (``dymoe_plus``: ``dymoe_seqbank``, then ``key_selector``, ``anchored_keys`` since; all on 2026-12-07)
never resumes a folder of a former recipe, while folders written before the ``recipe`` field existed still resume under unchanged names."""
import pytest

from llava_dymoe.methods import FORMER_ALIASES, get_method
from llava_dymoe.protocol.options import IDENTITY_KEYS, compare_identity, saved_recipe


def _identity(method, recipe=None, **extra):
    out = {k: None for k in IDENTITY_KEYS}
    out.update(method=method, **extra)
    if recipe is not None:
        out["recipe"] = recipe
    return out


def test_the_alias_moved_and_its_former_recipe_is_recorded():
    assert get_method("dymoe_plus").name == "anchored_keys"
    assert FORMER_ALIASES["dymoe_plus"][0] == "dymoe_seqbank" == get_method("dymoe_seqbank").name
    assert saved_recipe(_identity("dymoe_plus")) == "dymoe_seqbank"  # a run.json of before the move
    assert saved_recipe(_identity("dymoe_plus", "key_selector")) == "key_selector"
    assert saved_recipe(_identity("incmoelora")) == "incmoelora"
    assert saved_recipe(_identity("no_such_method")) is None


def test_a_folder_of_the_former_recipe_is_refused_and_others_resume():
    now = _identity("dymoe_plus", get_method("dymoe_plus").name)
    with pytest.raises(ValueError) as e:
        compare_identity(_identity("dymoe_plus"), now, "OUT")
    message = str(e.value)
    assert "recipe: 'dymoe_seqbank' in the folder, 'anchored_keys' now" in message
    assert "start a new --output-dir" in message and "method:" not in message  # the name itself did not change
    with pytest.raises(ValueError, match="recipe: 'key_selector' in the folder, 'anchored_keys' now"):
        compare_identity(_identity("dymoe_plus", "key_selector"), now, "OUT")  # started between the two moves
    compare_identity(_identity("dymoe_plus", "anchored_keys"), now, "OUT")  # started after the last move: resumes
    compare_identity(_identity("dymoe"), _identity("dymoe", "dymoe"), "OUT")  # old run.json, unchanged name
    with pytest.raises(ValueError, match="method: 'dymoe' in the folder, 'incmoelora' now"):
        compare_identity(_identity("dymoe", "dymoe"), _identity("incmoelora", "incmoelora"), "OUT")
