"""The ``coin`` profile on hand-written cases: expected values worked out from CoIN's rules.

Each table row is ``(prediction, reference, CoIN's score)``; the rule that gives the score is
in the comment where it is not obvious.  The references have the form ``convert-coin``
writes (a letter, an answer string, a list of 10 answers, a box).  No CoIN code is used.
"""
import pytest

from llava_dymoe.eval import scorers
from llava_dymoe.eval.coin_scorers import CLEAN_EQUIVALENT, coin_parse_pred_box, coin_sqa_letter, m4c_normalize
from llava_dymoe.eval.scorers import get


def _ten(a, k, b="other"):
    """10 human answers: ``k`` times ``a``, the rest ``b``."""
    return [a] * k + [b] * (10 - k)


# ----------------------------------------------------------------------------- ScienceQA
SQA = [
    ("A", "A", 1), ("B", "A", 0), ("a", "A", 1),            # lower-case letter: single-char word, upper-cased
    (" A", "A", 1),                                            # not exactly "A": fallback finds A
    ("A. cat", "A", 1), ("A.cat", "A", 1), ("C. ", "C", 1),
    ("The answer is B.", "B", 1), ("The answer is B.", "A", 0),
    ("I think B", "B", 0),                                     # first single-character word is "I"
    ("", "A", 0), ("F", "A", 0),
    ("F", 5, 0),                                               # CoIN's options stop at E
    ("E", 4, 1), ("D", 3, 1), ("D", 2, 0), ("A", 0, 1),
    ("(C)", "C", 1), ("C)", "C", 1),
    ("1 or B", "B", 0),                                        # "1" is a single-character word
    ("_ A", "A", 0),                                           # so is "_"
    ("é B", "B", 0),                                           # and "é" (Unicode \w) -> "É"
    ("AB", "A", 0), ("A.B", "A", 1),
    ("b. cat", "B", 1),                                        # "X. " needs a capital; fallback gives B
    ("Answer: d", "D", 1), ("cats and dogs", "A", 0),
    ("a cat", "A", 1),                                         # the article "a" is read as option A
    ("It's a cat", "A", 0),                                    # the "s" after the apostrophe comes first
    ("A", "B. a cat", 0), ("B", "B. a cat", 1),
    ("\nC", "C", 1), ("Option E is correct", "E", 1), ("ß", "A", 0),
]


@pytest.mark.parametrize("pred,ref,want", SQA)
def test_coin_sqa(pred, ref, want):
    assert get("coin_sqa")(pred, ref) == want


def test_coin_sqa_letter_and_bad_reference():
    assert coin_sqa_letter("") == "FAILED" and coin_sqa_letter("It's") == "S" and coin_sqa_letter("A. x") == "A"
    for bad in ("cat", None, True, -1, ["A"]):
        with pytest.raises(ValueError):
            get("coin_sqa")("A", bad)


