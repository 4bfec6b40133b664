"""Per-task scorers (the clean profile) for continual-instruction-tuning suites (llava-integration.md §3.5).

Every scorer is a pure function ``(prediction: str, reference) -> float`` in ``[0, 1]``,
registered under a fixed name in ``SCORERS`` and fetched with :func:`get`.
:func:`score_file` applies one to a merged answers JSONL (LLaVA's answer format) and a
question/annotation file, and returns the task score in percent.

``sqa_letter``   ScienceQA.  Parse an option letter from the prediction: (1) the whole
                 prediction is one capital letter; (2) it starts with ``"X. "``; (3) it contains
                 ``"The answer is X."``; (4) else the first single-character word, upper-cased
                 (CoIN's fallback).  Score 1 when it equals the reference.  The reference is a
                 letter (any string parsed by the same rules, e.g. ``"B"`` or ``"B. a cat"``) or
                 an ``int``, read as a 0-based option index (ScienceQA's ``problems.json``).
``vqa_soft``     TextVQA / VQAv2.  VQA soft accuracy with the EvalAI answer normalisation
                 (see :mod:`llava_dymoe.eval.vqa_norm`).  The reference is a list of answers (or
                 one string).  10 answers: the standard metric; 2..9: the agreement threshold
                 becomes ``min(3, n-1)``; 1 answer: normalised exact match.
``contains``     ImageNet.  Case-folded, stripped: 1 if ``ref in pred or pred in ref``.
``exact``        GQA / VizWiz / OCR-VQA.  Lower-case, strip whitespace and one trailing period
                 on both sides, then equality.
``grounding_iou`` RefCOCO grounding.  Parse ``[x1, y1, x2, y2]`` from the prediction; 1 if the
                 IoU with the reference box is > 0.5.  Unparsable or degenerate boxes score 0.

Deliberate differences from CoIN's scripts (all in the direction of a cleaner protocol):

* Joining: predictions are matched to references by ``question_id`` for every task (CoIN's
  ImageNet script matches by position in the result file); the score is over all questions
  of the reference file, a question without an answer scoring 0 and being listed in
  ``missing`` (most CoIN scripts divide by the number of answers, so a lost chunk went
  unnoticed); duplicate ids are an error; answers to unknown ids are listed in ``extra``.
* ``sqa_letter``: CoIN limits letters to the question's number of choices (A-E); no choice
  list exists here, so any letter A-Z is parsed — a letter beyond the choices can never
  equal the reference, so scores agree.  The "The answer is X." rule comes from LLaVA's
  ScienceQA script; CoIN's single-character fallback usually finds the same letter.
* ``contains`` is case-folded and strips whitespace (CoIN: case-sensitive); an empty
  prediction scores 0 (in CoIN ``"" in gt`` is true, so an empty answer counted as correct).
* ``exact``: CoIN compares ``upper()``-ed strings as is (VizWiz, VQAv2), strips every trailing
  period of the prediction only before the official GQA script's exact match (GQA), and
  scores any OCR-VQA prediction containing "Unanswerable" as wrong.  Here one rule serves all three: whitespace and one trailing
  period are stripped on both sides, and "unanswerable" matches only the reference
  "unanswerable" (OCR-VQA references never are).  A list reference matches if any entry does.
* ``vqa_soft`` on TextVQA equals CoIN's m4c score when the references hold the ten official
  answers (``convert-coin`` with ``official_answers``), except for the contraction-table
  words and the 32-period limit listed in :mod:`llava_dymoe.eval.vqa_norm`; with only
  CoIN's single answer it falls back to the normalised exact match.
* ``upper()`` vs ``lower()``: the clean ``exact`` compares ``lower()``-ed strings, CoIN's
  VizWiz/VQAv2 scripts ``upper()``-ed ones, which fold some non-ASCII letters differently
  (``"straße"`` vs ``"STRASSE"``: equal under ``upper()``, not under ``lower()``).
* ``grounding_iou`` also finds a box inside other text (``"Coordinates: [0.27, 0.78, 0.81,
  1.00]."``) or the first of two boxes; CoIN's parser scores both 0.
* ``vqa_soft`` on VQAv2: CoIN's VQAv2 script is an ``upper()`` exact match against the single
  answer in its val.json; with one reference we do a *normalised* exact match (articles,
  punctuation, number words), which can only accept more equivalent spellings.
* ``grounding_iou``: CoIN strips the brackets and then drops the first and last characters
  of the remainder (``"[0.1, 0.2, 0.3, 0.4]"`` parses as ``.1, 0.2, 0.3, 0.``); we parse the
  numbers as written.  CoIN multiplies both boxes by ``max(w, h)`` of the image first, which
  leaves IoU unchanged (up to float rounding when it is 0.5 exactly), so boxes are compared in CoIN's normalised padded-square frame and
  no image size is needed.  Boxes with ``x2 <= x1`` or ``y2 <= y1`` score 0.

These are the **clean** profile.  The **coin** profile (:mod:`llava_dymoe.eval.coin_scorers`,
scorers ``coin_sqa`` .. ``coin_ocrvqa``, in the same ``SCORERS``) reproduces CoIN's per-sample
rules exactly, quirks included; ``docs/scoring.md`` lists every difference with an example.
"""
from __future__ import annotations

