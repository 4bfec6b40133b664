"""Convert UCIT's released test files into the files LLaVA's eval modules and our scorers read.

UCIT's ``instructions/<Task>/test_3000.json`` is a JSON list of ``{question_id, image, text,
answer}`` (CoIN's format), read by the authors' ``model_answer.py`` exactly as upstream's
``llava.eval.model_vqa_loader`` reads its JSONL.  From one test file we write:

* ``questions.jsonl``: ``{question_id, image, text}`` in the test file's order (``<image>``
  removed from ``text``: the generator inserts it, as the authors' ``model_answer.py`` does);
* ``references.jsonl``: question tasks ``{question_id, answer}`` (the answer as stored);
  caption tasks one line per image of ``val_coco_type_3000.json``, in its ``images`` order:
  ``{question_id, image_id, answer: [reference captions]}``.  The authors join answer line ``k``
  to COCO image id ``k``, so image id ``k`` belongs to the ``k``-th test question; the
  ``question_id`` recorded here is that question's, which lets the clean profile join by id and
  the ucit profile check the order.

A caption file whose image ids are not ``1..(number of test questions)``, or an image without a
reference caption, is refused: the authors' evaluator fails on those too.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional

from llava_dymoe.eval import coco_caption
from llava_dymoe.eval.convert import load_coin_test, tasks_to_convert, to_references, to_vqa_questions
from llava_dymoe.eval.io import write_jsonl

#: sample counts the authors publish, by task: the test files hold 3000 questions (``test_3000``),
#: the ``_4w`` training files 40,000 samples (4 wan); other training counts are not stated in the names
PUBLISHED_COUNTS: Dict[str, Dict[str, int]] = {
    "ImageNet-R": {"test": 3000}, "ArxivQA": {"test": 3000, "train": 40000}, "VizWiz-Caption": {"test": 3000},
    "IconQA": {"test": 3000}, "CLEVR-Math": {"test": 3000, "train": 40000},
    "Flickr30k": {"test": 3000, "train": 40000},
}


def caption_reference_lines(records: List[Dict[str, Any]], coco_path: str) -> List[Dict[str, Any]]:
    """References of a caption task: one ``{question_id, image_id, answer}`` per COCO image, in its order."""
    with open(coco_path, "r", encoding="utf-8") as f:
        try:
            coco = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{coco_path}: not valid JSON (line {e.lineno}: {e.msg})") from None
    try:
        refs = coco_caption.coco_references(coco)
    except ValueError as e:
        raise ValueError(f"{coco_path}: {e}") from None
    n = len(records)
    ids = [image_id for image_id, _ in refs]
    if any(isinstance(i, bool) or not isinstance(i, int) for i in ids) or sorted(ids) != list(range(1, n + 1)):
        raise ValueError(f"{coco_path}: its {len(ids)} image ids are not exactly 1..{n} (one per question of the test "
                         "file, in order), so UCIT's position join cannot pair them; is it the caption file of "
                         "this task?")
    out = []
    for image_id, caps in refs:
        if not caps:
            raise ValueError(f"{coco_path}: image {image_id} has no caption in 'annotations' (pycocoevalcap fails)")
        out.append({"question_id": records[image_id - 1]["question_id"], "image_id": image_id, "answer": caps})
    return out


def convert_ucit_file(test_json: str, question_file: str, reference_file: str, *,
                      coco_captions: Optional[str] = None) -> Dict[str, Any]:
    """Convert one UCIT test file (and, for a caption task, its COCO caption file); returns a summary."""
    records = load_coin_test(test_json, benchmark="UCIT")
    refs = caption_reference_lines(records, coco_captions) if coco_captions else to_references(records)
    write_jsonl(question_file, to_vqa_questions(records))
    write_jsonl(reference_file, refs)
    summary: Dict[str, Any] = {"test_json": test_json, "n": len(records), "question_file": question_file,
                               "reference_file": reference_file}
    if coco_captions:
        summary["coco_captions"] = coco_captions
        summary["n_reference_captions"] = sum(len(r["answer"]) for r in refs)
    return summary


def convert_suite(suite: Any, tasks: Optional[List[str]] = None) -> List[Dict[str, Any]]:
    """Convert every task (or the named ``tasks``) of a *resolved* UCIT suite."""
    results = []
    for task in tasks_to_convert(suite, tasks):
        for label, path in (("annotation_file", task.annotation_file), ("coco_captions", task.coco_captions)):
            if path and not os.path.isfile(path):
                raise FileNotFoundError(f"task {task.name!r}: {label} {path} not found (download UCIT's instructions "
                                        "from the HF dataset HaiyangGuo/UCIT under the data root; docs/ucit.md)")
        captions = _is_caption_task(task)
        if captions and not task.coco_captions:
            raise ValueError(f"task {task.name!r}: its scorer {task.scorer!r} scores captions and needs "
                             "'coco_captions' (val_coco_type_3000.json) in the suite")
        summary = convert_ucit_file(task.annotation_file, task.question_file, task.reference_file,
                                    coco_captions=task.coco_captions if captions else None)
        summary["task"] = task.name
        published = PUBLISHED_COUNTS.get(task.name, {}).get("test")
        if published is not None and summary["n"] != published:
            summary["warning"] = f"{summary['n']} test questions, UCIT publishes {published}"
        results.append(summary)
    return results


def _is_caption_task(task: Any) -> bool:
    """Whether a task's ``scorer`` is a whole-set caption scorer (``ucit_caption``, ``caption_coco``)."""
    from llava_dymoe.eval.scorer_registry import get

    return bool(getattr(get(task.scorer), "whole_set", False))