# ----------------------------------------------------------------------------- TextVQA (m4c)
# soft score with h matching humans out of 10: h=1 -> 0.3, h=2 -> 0.6, h=3 -> 0.9, h>=4 -> 1
TEXTVQA = [
    ("nike", _ten("nike", 10), 1.0), ("Nike", _ten("nike", 3, "adidas"), 0.9),
    ("NIKE.", _ten("nike", 2, "adidas"), 0.6), ("nike", _ten("nike", 1, "adidas"), 0.3),
    ("puma", _ten("nike", 10), 0.0), ("", _ten("nike", 10), 0.0),
    ("two", _ten("2", 4), 1.0), ("ten", _ten("10", 4), 1.0), ("none", _ten("0", 10), 1.0),
    ("the cat", _ten("cat", 10), 1.0), ("a dog", _ten("dog", 3, "cat"), 0.9),
    ("dont", _ten("don't", 10), 1.0),
    ("im", _ten("i'm", 10), 0.0),                  # m4c's key is "Im": never matches a lower-cased word
    ("ive", _ten("i've", 10), 0.0),                # likewise "Ive"
    ("shes", _ten("she's", 10), 0.0),              # no "shes" key; "she's" becomes "she 's"
    ("hes", _ten("he's", 10), 0.0),                # "hes" -> "he's", but the answer became "he 's"
    ("hes", _ten("hes", 10), 1.0),
    ("somebodyd", _ten("somebody'd", 10), 1.0),    # m4c maps "somebody'd" -> "somebodyd"
    ("yes" + "." * 32, _ten("yes", 10), 1.0),     # 32 periods: all deleted
    ("yes" + "." * 33, _ten("yes", 10), 0.0),     # 33: one survives the 32-period limit
    ("coca-cola", _ten("coca cola", 10), 1.0),     # "-" not next to a space -> space
    ("coca - cola", _ten("coca cola", 10), 1.0),   # "-" next to a space -> deleted
    ("100,000", _ten("100000", 10), 1.0), ("3.5", _ten("3.5", 10), 1.0), ("3.5", _ten("35", 10), 0.0),
    ("u.s.a.", _ten("usa", 10), 1.0), ("What?", _ten("what", 10), 1.0), ("   nike\n", _ten("nike", 10), 1.0),
    ("$5", _ten("5", 10), 0.0),                    # "$" is not one of m4c's marks
    ("x-ray (left)", _ten("x ray left", 10), 1.0), ("yes!", _ten("yes", 10), 1.0),
    ("it's", _ten("it 's", 10), 1.0), ("Yes.", ["yes"] * 5 + ["no"] * 5, 1.0),
    ("no", ["yes"] * 8 + ["no"] * 2, 0.6),
]


@pytest.mark.parametrize("pred,ref,want", TEXTVQA)
def test_coin_textvqa(pred, ref, want):
    assert get("coin_textvqa")(pred, ref) == pytest.approx(want, abs=1e-12)


def test_m4c_normalize_and_ten_answers_required():
    assert m4c_normalize("The Two Dogs.") == "2 dogs"
    assert m4c_normalize("a" + "." * 40) == "a" + "." * 8
    assert m4c_normalize("It's 2:50 PM!") == "it 's 2:50 pm"
    for bad in ("nike", ["nike"] * 9, ["nike"] * 11):
        with pytest.raises(ValueError, match="10 answers|10 official"):
            get("coin_textvqa")("nike", bad)


# ----------------------------------------------------------------------------- ImageNet
IMAGENET = [
    ("golden retriever", "golden retriever", 1), ("Golden retriever", "golden retriever", 0),
    ("a golden retriever dog", "golden retriever", 1), ("retriever", "golden retriever", 1),
    ("", "golden retriever", 1),                   # "" is in every label
    (" ", "golden retriever", 1),                  # so is " " in a two-word label
    (" ", "tabby", 0), ("golden retriever.", "golden retriever", 1), ("golden  retriever", "golden retriever", 0),
    ("golden retriever ", "golden retriever", 1), (" golden retriever", "golden retriever", 1),
    ("GOLDEN RETRIEVER", "golden retriever", 0), ("dog", "golden retriever", 0), ("e", "golden retriever", 1),
    ("n", "golden retriever", 1), ("x", "golden retriever", 0), ("tabby cat", "tabby", 1), ("tab", "tabby", 1),
    ("Tabby", "tabby", 0), ("tabby\n", "tabby", 1), ("goldenretriever", "golden retriever", 0),
    ("retriever, golden", "golden retriever", 0), ("It is a golden retriever.", "golden retriever", 1),
    ("golden-retriever", "golden retriever", 0), ("ß", "ss", 0), ("The answer is tabby", "tabby", 1),
    ("tabby", "tabby cat", 1), ("cat", "tabby cat", 1), ("tabby dog", "tabby cat", 0), ("Tabby Cat", "tabby cat", 0),
    ("tabby cat", ["tabby cat"], 1), ("é", "café", 1), ("e", "café", 0),
]