import math
import re
from typing import Any, Dict, List, Optional, Sequence

from llava_dymoe.eval import coin_scorers  # noqa: F401  (the coin profile registers its scorers in SCORERS)
from llava_dymoe.eval import ucit_scorers  # noqa: F401  (so does the ucit profile, with caption_coco)
from llava_dymoe.eval.io import read_records
# the registry lives below both profiles; SCORERS, get, names and GROUNDING_SCORERS stay importable from here
from llava_dymoe.eval.scorer_registry import GROUNDING_SCORERS, SCORERS, Scorer, get, names, parse_letter  # noqa: F401
from llava_dymoe.eval.scorer_registry import prediction_text as _text
from llava_dymoe.eval.vqa_norm import soft_accuracy


# ----------------------------------------------------------------------------- sqa_letter
@SCORERS.register("sqa_letter")
def sqa_letter(prediction: str, reference: Any) -> float:
    """1.0 if the parsed option letter equals the reference letter (or 0-based index)."""
    if isinstance(reference, bool) or not isinstance(reference, (int, str)):
        raise ValueError(f"sqa_letter: reference must be an option letter or a 0-based int index, got {reference!r}")
    if isinstance(reference, int):
        if not 0 <= reference < 26:
            raise ValueError(f"sqa_letter: option index {reference} is outside 0..25")
        want = chr(ord("A") + reference)
    else:
        want = parse_letter(reference)
        if want is None or not "A" <= want <= "Z":
            raise ValueError(f"sqa_letter: cannot read an option letter from the reference {reference!r}")
    return float(parse_letter(prediction) == want)


# ----------------------------------------------------------------------------- text scorers
@SCORERS.register("vqa_soft")
def vqa_soft(prediction: str, reference: Any) -> float:
    """VQA soft accuracy: mean over leave-one-out subsets of ``min(1, matches / 3)``."""
    return soft_accuracy(_text(prediction), reference)


def _references(reference: Any, scorer: str) -> List[str]:
    refs = [reference] if isinstance(reference, str) else reference
    if not isinstance(refs, (list, tuple)) or not refs or not all(isinstance(r, str) for r in refs):
        raise ValueError(f"{scorer}: reference must be a string or a non-empty list of strings, got {reference!r}")
    return list(refs)


def _exact_norm(text: str) -> str:
    text = text.strip().lower()
    return text[:-1].rstrip() if text.endswith(".") else text


@SCORERS.register("exact")
def exact(prediction: str, reference: Any) -> float:
    """1.0 if ``norm(pred) == norm(ref)`` with ``norm`` = lower-case, strip, drop one trailing period."""
    pred = _exact_norm(_text(prediction))
    return float(any(pred == _exact_norm(r) for r in _references(reference, "exact")))


@SCORERS.register("contains")
def contains(prediction: str, reference: Any) -> float:
    """1.0 if the case-folded reference is in the prediction or vice versa; empty strings score 0."""
    pred = _text(prediction).strip().casefold()
    if not pred:
        return 0.0
    for ref in _references(reference, "contains"):
        ref = ref.strip().casefold()
        if ref and (ref in pred or pred in ref):
            return 1.0
    return 0.0


# ----------------------------------------------------------------------------- grounding_iou
_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_BRACKETED = re.compile(r"[\[(]([^\[\]()]*)[\])]")
_NUMBER = re.compile(_NUM)


