"""Convert CoIN's released test JSON into the files LLaVA's eval modules and our scorers read.

CoIN's test/val files (``Instructions_Original/<Task>/{test,val}.json``) are a JSON list of
``{"question_id", "image", "text", "answer"}``; Grounding adds ``"answer_bbox"`` and
``"size"``.  From one such file we write:

* the question file for the upstream generator (llava-integration.md §1.8):
  ``llava.eval.model_vqa_loader`` / ``model_vqa`` read JSONL lines ``{question_id, image,
  text}``; ``llava.eval.model_vqa_science`` reads a JSON list of ``{id, image,
  conversations: [{from: human, value: text}, {from: gpt, value: answer}]}``;
* a references JSONL ``{question_id, answer}`` for :func:`scorers.score_file`.

Choices made here:

* ``<image>`` tokens are removed from ``text``: the upstream generators insert the image
  token themselves, so a token left in the text would be doubled.
* Grounding: the reference is ``answer_bbox`` (else ``answer``) parsed into four floats and
  kept in CoIN's coordinates: normalised to the image padded to a square of side
  ``max(w, h)``, which is the frame the model is trained to output.  CoIN's scorer
  multiplies both boxes by ``max(w, h)`` before computing IoU; uniform scaling does not
  change IoU, so we store and compare normalised boxes and only copy ``size`` along.
* TextVQA (and VQAv2): CoIN's file carries one answer, but CoIN scores TextVQA against the
  ten answers of the official ``TextVQA_0.5.1_val.json``.  Pass that file as
  ``official_answers`` to store all ten answers as the reference list (VQAv2's official
  ``annotations`` file works too); questions it does not cover keep their single answer.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional

from llava_dymoe.eval.io import read_records, write_json, write_jsonl
from llava_dymoe.eval.scorers import parse_box

_REQUIRED = ("question_id", "text", "answer")


def load_coin_test(path: str, benchmark: str = "CoIN") -> List[Dict[str, Any]]:
    """Read and check a CoIN test/val JSON (list of question records; UCIT's test files share the format)."""
    records = read_records(path)
    if not records:
        raise ValueError(f"{path}: no records; expected {benchmark}'s test JSON (a list of "
                         "question_id/image/text/answer)")
    seen = set()
    for pos, rec in enumerate(records, start=1):
        if not isinstance(rec, dict):
            raise ValueError(f"{path} record {pos}: expected a JSON object, got {type(rec).__name__}")
        missing = [k for k in _REQUIRED if k not in rec]
        if missing:
            raise ValueError(f"{path} record {pos}: missing field(s) {', '.join(missing)} "
                             f"({benchmark} test records have question_id, image, text, answer)")
        qid = str(rec["question_id"])
        if qid in seen:
            raise ValueError(f"{path} record {pos}: question_id {qid!r} appears twice")
        seen.add(qid)
    return records


def _question_text(rec: Dict[str, Any]) -> str:
    return str(rec["text"]).replace("<image>", "").strip()


def to_vqa_questions(records: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Question lines for ``model_vqa_loader`` / ``model_vqa``: ``{question_id, image, text}``."""
    out = []
    for rec in records:
        q = {"question_id": rec["question_id"]}
        if rec.get("image"):
            q["image"] = rec["image"]
        q["text"] = _question_text(rec)
        out.append(q)
    return out


def to_science_questions(records: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Question list for ``model_vqa_science``: ``{id, image, conversations}``."""
    out = []
    for rec in records:
        q: Dict[str, Any] = {"id": rec["question_id"]}
        if rec.get("image"):
            q["image"] = rec["image"]
        q["conversations"] = [{"from": "human", "value": _question_text(rec)},
                              {"from": "gpt", "value": rec["answer"]}]
        out.append(q)
    return out


def load_official_answers(path: str) -> Dict[str, List[str]]:
    """``question_id -> [answers]`` from an official TextVQA or VQAv2 annotation file.

    Accepted layouts: TextVQA ``{"data": [{"question_id", "answers": [str]}]}``; VQAv2
    ``{"annotations": [{"question_id", "answers": [{"answer": str}]}]}``; or a list of
    ``{"question_id", "answers"}``.
    """
    with open(path, "r", encoding="utf-8") as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None
    items = data.get("data", data.get("annotations")) if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise ValueError(f"{path}: expected a 'data' (TextVQA) or 'annotations' (VQAv2) list")
    out: Dict[str, List[str]] = {}
    for pos, item in enumerate(items, start=1):
        if not isinstance(item, dict) or "question_id" not in item or "answers" not in item:
            raise ValueError(f"{path} entry {pos}: needs 'question_id' and 'answers'")
        answers = [a["answer"] if isinstance(a, dict) else a for a in item["answers"]]
        if not answers or not all(isinstance(a, str) for a in answers):
            raise ValueError(f"{path} entry {pos}: 'answers' must be a non-empty list of strings")
        out[str(item["question_id"])] = answers
    return out


def to_references(records: List[Dict[str, Any]], *, grounding: bool = False,
                  official: Optional[Dict[str, List[str]]] = None) -> List[Dict[str, Any]]:
    """Reference lines ``{question_id, answer}`` (grounding: ``answer`` is a box, ``size`` copied)."""
    out = []
    for rec in records:
        ref: Dict[str, Any] = {"question_id": rec["question_id"]}
        if grounding:
            raw = rec.get("answer_bbox", rec["answer"])
            box = parse_box(raw)
            if box is None:
                raise ValueError(f"grounding question {rec['question_id']!r}: cannot read a box "
                                 f"[x1, y1, x2, y2] from {raw!r}")
            ref["answer"] = box
            if "size" in rec:
                ref["size"] = rec["size"]
        elif official is not None and str(rec["question_id"]) in official:
            ref["answer"] = official[str(rec["question_id"])]
        else:
            ref["answer"] = rec["answer"]
        out.append(ref)
    return out


def convert_coin_file(test_json: str, question_file: str, reference_file: str, *,
                      question_format: str = "jsonl", grounding: bool = False,
                      official_answers: Optional[str] = None) -> Dict[str, Any]:
    """Convert one CoIN test JSON; returns a summary ``{n, question_file, reference_file, ...}``.

    ``question_format``: ``"jsonl"`` (model_vqa_loader / model_vqa) or ``"science_json"``.
    """
    records = load_coin_test(test_json)
    if question_format == "jsonl":
        write_jsonl(question_file, to_vqa_questions(records))
    elif question_format == "science_json":
        write_json(question_file, to_science_questions(records))
    else:
        raise ValueError(f"unknown question format {question_format!r}; use 'jsonl' or 'science_json'")
    official = load_official_answers(official_answers) if official_answers else None
    refs = to_references(records, grounding=grounding, official=official)
    write_jsonl(reference_file, refs)
    n_official = sum(1 for r in refs if isinstance(r["answer"], list) and not grounding)
    return {"test_json": test_json, "n": len(records), "question_file": question_file,
            "reference_file": reference_file, "question_format": question_format,
            "n_official_answers": n_official}


def tasks_to_convert(suite, tasks: Optional[List[str]] = None) -> List[Any]:
    """The tasks (all, or the named ``tasks``) of a *resolved* suite, each with a ``reference_file``."""
    if suite.data_root is None:
        raise ValueError("resolve the suite against a data root first: load_suite(path, data_root=...)")
    chosen = [suite.task(n) for n in tasks] if tasks else list(suite.tasks)
    for task in chosen:
        if not task.reference_file:
            raise ValueError(f"task {task.name!r}: set 'reference_file' in the suite to say where the references go")
    return chosen


def convert_suite(suite, tasks: Optional[List[str]] = None) -> List[Dict[str, Any]]:
    """Convert every task (or the named ``tasks``) of a *resolved* suite to its question and reference files."""
    results = []
    for task in tasks_to_convert(suite, tasks):
        if not os.path.isfile(task.annotation_file):
            raise FileNotFoundError(f"task {task.name!r}: annotation_file {task.annotation_file} not found "
                                    "(download CoIN's Instructions_Original under the data root)")
        official = task.official_answers if task.official_answers and os.path.isfile(task.official_answers) else None
        summary = convert_coin_file(task.annotation_file, task.question_file, task.reference_file,
                                    question_format=task.question_format,
                                    grounding=task.is_grounding, official_answers=official)
        summary["task"] = task.name
        if task.official_answers and official is None:
            summary["warning"] = f"official_answers {task.official_answers} not found; kept CoIN's single answers"
            if "coin_textvqa" in (task.scorer, task.clean_scorer):
                summary["warning"] += ("; coin_textvqa (CoIN's m4c score) needs the 10 official answers and will "
                                       "refuse these references: provide the file and convert again")
        results.append(summary)
    return results