@pytest.mark.parametrize("pred,ref,want", IMAGENET)
def test_coin_imagenet(pred, ref, want):
    assert get("coin_imagenet")(pred, ref) == want


# ----------------------------------------------------------------------------- GQA
GQA = [
    ("yes", "yes", 1), ("Yes", "yes", 1), ("Yes.", "yes", 1), ("yes..", "yes", 1),
    ("yes. ", "yes", 0), (" yes", "yes", 0), ("yes ", "yes", 0),   # nothing but trailing periods is stripped
    ("yes", "Yes", 0),                                               # the answer is not lower-cased
    ("YES", "yes", 1), ("yes!", "yes", 0), ("the table", "table", 0), ("table", "table", 1),
    ("Table.", "table", 1), ("t.v.", "t.v", 1), ("t.v.", "t.v.", 0), ("", "yes", 0), (".", "yes", 0),
    ("no", "yes", 0), ("İ", "i\u0307", 1),                          # "İ".lower() is "i" + combining dot
    ("STRASSE", "strasse", 1), ("Straße", "straße", 1), ("Straße", "strasse", 0),
    ("red.\n", "red", 0), ("left side", "left", 0), ("Left", "left", 1),
    ("white and black", "white and black", 1), ("yes\n", "yes", 0), ("yes.\n", "yes", 0),
    ("a.", "a", 1), ("No.", "no", 1), ("Metal.", "metal", 1), ("metal,", "metal", 0),
]


@pytest.mark.parametrize("pred,ref,want", GQA)
def test_coin_gqa(pred, ref, want):
    assert get("coin_gqa")(pred, ref) == want


# ----------------------------------------------------------------------------- VizWiz
VIZWIZ = [
    ("yes", "yes", 1), ("Yes", "yes", 1), ("yes.", "yes", 0), (" yes", "yes", 0), ("yes ", "yes", 0),
    ("unanswerable", "unanswerable", 1), ("Unanswerable", "unanswerable", 1),
    ("straße", "STRASSE", 1),          # upper(): ß -> SS
    ("ß", "ss", 1), ("ß", "SS", 1),
    ("ı", "i", 1),                     # dotless i upper-cases to I
    ("µ", "μ", 1),                     # micro sign and Greek mu both upper-case to Μ
    ("ﬁ", "fi", 1), ("ſ", "s", 1), ("ǆ", "Ǆ", 1), ("İ", "i", 0),
    ("blue", "Blue", 1), ("dark blue", "blue", 0), ("", "unanswerable", 0), ("", "", 1),
    ("Coca-Cola", "coca cola", 0), ("2", "two", 0), ("grey", "gray", 0), ("a bottle", "bottle", 0),
    ("Bottle", "BOTTLE", 1), ("white\n", "white", 0), ("no", "yes", 0), ("keyboard", "keyboard", 1),
    ("KEYBOARD", "keyboard", 1), ("key board", "keyboard", 0), ("Yes!", "yes", 0),
]


@pytest.mark.parametrize("pred,ref,want", VIZWIZ)
def test_coin_vizwiz(pred, ref, want):
    assert get("coin_vizwiz")(pred, ref) == want


# ----------------------------------------------------------------------------- VQAv2
VQAV2 = [
    ("2", "2", 1), ("two", "2", 0), ("Yes", "yes", 1), ("yes.", "yes", 0), ("tennis", "Tennis", 1),
    ("playing tennis", "tennis", 0), ("", "yes", 0), (" no", "no", 0), ("NO", "no", 1),
    ("red and white", "red and white", 1), ("red & white", "red and white", 0), ("frisbee", "Frisbee", 1),
    ("1:30", "1:30", 1), ("1.30", "1:30", 0), ("ß", "SS", 1), ("straße", "strasse", 1), ("ı", "I", 1),
    ("dog's", "dog's", 1), ("dogs", "dog's", 0), ("10", "ten", 0), ("yes\n", "yes", 0), ("Yes Yes", "yes", 0),
    ("ﬂ", "FL", 1), ("µ", "μ", 1), ("blue", ["blue"], 1), ("the dog", "dog", 0), ("dog", "the dog", 0),
    ("Dog", "dOG", 1), ("3 ", "3", 0), ("3", "3.0", 0), ("", "", 1),
]


