"""The ``coin`` scoring profile: CoIN's per-sample score, quirks included.

Published CoIN tables (and papers comparing against them) come from the evaluation scripts
of ``zackschen/CoIN`` (``ETrain/Eval/LLaVA/CoIN/eval_*.py`` and ``m4c_evaluator.py``, read at
commit ``4122465517c29af08e730619c38852146aaf1a86``).  Each scorer here gives, for one
prediction and the reference that ``convert-coin`` writes, the 0/1 (TextVQA: soft) score
those scripts give the same sample.  The rules were re-stated from reading the scripts; no
code is taken from them.  ``docs/scoring.md`` lists every difference from the clean
profile (:mod:`llava_dymoe.eval.scorers`) with an example.

=================  ==========================  ===============================================
scorer             CoIN file                   rule
=================  ==========================  ===============================================
``coin_sqa``       ``eval_science_qa.py``      letter parsing below; correct iff it is the
                                               answer's letter (options ``A``-``E`` only)
``coin_textvqa``   ``eval_textvqa.py`` +       m4c soft accuracy against the 10 official
                   ``m4c_evaluator.py``        answers (:func:`m4c_normalize` on both sides)
``coin_imagenet``  ``eval_ImagetNet.py``       ``ref in pred or pred in ref``, case-sensitive,
                                               no stripping: an empty prediction is correct
``coin_gqa``       ``convert_gqa_for_eval.py``  ``pred.rstrip('.').lower() == ref`` (the
                   + ``eval_gqa.py``           reference is not lower-cased)
``coin_vizwiz``    ``eval_vizwiz.py``          ``pred.upper() == ref.upper()``
``coin_grounding`` ``eval_grounding.py``       box parser that drops the first and last
                                               characters; IoU > 0.5
``coin_vqav2``     ``eval_vqav2.py``           ``pred.upper() == ref.upper()``
``coin_ocrvqa``    ``eval_ocrvqa.py``          wrong if ``"Unanswerable"`` occurs in the
                                               prediction, else ``pred.lower() == ref.lower()``
=================  ==========================  ===============================================

What is *not* reproduced is file-level bookkeeping, which :func:`scorers.score_file` does
the same way for both profiles (join by ``question_id``, denominator = all questions of the
reference file; see ``docs/scoring.md``).
"""
from __future__ import annotations

import re
from typing import Any, Dict, List, Mapping, Optional, Sequence

from llava_dymoe.eval.scorer_registry import SCORERS, parse_letter
from llava_dymoe.eval.scorer_registry import prediction_text as _pred  # the clean profile's prediction check, shared

#: clean-profile scorer standing beside each coin scorer (used for ``clean_scorer`` defaults and docs)
CLEAN_EQUIVALENT: Dict[str, str] = {
    "coin_sqa": "sqa_letter", "coin_textvqa": "vqa_soft", "coin_imagenet": "contains", "coin_gqa": "exact",
    "coin_vizwiz": "exact", "coin_grounding": "grounding_iou", "coin_vqav2": "vqa_soft", "coin_ocrvqa": "exact",
}


def _single(reference: Any, scorer: str) -> str:
    """CoIN's test files hold one answer string per question; a one-element list is accepted."""
    if isinstance(reference, (list, tuple)) and len(reference) == 1:
        reference = reference[0]
    if not isinstance(reference, str):
        raise ValueError(f"{scorer}: CoIN compares against the single answer string of its test file; "
                         f"got {reference!r} (convert without official_answers for this task)")
    return reference


# ----------------------------------------------------------------------------- ScienceQA
SQA_OPTIONS = ("A", "B", "C", "D", "E")
_ONE_CHAR_WORD = re.compile(r"\b(\w)\b")


