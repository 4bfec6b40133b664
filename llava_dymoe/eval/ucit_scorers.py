"""The ``ucit`` scoring profile (UCIT's authors' evaluators, quirks included) and the clean caption scorer.

UCIT (HiDe-LLaVA, ACL 2025; also MCITlib and Prism) scores its six tasks with two scripts of
``Ghy0501/HiDe-LLaVA`` (read at commit ``4dd0793``; rules re-stated, no code taken):

=================  ===========================  ==================================================
scorer             authors' script              rule
=================  ===========================  ==================================================
``ucit_exact``     ``eval_deepseek_r1.py``      per answer line: ``pred.upper() == answer.upper()``,
                   (ImageNet-R, ArxivQA,        nothing stripped, no option-letter parsing;
                   IconQA, CLEVR-Math)          accuracy = right / number of answer lines
``ucit_caption``   ``eval_caption.py`` +        pycocoevalcap 1.2 without SPICE on the whole set,
                   their ``eval.py``            answer line ``k`` joined to COCO image id ``k``
                   (VizWiz-Caption, Flickr30k)  (1-based position); score = ``Average`` of the
                                                seven metrics x 100 (:mod:`coco_caption`)
=================  ===========================  ==================================================

Beside them the clean profile uses ``exact`` / ``vqa_soft`` (:mod:`scorers`) for the four
question tasks and ``caption_coco`` here for the captions: the same pycocoevalcap metrics, but
answers joined to references by ``question_id`` (order does not matter, a missing answer is
scored as an empty caption and listed) and every whitespace run (``\\r``, tabs, line and
paragraph separators included) turned into one space first, so no caption can shift the Java
tokenizer's lines.  ``docs/scoring.md`` lists every difference from the authors' code.

File-level rules are part of each scorer (its ``score_file`` attribute, which
:func:`llava_dymoe.eval.scorers.score_file` calls) because the authors' bookkeeping is part of
their score: ``ucit_exact`` divides by the answer lines, a caption score is one number of the
whole set.
"""
from __future__ import annotations

import json
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

from llava_dymoe.eval import coco_caption
from llava_dymoe.eval.io import read_records
from llava_dymoe.eval.scorer_registry import SCORERS
from llava_dymoe.eval.scorer_registry import prediction_text as _pred

#: clean-profile scorer standing beside each ucit scorer (ucit.yaml's clean_scorer; CLEVR-Math uses vqa_soft)
CLEAN_EQUIVALENT: Dict[str, str] = {"ucit_exact": "exact", "ucit_caption": "caption_coco"}


# ----------------------------------------------------------------------------- question tasks
@SCORERS.register("ucit_exact")
def ucit_exact(prediction: str, reference: Any) -> float:
    """1.0 iff ``prediction.upper() == reference.upper()``: the authors' ``eval_deepseek_r1.py`` rule.

    Nothing is stripped or normalised: ``"3 "``, ``"3."``, ``"three"`` and ``"(A)"`` are wrong
    against ``"3"`` / ``"A"``; ``upper()`` folds ``ß`` to ``SS``.  The reference must be the answer
    string of the test file (the authors' ``.upper()`` fails on anything else).
    """
    if not isinstance(reference, str):
        raise ValueError(f"ucit_exact: the reference must be the test file's answer string, got {reference!r} "
                         "(the authors' evaluator calls .upper() on it and fails on anything else)")
    return float(_pred(prediction).upper() == reference.upper())


def _answer_text(rec: Any, path: str, pos: int) -> str:
    if not isinstance(rec, dict) or "text" not in rec:
        raise ValueError(f"{path} line {pos}: an answer record needs a 'text' field (LLaVA's answer format)")
    return _pred(rec["text"])


def _read_answers(path: str) -> List[Any]:
    answers = read_records(path)
    if not answers:
        raise ValueError(f"{path}: no answer lines; nothing to score (the authors' evaluators divide by zero "
                         "or fail here)")
    return answers