def parse_box(text: Any) -> Optional[List[float]]:
    """Four numbers ``[x1, y1, x2, y2]`` from a text or a sequence, else ``None``.

    Text: the first ``[...]`` or ``(...)`` group holding exactly four numbers; failing that,
    the text's numbers if there are exactly four.  Non-finite values give ``None``.
    """
    if isinstance(text, (list, tuple)):
        try:
            box = [float(v) for v in text]
        except (TypeError, ValueError):
            return None
    else:
        text = _text(text)
        box = None
        for group in _BRACKETED.findall(text):
            nums = _NUMBER.findall(group)
            if len(nums) == 4:
                box = [float(v) for v in nums]
                break
        if box is None:
            nums = _NUMBER.findall(text)
            box = [float(v) for v in nums] if len(nums) == 4 else None
    if box is None or len(box) != 4 or not all(math.isfinite(v) for v in box):
        return None
    return box


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two ``[x1, y1, x2, y2]`` boxes; 0 if either is degenerate."""
    if a[2] <= a[0] or a[3] <= a[1] or b[2] <= b[0] or b[3] <= b[1]:
        return 0.0
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(0.0, iw) * max(0.0, ih)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@SCORERS.register("grounding_iou")
def grounding_iou(prediction: str, reference: Any) -> float:
    """1.0 if IoU(parsed prediction box, reference box) > 0.5; an unparsable prediction scores 0."""
    ref = parse_box(reference)
    if ref is None or ref[2] <= ref[0] or ref[3] <= ref[1]:
        raise ValueError(f"grounding_iou: reference must be a box [x1, y1, x2, y2] with x1 < x2, y1 < y2, got {reference!r}")
    pred = parse_box(_text(prediction))
    return float(pred is not None and box_iou(pred, ref) > 0.5)


# ----------------------------------------------------------------------------- file level
def _index(records: List[Any], path: str, id_key: str) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    where: Dict[str, int] = {}
    for pos, rec in enumerate(records, start=1):
        if not isinstance(rec, dict):
            raise ValueError(f"{path} record {pos}: expected a JSON object, got {type(rec).__name__}")
        key = id_key if id_key in rec else ("id" if "id" in rec else None)
        if key is None:
            raise ValueError(f"{path} record {pos}: no {id_key!r} (or 'id') field; every record needs a question id")
        qid = str(rec[key])
        if qid in out:
            raise ValueError(
                f"{path}: question id {qid!r} appears twice (records {where[qid]} and {pos}); "
                "remove the duplicate (were chunk files merged twice?)"
            )
        out[qid], where[qid] = rec, pos
    return out


def score_file(
    scorer_name: str,
    answers_jsonl: str,
    questions_file: str,
    *,
    reference_key: str = "answer",
    id_key: str = "question_id",
) -> Dict[str, Any]:
    """Score a merged answers file against a question/annotation file.

    ``answers_jsonl``: LLaVA answer records ``{question_id, prompt, text, answer_id, model_id,
    metadata}`` (JSONL or a JSON list).  ``questions_file``: JSONL or JSON list of records with
    ``id_key`` (falling back to ``id``) and the reference under ``reference_key``.  Ids are
    compared as strings.  Returns ``{scorer, score (percent over all questions), n, n_answered,
    missing: [ids without an answer, scored 0], extra: [answer ids with no question, ignored],
    per_question: {id: score}}``.

    A scorer with a ``score_file`` attribute brings its own file-level rule (the ``ucit`` profile
    divides by the answer lines; caption scorers score the whole set and add ``metrics``); it is
    called with the same arguments and returns the same fields.
    """
    scorer = get(scorer_name)
    file_rule = getattr(scorer, "score_file", None)
    if file_rule is not None:  # the ucit profile's own bookkeeping, whole-set caption scorers
        return file_rule(scorer_name, answers_jsonl, questions_file, reference_key=reference_key, id_key=id_key)
    questions = _index(read_records(questions_file), questions_file, id_key)
    if not questions:
        raise ValueError(f"{questions_file}: no questions; nothing to score")
    answers = _index(read_records(answers_jsonl), answers_jsonl, "question_id")
    per_question: Dict[str, float] = {}
    missing: List[str] = []
    for qid, q in questions.items():
        if reference_key not in q:
            raise ValueError(f"{questions_file}: question {qid!r} has no {reference_key!r} field (set reference_key)")
        ans = answers.get(qid)
        if ans is None:
            missing.append(qid)
            per_question[qid] = 0.0
            continue
        if "text" not in ans:
            raise ValueError(f"{answers_jsonl}: answer for question {qid!r} has no 'text' field")
        reference = q[reference_key]
        if getattr(scorer, "takes_record", False):  # e.g. coin_grounding also reads the image size
            reference = {**q, "answer": reference}
        try:
            per_question[qid] = float(scorer(ans["text"], reference))
        except (TypeError, ValueError) as e:
            raise ValueError(f"{questions_file}: question {qid!r}: {e}") from None
    extra = [qid for qid in answers if qid not in questions]
    return {
        "scorer": scorer_name,
        "score": 100.0 * sum(per_question.values()) / len(per_question),
        "n": len(per_question),
        "n_answered": len(per_question) - len(missing),
        "missing": missing,
        "extra": extra,
        "per_question": per_question,
    }
