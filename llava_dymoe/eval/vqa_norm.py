"""VQA answer normalisation and soft accuracy (the rules TextVQA/VQAv2 scores use).

Written from the public description of the VQA evaluation (visualqa.org, "Evaluation")
and of the EvalAI answer processor that TextVQA's m4c evaluator (used by LLaVA and CoIN)
applies; no upstream code is reused.  Normalisation, applied to predictions *and*
references alike:

1. tokenise: lower-case, delete every ``,`` and ``?``, split a possessive ``'s`` off the
   word (``girl's`` -> ``girl 's``), turn newlines/tabs into spaces, strip;
2. punctuation ``; / [ ] " { } ( ) = + \\ _ - > < @ ` , ? !``: a mark that stands next to
   a space anywhere in the answer is deleted, otherwise it becomes a space (apostrophes
   and colons are kept: possessives, times such as ``2:50``).  Other symbols such as
   ``$ % & # *`` are left alone, as the reference evaluator does, although the prose
   description says "all punctuation";
3. a period is removed unless a digit follows it (``3.5`` stays, ``yes.`` -> ``yes``);
4. per word: number words ``none, zero, one .. ten`` -> digits, articles ``a, an, the``
   dropped, an apostrophe-less contraction restored (``dont`` -> ``don't``).

Soft accuracy for n reference answers g_1..g_n and normalised prediction p
(standard case n = 10)::

    acc(p) = (1/n) * sum_{k=1..n} min(1, #{j != k : g_j == p} / m),   m = min(3, n - 1)

i.e. the mean over the n leave-one-out subsets of "at least three of the others agree".
For n = 10 this is exactly the standard VQA accuracy (m = 3).  Deliberate extensions:
n in 2..9 lowers the agreement threshold to m = min(3, n - 1) so that a unanimous answer
still scores 1; n = 1 (CoIN's VQAv2/VizWiz files carry one answer) has no leave-one-out
subset, so the score is the normalised exact match.  The contraction table is generated
from a list of contractions (every form missing one or more apostrophes maps to the full
form, except forms that are ordinary words such as ``its``, ``ill``, ``well``).

Where this differs from the m4c evaluator used by CoIN and LLaVA (``m4c_evaluator.py``,
reproduced exactly by :func:`llava_dymoe.eval.coin_scorers.m4c_normalize`) -- nowhere else:

* step 3 deletes every period; m4c deletes only the first 32 (it passes ``re.UNICODE`` as
  ``re.sub``'s ``count``), so ``"yes" + "." * 33`` is ``yes`` here and ``yes.`` in m4c;
* step 4 maps these 32 words that m4c leaves unchanged: ``couldntve hadntve hedve i'dve
  id've idve im itdve ive mightntve shedve shes shouldntve somebodyd somebodydve
  someonedve somethingdve somethings thatd thatll theredve therell theydve wedve whodve
  wouldntve y'alldve yall'dve yalld've yalldve yallll youdve`` (m4c's ``Im``, ``Ive``,
  ``Id've``, ``I'dve`` keys are capitalised and never match a lower-cased word);
* m4c maps two words this table leaves unchanged: ``'ows'at`` -> ``'ow's'at`` and
  ``somebody'd`` -> ``somebodyd`` (the reverse of this table's ``somebodyd`` ->
  ``somebody'd``; both tables make the two spellings equal).  m4c's keys ``let's``,
  ``she's``, ``ow's'at``, ``'ow'sat`` can never match (step 1 splits ``'s`` off first).

So ``vqa_soft`` gives m4c's TextVQA score except on answers containing one of those words
or more than 32 deletable periods; ``tests/eval/test_vqa_norm_vs_m4c.py`` checks this list.
"""
from __future__ import annotations

import itertools
import re
from typing import Dict, Iterable, List, Sequence

_NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
_ARTICLES = frozenset({"a", "an", "the"})
_PUNCT = ";/[]\"{}()=+\\_-><@`,?!"
_PERIOD = re.compile(r"\.(?!\d)")

_CONTRACTIONS = """
ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've
hasn't haven't he'd he'd've he'll he's how'd how'll how's i'd i'd've i'll i'm i've isn't
it'd it'd've it'll it's let's ma'am mightn't mightn't've might've mustn't must've
needn't not've o'clock oughtn't shan't she'd she'd've she'll she's should've shouldn't
shouldn't've somebody'd somebody'd've somebody'll somebody's someone'd someone'd've
someone'll someone's something'd something'd've something'll something's that'd
that'll that's there'd there'd've there'll there're there's they'd they'd've they'll
they're they've 'twas wasn't we'd we'd've we'll we're we've weren't what'll what're
what's what've when's where'd where's where've who'd who'd've who'll who're who's who've
why'll why're why's won't would've wouldn't wouldn't've y'all y'all'll y'all'd've
you'd you'd've you'll you're you've
""".split()
# apostrophe-less spellings that are ordinary words: never rewrite them
_AMBIGUOUS = frozenset({"its", "ill", "well", "were", "wed", "shed", "shell", "hell", "id", "lets", "whore"})


def _contraction_map(forms: Iterable[str]) -> Dict[str, str]:
    """Map every spelling of a contraction with >= 1 apostrophe dropped to its full form."""
    table: Dict[str, str] = {}
    for full in forms:
        pos = [i for i, ch in enumerate(full) if ch == "'"]
        for r in range(1, len(pos) + 1):
            for drop in itertools.combinations(pos, r):
                variant = "".join(ch for i, ch in enumerate(full) if i not in drop)
                if variant not in _AMBIGUOUS:
                    table.setdefault(variant, full)
    return table


_CONTRACTION_MAP = _contraction_map(_CONTRACTIONS)


def _tokenise(text: str) -> str:
    text = text.lower().replace(",", "").replace("?", "").replace("'s", " 's")
    return text.replace("\n", " ").replace("\t", " ").strip()


def _punctuation(text: str) -> str:
    out = text
    for mark in _PUNCT:
        if mark not in out:
            continue
        spaced = (mark + " ") in text or (" " + mark) in text
        out = out.replace(mark, "" if spaced else " ")
    return _PERIOD.sub("", out)


def _words(text: str) -> str:
    words: List[str] = []
    for word in text.lower().split():
        word = _NUMBER_WORDS.get(word, word)
        if word in _ARTICLES:
            continue
        words.append(_CONTRACTION_MAP.get(word, word))
    return " ".join(words)


def normalize_answer(text: str) -> str:
    """Normalise one answer string with the VQA/EvalAI rules (module docstring, steps 1-4)."""
    if not isinstance(text, str):
        raise TypeError(f"answers must be strings, got {type(text).__name__}: {text!r}")
    return _words(_punctuation(_tokenise(text)))


def soft_accuracy(prediction: str, references: Sequence[str]) -> float:
    """VQA soft accuracy of one prediction against ``references`` (formula in module docstring).

    ``references`` is a list of >= 1 answer strings (a bare string counts as one answer).
    """
    if isinstance(references, str):
        references = [references]
    refs = [normalize_answer(r) for r in references]
    if not refs:
        raise ValueError("vqa_soft needs at least one reference answer, got an empty list")
    pred = normalize_answer(prediction)
    n = len(refs)
    if n == 1:
        return float(pred == refs[0])
    hits = sum(r == pred for r in refs)
    m = min(3, n - 1)
    # leaving out a matching answer removes one hit from the subset, else none
    total = hits * min(1.0, (hits - 1) / m) + (n - hits) * min(1.0, hits / m)
    return total / n