def score_answer_lines(scorer_name: str, answers_jsonl: str, references_file: str, *,
                       reference_key: str = "answer", id_key: str = "question_id") -> Dict[str, Any]:
    """A question task scored the authors' way: every answer line counts once, in the denominator too.

    Each line is joined to the reference with its ``question_id`` (compared as strings); a line whose
    id is unknown is an error (the authors' script stops with a ``KeyError``).  A question answered
    twice counts twice and is listed in ``duplicates``; a question without an answer is not counted
    (listed in ``missing``).  With a reference id repeated, the last record wins (a Python dict, as
    theirs).  Returns the fields of :func:`scorers.score_file` plus ``duplicates``.
    """
    from llava_dymoe.eval.scorer_registry import get

    scorer = get(scorer_name)
    references: Dict[str, Any] = {}
    for pos, rec in enumerate(read_records(references_file), start=1):
        if not isinstance(rec, dict) or (id_key not in rec and "id" not in rec) or reference_key not in rec:
            raise ValueError(f"{references_file} record {pos}: needs {id_key!r} and {reference_key!r}")
        references[str(rec.get(id_key, rec.get("id")))] = rec[reference_key]
    per_question: Dict[str, float] = {}
    seen: Dict[str, int] = {}
    right = 0.0
    answers = _read_answers(answers_jsonl)
    for pos, rec in enumerate(answers, start=1):
        text = _answer_text(rec, answers_jsonl, pos)
        qid = str(rec.get("question_id"))
        if qid not in references:
            raise ValueError(f"{answers_jsonl} line {pos}: question_id {qid!r} is not in {references_file} (the "
                             "authors' evaluator stops with a KeyError); were the answers made from another file?")
        try:
            value = float(scorer(text, references[qid]))
        except (TypeError, ValueError) as e:
            raise ValueError(f"{references_file}: question {qid!r}: {e}") from None
        right += value
        per_question[qid] = value
        seen[qid] = seen.get(qid, 0) + 1
    return {"scorer": scorer_name, "score": 100.0 * right / len(answers), "n": len(answers),
            "n_answered": len(seen), "missing": [q for q in references if q not in seen], "extra": [],
            "duplicates": [q for q, k in seen.items() if k > 1], "per_question": per_question}


ucit_exact.score_file = score_answer_lines


# ----------------------------------------------------------------------------- caption references
def load_caption_references(path: str) -> List[Tuple[Any, List[str], Optional[str]]]:
    """``[(image_id, [captions], question_id or None)]`` in the COCO file's image order.

    ``path`` is the authors' COCO caption file (``val_coco_type_3000.json``: ``images`` and
    ``annotations``; no question ids) or the references JSONL ``convert-ucit`` writes from it
    (``{question_id, image_id, answer: [captions]}``, one line per image in the same order).
    """
    try:
        with open(path, "r", encoding="utf-8") as f:
            head = f.read(1)
            while head and head.isspace():
                head = f.read(1)
            if head == "{":
                f.seek(0)
                text = f.read()
                try:
                    data = json.loads(text)
                except json.JSONDecodeError:
                    data = None  # a JSONL file: read below
                if isinstance(data, dict) and "annotations" in data:
                    return [(i, caps, None) for i, caps in coco_caption.coco_references(data)]
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    out = []
    for pos, rec in enumerate(read_records(path), start=1):
        if not isinstance(rec, dict) or "image_id" not in rec or "answer" not in rec:
            raise ValueError(f"{path} record {pos}: a caption reference needs 'image_id' and 'answer' (the list of "
                             "reference captions); write it with convert-ucit or pass the COCO caption file")
        caps = rec["answer"]
        caps = [caps] if isinstance(caps, str) else caps
        qid = rec.get("question_id")
        out.append((rec["image_id"], list(caps), None if qid is None else str(qid)))
    return out


def _result(scorer_name: str, metrics: Dict[str, float], n_answered: int, missing: List[str],
            extra: List[str]) -> Dict[str, Any]:
    return {"scorer": scorer_name, "score": metrics[coco_caption.AVERAGE], "n": int(metrics["n"]),
            "n_answered": n_answered, "missing": missing, "extra": extra, "per_question": {},
            "metrics": {k: metrics[k] for k in (*coco_caption.METRICS, coco_caption.AVERAGE)}}


