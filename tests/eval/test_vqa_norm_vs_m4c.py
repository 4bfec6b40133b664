"""The clean ``vqa_soft`` normalisation differs from m4c's exactly where ``vqa_norm``'s docstring says."""
import re

import pytest

from llava_dymoe.eval import vqa_norm
from llava_dymoe.eval.coin_scorers import M4C_CONTRACTIONS, m4c_normalize
from llava_dymoe.eval.vqa_norm import normalize_answer

CLEAN_ONLY = ("couldntve hadntve hedve i'dve id've idve im itdve ive mightntve shedve shes shouldntve somebodyd "
              "somebodydve someonedve somethingdve somethings thatd thatll theredve therell theydve wedve whodve "
              "wouldntve y'alldve yall'dve yalld've yalldve yallll youdve").split()
M4C_ONLY = {"'ows'at": "'ow's'at", "somebody'd": "somebodyd"}


def test_docstring_lists_the_clean_only_words():
    doc = " ".join(vqa_norm.__doc__.split())
    assert " ".join(CLEAN_ONLY) in doc
    assert "32" in doc and "'ows'at" in doc and "somebody'd" in doc


@pytest.mark.parametrize("word", CLEAN_ONLY)
def test_clean_maps_words_m4c_keeps(word):
    assert m4c_normalize(word) == word
    assert normalize_answer(word) != word and "'" in normalize_answer(word)


@pytest.mark.parametrize("word,m4c", sorted(M4C_ONLY.items()))
def test_m4c_maps_words_clean_keeps(word, m4c):
    assert m4c_normalize(word) == m4c and normalize_answer(word) == word


def test_no_other_contraction_differs():
    words = set(M4C_CONTRACTIONS) | set(CLEAN_ONLY) | set(M4C_CONTRACTIONS.values())
    reachable = {w for w in words if "'s" not in w}  # "'s" is split off before the table is used
    differ = {w for w in reachable if m4c_normalize(w) != normalize_answer(w)}
    assert differ == set(CLEAN_ONLY) | set(M4C_ONLY)


@pytest.mark.parametrize("text", ["Two dogs.", "The Red One", "yes-no", "100,978", "3.5", "It's 2:50 PM!",
                                  "dont know", "hello - world", "  Coca-Cola\n", "u.s.a.", "x-ray (left)",
                                  "what's up?", "A man's hat", "ten", "(none)", "wont", "o'clock", "yes" + "." * 32])
def test_same_normalisation_elsewhere(text):
    assert normalize_answer(text) == m4c_normalize(text)


def test_the_32_period_limit():
    text = "no" + "." * 33
    assert normalize_answer(text) == "no" and m4c_normalize(text) == "no."
    assert re.fullmatch(r"a\.{8}", m4c_normalize("a" + "." * 40))