@pytest.mark.parametrize("pred,ref,want", VQAV2)
def test_coin_vqav2(pred, ref, want):
    assert get("coin_vqav2")(pred, ref) == want


# ----------------------------------------------------------------------------- OCR-VQA
OCRVQA = [
    ("Harry Potter", "harry potter", 1), ("harry potter", "Harry Potter", 1),
    ("Unanswerable", "Unanswerable", 0),           # any "Unanswerable" is wrong, even when it is the answer
    ("unanswerable", "unanswerable", 1),           # the check is case-sensitive
    ("The answer is Unanswerable", "x", 0), ("UNANSWERABLE", "unanswerable", 1),
    ("Harry Potter.", "harry potter", 0), (" Harry Potter", "Harry Potter", 0), ("yes", "Yes", 1),
    ("no", "yes", 0), ("", "", 1), ("", "yes", 0),
    ("Straße", "STRASSE", 0),                      # lower(): "straße" != "strasse"
    ("İ", "i\u0307", 1), ("Cooking", "cooking", 1), ("Cookbooks", "Cookbook", 0), ("Unanswerable.", "yes", 0),
    ("xUnanswerablex", "x", 0), ("0-312-27171-5", "0-312-27171-5", 1), ("0312271715", "0-312-27171-5", 0),
    ("Travel", "Travel ", 0), ("Dr. Seuss", "dr. seuss", 1), ("Dr Seuss", "dr. seuss", 0), ("ǅ", "ǆ", 1),
    ("Romance\n", "romance", 0), ("Unanswerable", "Something", 0), ("Harry Potter and the Goblet", "Harry Potter", 0),
    ("1984", "1984", 1), ("Humor & Entertainment", "Humor & Entertainment", 1), ("Σ", "σ", 1),
]


@pytest.mark.parametrize("pred,ref,want", OCRVQA)
def test_coin_ocrvqa(pred, ref, want):
    assert get("coin_ocrvqa")(pred, ref) == want