# ----------------------------------------------------------------------------- ucit_caption (authors)
@SCORERS.register("ucit_caption")
def ucit_caption(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> Dict[str, float]:
    """Whole-set scorer: the seven metrics and ``Average`` (:func:`coco_caption.caption_metrics`) of
    ``predictions[k]`` against ``references[k]``, both in the COCO file's image order."""
    return coco_caption.caption_metrics(list(predictions), list(references))


def score_captions_by_position(scorer_name: str, answers_jsonl: str, references_file: str, **_: Any) -> Dict[str, Any]:
    """The authors' join: answer line ``k`` (1-based) is the caption of COCO image id ``k``.

    Their code only runs when the image ids are exactly ``1..(number of answer lines)`` and every
    image has a reference caption (otherwise pycocotools or pycocoevalcap asserts); each of those
    cases is a one-line error here.  Deliberate addition: when the references carry question ids
    (``convert-ucit``'s file), an answer line whose ``question_id`` differs from its image's is an
    error, because a positional join would pair captions with the wrong images.
    """
    answers = _read_answers(answers_jsonl)
    refs = load_caption_references(references_file)
    n = len(answers)
    ids = [image_id for image_id, _, _ in refs]
    if any(isinstance(i, bool) or not isinstance(i, int) for i in ids) or sorted(set(ids)) != list(range(1, n + 1)) \
            or len(ids) != n:
        raise ValueError(f"{answers_jsonl}: {n} answer lines, but the image ids of {references_file} are not exactly "
                         f"1..{n} ({len(ids)} images); UCIT's caption evaluator joins answer line k to image id k and "
                         "fails otherwise (answers from another test file, or a lost chunk?)")
    texts: Dict[int, str] = {}
    for pos, rec in enumerate(answers, start=1):
        texts[pos] = _answer_text(rec, answers_jsonl, pos)
    predictions, references = [], []
    for image_id, caps, qid in refs:
        if not caps:
            raise ValueError(f"{references_file}: image {image_id} has no reference caption (pycocoevalcap fails)")
        got = answers[image_id - 1].get("question_id")
        if qid is not None and got is not None and str(got) != qid:
            raise ValueError(f"{answers_jsonl} line {image_id}: question_id {got!r}, but image {image_id} belongs to "
                             f"question {qid!r}; the answers are not in the test file's order, and UCIT's evaluator "
                             "joins by position (sort them, or score with caption_coco, which joins by id)")
        predictions.append(texts[image_id])
        references.append(caps)
    return _result(scorer_name, ucit_caption(predictions, references), n, [], [])


ucit_caption.score_file = score_captions_by_position
ucit_caption.whole_set = True


# ----------------------------------------------------------------------------- caption_coco (clean)
_WHITESPACE = re.compile(r"\s+")


def clean_caption(text: str) -> str:
    """Every whitespace run (``\\r``, ``\\n``, tabs, ``\\u2028`` ...) -> one space; stripped."""
    return _WHITESPACE.sub(" ", text).strip()


@SCORERS.register("caption_coco")
def caption_coco(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> Dict[str, float]:
    """Whole-set scorer, clean profile: :func:`ucit_caption` after :func:`clean_caption` on every caption."""
    return coco_caption.caption_metrics([clean_caption(_pred(p)) for p in predictions],
                                        [[clean_caption(r) for r in refs] for refs in references])


def score_captions_by_id(scorer_name: str, answers_jsonl: str, references_file: str, **_: Any) -> Dict[str, Any]:
    """Captions joined to references by ``question_id`` (needs ``convert-ucit``'s references file).

    Every image counts: a question without an answer is scored as the empty caption and listed in
    ``missing``; answers to unknown ids are ignored and listed in ``extra``; an id answered twice is
    an error.
    """
    refs = load_caption_references(references_file)
    if any(qid is None for _, _, qid in refs):
        raise ValueError(f"{references_file}: caption_coco joins answers by question_id, and this file has none "
                         "(the COCO file itself?); convert-ucit writes references with question ids")
    texts: Dict[str, str] = {}
    for pos, rec in enumerate(_read_answers(answers_jsonl), start=1):
        qid = str(rec.get("question_id") if isinstance(rec, dict) else None)
        if qid in texts:
            raise ValueError(f"{answers_jsonl} line {pos}: question_id {qid!r} is answered twice; remove the "
                             "duplicate (were chunk files merged twice?)")
        texts[qid] = _answer_text(rec, answers_jsonl, pos)
    wanted = [qid for _, _, qid in refs]
    missing = [qid for qid in wanted if qid not in texts]
    for image_id, caps, qid in refs:
        if not caps:
            raise ValueError(f"{references_file}: image {image_id} (question {qid!r}) has no reference caption")
    metrics = caption_coco([texts.get(qid, "") for qid in wanted], [caps for _, caps, _ in refs])
    return _result(scorer_name, metrics, len(wanted) - len(missing), missing,
                   [qid for qid in texts if qid not in set(wanted)])


caption_coco.score_file = score_captions_by_id
caption_coco.whole_set = True