def coin_sqa_letter(prediction: str) -> str:
    """The option CoIN's ``eval_science_qa.py`` reads from a raw prediction (``"FAILED"`` if none).

    In this order, on the text exactly as generated (no stripping): (1) the whole text is one
    of ``A``-``E``; (2) it is at least 3 characters, starts with one of ``A``-``E`` and its
    2nd-3rd characters are ``". "``; (3) otherwise the first single-character word
    (Unicode ``\\b\\w\\b``: letters, digits, ``_``) upper-cased, e.g. ``"I think"`` gives ``"I"``.
    """
    text = _pred(prediction)
    if text in SQA_OPTIONS:
        return text
    if len(text) >= 3 and text[0] in SQA_OPTIONS and text[1:3] == ". ":
        return text[0]
    m = _ONE_CHAR_WORD.search(text)
    return m.group(1).upper() if m else "FAILED"


def _sqa_answer_index(reference: Any) -> int:
    if isinstance(reference, bool):
        raise ValueError(f"coin_sqa: reference must be an option letter or a 0-based index, got {reference!r}")
    if isinstance(reference, int):
        if reference < 0:
            raise ValueError(f"coin_sqa: option index {reference} is negative")
        return reference
    if isinstance(reference, str):
        ref = reference.strip()
        if len(ref) == 1 and "A" <= ref <= "Z":
            return ord(ref) - ord("A")
        if len(ref) >= 2 and "A" <= ref[0] <= "Z" and ref[1] == "." and (len(ref) == 2 or ref[2] == " "):
            return ord(ref[0]) - ord("A")
        letter = parse_letter(ref)  # e.g. "The answer is B."
        if letter is not None and "A" <= letter <= "Z":
            return ord(letter) - ord("A")
    raise ValueError(f"coin_sqa: cannot read an option letter from the reference {reference!r} "
                     "(expected 'B', 'B. text' or a 0-based index)")


@SCORERS.register("coin_sqa")
def coin_sqa(prediction: str, reference: Any) -> float:
    """ScienceQA as CoIN's ``eval_science_qa.py`` scores it: 1.0 iff the letter read by
    :func:`coin_sqa_letter` is the answer's letter.

    The reference is the answer letter (``"B"``, ``"B. text"`` or ``"The answer is B."``) or a
    0-based option index (``problems.json``).  CoIN maps the letter to an index only within ``A``-``E`` and the
    question's choices; the right letter is always within the choices, so only the ``A``-``E``
    limit shows: an answer beyond ``E`` can never be matched.
    """
    want = _sqa_answer_index(reference)
    letter = coin_sqa_letter(prediction)
    return float(want < len(SQA_OPTIONS) and letter == SQA_OPTIONS[want])


# ----------------------------------------------------------------------------- m4c (TextVQA)
# m4c's contraction table (EvalAIAnswerProcessor.CONTRACTIONS), grouped by the form it maps to.
# Only keys that can match are listed: the table's four capitalised keys (Id've, I'dve, Im, Ive)
# never match a lower-cased word.  Keys containing "'s" ("let's", "she's", "ow's'at", "'ow'sat")
# are kept although tokenisation splits "'s" off first.  "somebody'd" -> "somebodyd" is m4c's.
_M4C_CONTRACTIONS_BY_TARGET = """
'ow's'at: 'ow'sat 'ows'at ow's'at | 'twas: twas | ain't: aint | aren't: arent | can't: cant
could've: couldve | couldn't: couldnt | couldn't've: couldn'tve couldnt've | didn't: didnt
doesn't: doesnt | don't: dont | hadn't: hadnt | hadn't've: hadn'tve hadnt've | hasn't: hasnt
haven't: havent | he'd: hed | he'd've: he'dve hed've | he's: hes | how'd: howd | how'll: howll
how's: hows | isn't: isnt | it'd: itd | it'd've: it'dve itd've | it'll: itll | let's: let's
ma'am: maam | might've: mightve | mightn't: mightnt | mightn't've: mightn'tve mightnt've
must've: mustve | mustn't: mustnt | needn't: neednt | not've: notve | o'clock: oclock
oughtn't: oughtnt | shan't: shant | she'd've: she'dve shed've | she's: she's | should've: shouldve
shouldn't: shouldnt | shouldn't've: shouldn'tve shouldnt've | somebody'd've: somebody'dve somebodyd've
somebody'll: somebodyll | somebody's: somebodys | somebodyd: somebody'd | someone'd: someoned
someone'd've: someone'dve someoned've | someone'll: someonell | someone's: someones
something'd: somethingd | something'd've: something'dve somethingd've | something'll: somethingll
that's: thats | there'd: thered | there'd've: there'dve thered've | there're: therere
there's: theres | they'd: theyd | they'd've: they'dve theyd've | they'll: theyll | they're: theyre
they've: theyve | wasn't: wasnt | we'd've: we'dve wed've | we've: weve | weren't: werent
what'll: whatll | what're: whatre | what's: whats | what've: whatve | when's: whens
where'd: whered | where's: wheres | where've: whereve | who'd: whod | who'd've: who'dve whod've
who'll: wholl | who's: whos | who've: whove | why'll: whyll | why're: whyre | why's: whys
won't: wont | would've: wouldve | wouldn't: wouldnt | wouldn't've: wouldn'tve wouldnt've
y'all: yall | y'all'd've: y'all'dve y'alld've yall'd've | y'all'll: y'allll yall'll | you'd: youd
you'd've: you'dve youd've | you'll: youll | you're: youre | you've: youve
"""