# ----------------------------------------------------------------------------- Grounding
GT = [0.1, 0.2, 0.5, 0.6]          # area 0.16
UNIT = [0.0, 0.0, 1.0, 1.0]
GROUNDING = [
    ("[0.1, 0.2, 0.5, 0.6]", GT, 0),           # reads .1, 0.2, 0.5, 0. -> y2 = 0: no overlap
    (" [0.1, 0.2, 0.5, 0.6] ", GT, 1),         # the dropped characters are the spaces
    ("[0.10, 0.20, 0.50, 0.60]", GT, 1),       # .10 ... 0.6: two decimals survive the quirk
    ("[0.10, 0.20, 0.50, 0.65]", GT, 1),       # last value read as 0.6
    ("0.1, 0.2, 0.5, 0.6", GT, 0),
    ("Coordinates: [0.10, 0.20, 0.50, 0.60].", GT, 0),
    ("[0.10, 0.20, 0.50, 0.60] [0.1, 0.2, 0.3, 0.4]", GT, 0),
    ("", GT, 0), ("[0.10, 0.20, 0.50]", GT, 0), ("[0.10, 0.20, 0.50, 0.60, 0.70]", GT, 0),
    ("[[0.10, 0.20, 0.50, 0.60]]", GT, 1),     # every bracket is deleted first
    ("(0.10, 0.20, 0.50, 0.60)", GT, 1),       # parentheses are the dropped characters
    ("[0.10,0.20,0.50,0.60]", GT, 1),
    ("[nan, 0.20, 0.50, 0.60]", GT, 0),        # "an" is not a number
    ("[0.10, 0.20, 0.50, inf]", GT, 0),        # "in" is not a number
    (" [0.10, 0.20, 0.50, inf] ", GT, 0),      # inf parses; the union is inf, IoU 0
    (" [0, 0, 0.6, 1] ", UNIT, 1),             # IoU 0.6
    (" [0, 0, 0.5, 1] ", UNIT, 0),             # IoU exactly 0.5 is not > 0.5
    (" [0, 0, 0.49, 1] ", UNIT, 0),
    (" [0.5, 0.6, 0.1, 0.2] ", GT, 0),         # corners swapped: no intersection
    (" [0.1, 0.2, 0.5, 0.6] ", "[0.1, 0.2, 0.5, 0.6]", 1),   # CoIN's answer_bbox string as reference
    (" [0.1, 0.2, 0.5, 0.6] ", [0.1, 0.2, 0.5, 0.8], 1),     # IoU 0.16 / 0.24
    (" [0.2, 0.2, 0.6, 0.6] ", GT, 1),         # IoU 0.12 / 0.20 = 0.6
    (" [0.3, 0.2, 0.7, 0.6] ", GT, 0),         # IoU 0.08 / 0.24
    (" [1e-1, 2e-1, 5e-1, 6e-1] ", GT, 1), (" [0.1 , 0.2 , 0.5 , 0.6] ", GT, 1),
    ("x0.1, 0.2, 0.5, 0.6x", GT, 1), ("[0.1; 0.2; 0.5; 0.6]", GT, 0), ("[ 0.1, 0.2, 0.5, 0.6 ]", GT, 1),
    ("[0.10, 0.20, 0.50, 0.6]", GT, 0),        # last value read as "0."
    (" [0.1, 0.2, 0.5, 0.6]\n", GT, 1),
    (" [-0.1, 0.2, 0.5, 0.6] ", GT, 1),        # IoU 0.16 / 0.24
    (" [0.1, 0.2, 0.5, 0.6, ] ", GT, 0),       # a 5th, empty piece
    (" [0.1, 0.2, 0.5, 0.6_0] ", GT, 1),       # Python's float() accepts "0.6_0"
    (" [0.1, 0.2, 0.5, 0.6] ", {"answer": GT, "size": [640, 480]}, 1),
]


@pytest.mark.parametrize("pred,ref,want", GROUNDING)
def test_coin_grounding(pred, ref, want):
    assert get("coin_grounding")(pred, ref) == want


def test_coin_grounding_parser_and_size_rounding():
    assert coin_parse_pred_box("[0.12, 0.3, 0.5, 0.77]") == [0.12, 0.3, 0.5, 0.7]
    assert coin_parse_pred_box("Box: [0.1, 0.2, 0.3, 0.4]") is None
    # IoU is 0.5 in exact arithmetic; CoIN scales both boxes by max(w, h) = 640 first, and in
    # floats that lands at or below 0.5 (wrong) here, while the unscaled IoU lands just above it
    pred, box = " [0.340, 0.040, 0.970, 0.100] ", [0.34, 0.06, 0.97, 0.12]
    g = get("coin_grounding")
    assert g(pred, {"answer": box, "size": [427, 640]}) == 0.0
    assert g(pred, box) == 1.0


# ----------------------------------------------------------------------------- registry
def test_every_coin_scorer_is_registered_beside_its_clean_one():
    assert set(CLEAN_EQUIVALENT) == {"coin_sqa", "coin_textvqa", "coin_imagenet", "coin_gqa", "coin_vizwiz",
                                     "coin_grounding", "coin_vqav2", "coin_ocrvqa"}
    for coin, clean in CLEAN_EQUIVALENT.items():
        assert coin in scorers.SCORERS and clean in scorers.SCORERS
        assert "CoIN" in get(coin).__doc__ and ".py" in get(coin).__doc__


def test_tables_have_at_least_30_cases_each():
    for table in (SQA, TEXTVQA, IMAGENET, GQA, VIZWIZ, VQAV2, OCRVQA, GROUNDING):
        assert len(table) >= 30