def _parse_contractions(text: str) -> Dict[str, str]:
    table: Dict[str, str] = {}
    for group in text.replace("\n", " | ").split("|"):
        if not group.strip():
            continue
        target, _, sources = group.partition(": ")
        for src in sources.split():
            table[src] = target.strip()
    return table


M4C_CONTRACTIONS: Dict[str, str] = _parse_contractions(_M4C_CONTRACTIONS_BY_TARGET)
M4C_NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
               "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
M4C_ARTICLES = frozenset({"a", "an", "the"})
M4C_PUNCTUATION = ";/[]\"{}()=+\\_-><@`,?!"
#: m4c passes re.UNICODE (= 32) where re.sub expects ``count``: only the first 32 periods go
M4C_PERIOD_LIMIT = 32
_M4C_PERIOD = re.compile(r"\.(?!\d)")


def m4c_normalize(text: str) -> str:
    """An answer normalised exactly as CoIN's ``m4c_evaluator.py`` (``EvalAIAnswerProcessor``) does.

    1. lower-case; delete every ``,`` and ``?``; ``'s`` -> `` 's``; strip;
    2. newlines and tabs -> spaces; strip;
    3. each mark of ``; / [ ] " { } ( ) = + \\ _ - > < @ ` , ? !`` is deleted everywhere if
       the text of step 2 has it next to a space, else replaced by a space everywhere;
    4. a period not followed by a digit is deleted -- only the first 32 such periods
       (m4c passes ``re.UNICODE`` as the ``count`` argument of ``re.sub``);
    5. lower-case, split on whitespace, number words ``none/zero..ten`` -> digits, drop
       ``a/an/the``, then the contraction table (:data:`M4C_CONTRACTIONS`), join with spaces.

    (m4c's extra rule "delete marks when a digit-comma-digit occurs" never fires: step 1
    has removed every comma.)
    """
    if not isinstance(text, str):
        raise TypeError(f"answers must be strings, got {type(text).__name__}: {text!r}")
    text = text.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    text = text.replace("\n", " ").replace("\t", " ").strip()
    out = text
    for mark in M4C_PUNCTUATION:
        spaced = (mark + " ") in text or (" " + mark) in text
        out = out.replace(mark, "" if spaced else " ")
    out = _M4C_PERIOD.sub("", out, count=M4C_PERIOD_LIMIT)
    words = []
    for word in out.lower().split():
        word = M4C_NUMBERS.get(word, word)
        if word not in M4C_ARTICLES:
            words.append(word)
    return " ".join(M4C_CONTRACTIONS.get(w, w) for w in words)


def m4c_soft_score(prediction: str, answers: Sequence[str]) -> float:
    """m4c's TextVQA accuracy of one prediction against exactly 10 human answers.

    After :func:`m4c_normalize` of all eleven strings: the mean, over the 10 ways of leaving
    one human answer out, of ``min(1, matches among the other 9 / 3)``; 0 if the prediction
    equals none of them.  Summed in the same order as m4c, so the float is identical.
    """
    gts = [m4c_normalize(a) for a in answers]
    if len(gts) != 10:
        raise ValueError(f"coin_textvqa: CoIN's m4c evaluator needs exactly 10 answers per question "
                         f"(it asserts so), got {len(gts)}; run convert-coin with official_answers = "
                         "TextVQA_0.5.1_val.json")
    pred = m4c_normalize(_pred(prediction))
    hits = sum(g == pred for g in gts)
    if hits == 0:
        return 0.0
    accs = [min(1, float(hits - (g == pred)) / 3) for g in gts]
    return sum(accs) / len(accs)


@SCORERS.register("coin_textvqa")
def coin_textvqa(prediction: str, reference: Any) -> float:
    """TextVQA as CoIN's ``eval_textvqa.py`` scores it: m4c soft accuracy (:func:`m4c_soft_score`)
    against the 10 answers of the official ``TextVQA_0.5.1_val.json``.

    The reference is the list of 10 answers (``convert-coin`` with ``official_answers``);
    anything else raises ``ValueError`` because CoIN's evaluator cannot score it either.
    """
    if isinstance(reference, str) or not isinstance(reference, (list, tuple)) \
            or not all(isinstance(a, str) for a in reference):
        raise ValueError(f"coin_textvqa: reference must be the list of the 10 official answers, got {reference!r} "
                         "(run convert-coin with official_answers = TextVQA_0.5.1_val.json)")
    return m4c_soft_score(prediction, reference)


# ----------------------------------------------------------------------------- ImageNet
@SCORERS.register("coin_imagenet")
def coin_imagenet(prediction: str, reference: Any) -> float:
    """ImageNet as CoIN's ``eval_ImagetNet.py`` scores it: 1.0 iff ``ref in pred or pred in ref``.

    Case-sensitive, nothing stripped; so an empty prediction (a substring of every label)
    scores 1.0 and ``"golden retriever "`` (trailing space) fails against ``"golden retriever"``
    unless it contains it.  (CoIN pairs predictions with labels by position; here by id.)
    """
    ref, pred = _single(reference, "coin_imagenet"), _pred(prediction)
    return float(ref in pred or pred in ref)


# ----------------------------------------------------------------------------- GQA
@SCORERS.register("coin_gqa")
def coin_gqa(prediction: str, reference: Any) -> float:
    """GQA as CoIN scores it: ``convert_gqa_for_eval.py`` turns the prediction into
    ``pred.rstrip('.').lower()`` (every trailing period, nothing else stripped, then
    lower-case), and ``eval_gqa.py`` counts it correct iff it equals the answer as stored
    (not lower-cased, not stripped).
    """
    ref = _single(reference, "coin_gqa")
    return float(_pred(prediction).rstrip(".").lower() == ref)


# ----------------------------------------------------------------------------- VizWiz / VQAv2
@SCORERS.register("coin_vizwiz")
def coin_vizwiz(prediction: str, reference: Any) -> float:
    """VizWiz as CoIN's ``eval_vizwiz.py`` scores it: ``pred.upper() == ref.upper()``.

    No stripping, no punctuation rule; ``upper()`` folds ``ß`` to ``SS`` and ``ı``/``i`` to
    ``I`` (so ``"straße"`` matches ``"STRASSE"``, which a ``lower()`` comparison would not).
    """
    ref = _single(reference, "coin_vizwiz")
    return float(_pred(prediction).upper() == ref.upper())


@SCORERS.register("coin_vqav2")
def coin_vqav2(prediction: str, reference: Any) -> float:
    """VQAv2 as CoIN's ``eval_vqav2.py`` scores it: ``pred.upper() == ref.upper()`` against the
    single answer of CoIN's ``VQAv2/val.json`` (no VQA soft accuracy, no normalisation)."""
    ref = _single(reference, "coin_vqav2")
    return float(_pred(prediction).upper() == ref.upper())


# ----------------------------------------------------------------------------- OCR-VQA
@SCORERS.register("coin_ocrvqa")
def coin_ocrvqa(prediction: str, reference: Any) -> float:
    """OCR-VQA as CoIN's ``eval_ocrvqa.py`` scores it: 0.0 if the case-sensitive substring
    ``"Unanswerable"`` occurs in the prediction, else ``pred.lower() == ref.lower()``
    (no stripping)."""
    ref, pred = _single(reference, "coin_ocrvqa"), _pred(prediction)
    if "Unanswerable" in pred:
        return 0.0
    return float(pred.lower() == ref.lower())


# ----------------------------------------------------------------------------- Grounding
def coin_parse_pred_box(prediction: str) -> Optional[List[float]]:
    """The box CoIN's ``eval_grounding.py`` reads from a prediction, or ``None`` (scored wrong).

    Delete every ``[`` and ``]``; drop the first and the last character of what is left;
    split on ``,``; ``float()`` each piece (Python's ``float``: surrounding whitespace,
    ``nan``, ``inf``, ``1e3``, ``1_0`` are accepted); anything but exactly 4 numbers fails.
    So ``"[0.12, 0.3, 0.5, 0.77]"`` reads as ``[0.12, 0.3, 0.5, 0.7]`` (the leading ``0``
    of ``"0.12"`` is dropped harmlessly, the last digit is lost) and
    ``"Coordinates: [0.1, 0.2, 0.3, 0.4]."`` fails.
    """
    text = _pred(prediction).replace("[", "").replace("]", "")
    try:
        box = [float(piece) for piece in text[1:-1].split(",")]
    except ValueError:
        return None
    return box if len(box) == 4 else None


def _coin_ref_box(reference: Any) -> List[float]:
    if isinstance(reference, str):  # CoIN's answer_bbox string: brackets deleted, split on commas
        box = [float(v) for v in reference.replace("[", "").replace("]", "").split(",")]
    elif isinstance(reference, (list, tuple)):
        box = [float(v) for v in reference]
    else:
        raise ValueError(f"coin_grounding: reference must be a box [x1, y1, x2, y2], got {reference!r}")
    if len(box) != 4:
        raise ValueError(f"coin_grounding: reference box needs 4 numbers, got {reference!r}")
    return box


def coin_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU as CoIN's ``calculate_iou``: no check of degenerate boxes (a box with ``x2 < x1`` has
    a negative area that enters the union); intersection sides clipped at 0; 0.0 unless the
    union is > 0.  The ``min``/``max`` argument order is CoIN's, so NaN behaves the same."""
    x1, y1, x2, y2 = a
    u1, v1, u2, v2 = b
    inter = max(0, min(x2, u2) - max(x1, u1)) * max(0, min(y2, v2) - max(y1, v1))
    union = (x2 - x1) * (y2 - y1) + (u2 - u1) * (v2 - v1) - inter
    return inter / union if union > 0 else 0


@SCORERS.register("coin_grounding")
def coin_grounding(prediction: str, reference: Any) -> float:
    """Grounding (RefCOCO/+/g) as CoIN's ``eval_grounding.py`` scores it: 1.0 iff the box read
    by :func:`coin_parse_pred_box` has IoU > 0.5 (:func:`coin_iou`) with the reference box.

    The reference is the box ``[x1, y1, x2, y2]`` ``convert-coin`` stores (or CoIN's
    ``answer_bbox`` string), or the whole reference record ``{"answer": box, "size": [w, h]}``.
    With ``size``, both boxes are first multiplied by ``max(w, h)`` as CoIN does; this never
    changes the IoU except by float rounding, which can flip a case whose IoU is within
    ~1e-15 of 0.5 -- :func:`scorers.score_file` passes the record so files score exactly.
    """
    scale = None
    if isinstance(reference, Mapping):
        box_field = next((k for k in ("answer", "answer_bbox", "box") if k in reference), None)
        if box_field is None:
            raise ValueError(f"coin_grounding: reference record has no 'answer' box: {reference!r}")
        if reference.get("size") is not None:
            scale = max(reference["size"])
        reference = reference[box_field]
    ref = _coin_ref_box(reference)
    pred = coin_parse_pred_box(prediction)
    if pred is None:
        return 0.0
    if scale is not None:
        pred = [v * scale for v in pred]
        ref = [v * scale for v in ref]
    return float(coin_iou(pred, ref) > 0.5)


coin_grounding.takes_record = True  # score_file passes {"answer": box, "size": ...} when the record has size
