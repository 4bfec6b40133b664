"""Data pre-flight: find every problem of a LLaVA training JSON or question file before a model loads.

Upstream LLaVA reads its training list lazily, so a bad sample surfaces mid-run as a traceback,
and only when the sampler draws it (llava-integration.md §1.2, §1.8).  These checks read the
whole file once and report *every* problem, grouped by kind, with file and sample index:

* the file is JSON (the error names line and column; JSONL for ``model_vqa_loader`` questions),
  a list, not empty;
* every training sample has ``conversations``: a list of ``{"from", "value"}`` turns
  alternating ``human``/``gpt``, starting with ``human`` and with at least one answer
  (``preprocess_v1`` asserts the alternation; a leading ``gpt`` turn is dropped silently);
* ``image`` (optional) is a file under the image folder that PIL opens and verifies (with
  ``decode_images``, fully decodes: truncated JPEG data passes ``verify()``);
* the ``<image>`` token is in exactly one human turn when an image is given, and nowhere when
  none is (LLaVA splices the image features at that token);
* with a tokenizer: prompt + image tokens fit ``model_max_length`` (a rough pass with the Vicuna
  v1 template; upstream truncates longer samples silently, cutting their answers);
* ``id`` present and unique (warnings for training data, which LLaVA never reads by id; errors
  for question files, whose ids join answers to references).

Stdlib and PIL only (transformers only for the optional length pass).
"""
from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .data_report import DataReport, Problem

IMAGE_TOKEN = "<image>"
ROLES = ("human", "gpt")

# ----------------------------------------------------------------------------- reading
def read_records(path: str, jsonl: bool = False) -> Tuple[Optional[List[Any]], List[Problem]]:
    """The JSON list (or JSONL lines) of ``path``, or ``None`` and the file-level problem."""
    if not os.path.isfile(path):
        return None, [Problem("missing file", path, None, "does not exist")]
    try:
        with open(path, "r", encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        return None, [Problem("invalid JSON", path, None, f"cannot read it: {e}")]
    if jsonl:
        records, problems = [], []
        for n, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as e:
                    problems.append(Problem("invalid JSON", path, None, f"line {n} column {e.colno}: {e.msg}"))
        if problems:
            return None, problems
    else:
        try:
            records = json.loads(text)
        except json.JSONDecodeError as e:
            return None, [Problem("invalid JSON", path, None, f"line {e.lineno} column {e.colno}: {e.msg}")]
    if not isinstance(records, list):
        return None, [Problem("not a list", path, None, f"the top level is a {type(records).__name__}")]
    if not records:
        return None, [Problem("empty", path, None, "0 samples")]
    return records, []


# ----------------------------------------------------------------------------- one sample
def _conversation_problem(conv: Any, with_image: bool) -> Tuple[Optional[str], Optional[str]]:
    """``(bad conversations detail, image token detail)`` of one sample's ``conversations``."""
    if not isinstance(conv, list):
        return f"'conversations' is missing or not a list ({type(conv).__name__})", None
    if not conv:
        return "'conversations' is empty", None
    tokens_in: List[Tuple[int, str, int]] = []
    for j, turn in enumerate(conv):
        if not isinstance(turn, dict) or turn.get("from") not in ROLES or not isinstance(turn.get("value"), str):
            return f"turn {j} is not {{from: human|gpt, value: text}}: {str(turn)[:80]}", None
        if turn["from"] != ROLES[j % 2]:
            return f"turn {j} is from {turn['from']!r}, expected {ROLES[j % 2]!r} (turns alternate, human first)", None
        n = turn["value"].count(IMAGE_TOKEN)
        if n:
            tokens_in.append((j, turn["from"], n))
    if len(conv) < 2:
        return "no gpt answer turn: nothing to learn", None
    total = sum(n for _, _, n in tokens_in)
    if with_image and (total != 1 or tokens_in[0][1] != "human"):
        where = ", ".join(f"turn {j} ({who}) x{n}" for j, who, n in tokens_in) or "none"
        return None, f"has an image but {total} '<image>' token(s): {where}"
    if not with_image and total:
        return None, f"has no image but {total} '<image>' token(s) (turn {tokens_in[0][0]})"
    return None, None


def _check_image_field(sample: Dict[str, Any], path: str, i: int, problems: List[Problem],
                       images: Dict[str, List[int]]) -> bool:
    """Whether the sample has an image; records the image for the file check."""
    if "image" not in sample:
        return False
    image = sample["image"]
    if not isinstance(image, str) or not image.strip():
        problems.append(Problem("bad image field", path, i, f"'image' is {str(image)[:60]!r}"))
    else:
        images.setdefault(image, []).append(i)
    return True


def _check_ids(records: Sequence[Any], path: str, id_keys: Sequence[str], severity_error: bool
               ) -> List[Problem]:
    problems, first = [], {}
    for i, sample in enumerate(records):
        if not isinstance(sample, dict):
            continue
        key = next((k for k in id_keys if k in sample), None)
        if key is None:
            problems.append(Problem("missing id", path, i, f"no {' or '.join(repr(k) for k in id_keys)} field"))
            continue
        sid = str(sample[key])
        if sid in first:
            problems.append(Problem("duplicate id", path, i, f"id {sid!r} also at sample {first[sid]}"))
        else:
            first[sid] = i
    if severity_error:  # question files: ids join answers to references
        problems = [Problem("bad question id", p.file, p.index, p.detail) for p in problems]
    return problems


# ----------------------------------------------------------------------------- images
def _verify_image(full: str, decode: bool = False) -> Optional[Tuple[str, str]]:
    """``Image.verify()`` (header and, for PNG, chunk checksums; fast); ``decode``: a full decode,
    which also finds truncated JPEG data (slower)."""
    if os.path.isdir(full):
        return "missing image", f"{full} is a folder, not an image file"
    if not os.path.isfile(full):
        return "missing image", f"{full} does not exist"
    from PIL import Image

    try:
        with Image.open(full) as img:
            img.load() if decode else img.verify()
    except Exception as e:  # PIL raises many types for a bad file
        return "unreadable image", f"{full}: {type(e).__name__}: {e}"
    return None


#: ``decode_images=None`` ("when cheap"): images are fully decoded when there are at most this many distinct
#: ones (a few ms each), else only verified.
DECODE_WHEN_AT_MOST = 2000


def check_images(images: Dict[str, List[int]], image_folder: Optional[str], path: str, workers: int = 8,
                 decode: Optional[bool] = False) -> List[Problem]:
    """Each distinct image (relative path -> the samples using it) exists under ``image_folder`` and
    verifies (``decode``: decodes fully; None: when there are at most :data:`DECODE_WHEN_AT_MOST`); a bad
    image is a problem of every sample that uses it."""
    if not images:
        return []
    if decode is None:
        decode = len(images) <= DECODE_WHEN_AT_MOST
    if not image_folder or not os.path.isdir(image_folder):
        i = min(min(v) for v in images.values())
        return [Problem("missing image", path, i, f"{len(images)} image(s) referenced but the image folder "
                                                  f"{image_folder!r} is not a directory")]
    items = list(images.items())
    fulls = [os.path.join(image_folder, rel) for rel, _ in items]
    if len(fulls) > 64 and workers > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(_verify_image, fulls, [decode] * len(fulls), chunksize=64))
    else:
        results = [_verify_image(f, decode) for f in fulls]
    return [Problem(r[0], path, i, r[1]) for (_, users), r in zip(items, results) if r is not None for i in users]


# ----------------------------------------------------------------------------- files
SampleCheck = Callable[[Dict[str, Any], int, bool, List[Problem]], None]


def _check_file(path: str, jsonl: bool, check_sample: SampleCheck, id_keys: Tuple[str, ...], ids_are_errors: bool,
                image_folder: Optional[str], workers: int, decode_images: bool,
                extra: Optional[Callable[[List[Any]], List[Problem]]] = None) -> DataReport:
    """The walk both file kinds share: read, per-sample checks (``check_sample(sample, index, with_image,
    found)`` after the object and image-field checks), ids, images, ``extra(records)``; problems sorted by
    sample index (stable: a sample's problems keep their order)."""
    t0 = time.perf_counter()
    report = DataReport(files=[path])
    records, problems = read_records(path, jsonl=jsonl)
    report.problems += problems
    if records is None:
        report.seconds = time.perf_counter() - t0
        return report
    report.samples = len(records)
    images: Dict[str, List[int]] = {}
    found: List[Problem] = []
    for i, sample in enumerate(records):
        if not isinstance(sample, dict):
            found.append(Problem("not an object", path, i, f"a {type(sample).__name__}"))
            continue
        with_image = _check_image_field(sample, path, i, found, images)
        check_sample(sample, i, with_image, found)
    found += _check_ids(records, path, id_keys, severity_error=ids_are_errors)
    found += check_images(images, image_folder, path, workers, decode_images)
    if extra is not None:
        found += extra(records)
    report.problems += sorted(found, key=lambda p: (p.index if p.index is not None else -1))
    report.images = len(images)
    report.seconds = time.perf_counter() - t0
    return report


def check_training_data(data_path: str, image_folder: Optional[str], *, tokenizer: Optional[str] = None,
                        model_max_length: Optional[int] = None, image_tokens: Optional[int] = None,
                        workers: int = 8, decode_images: bool = False) -> DataReport:
    """Every problem of a LLaVA training JSON (``--data_path``) against ``--image_folder``.

    With ``tokenizer`` (a path or hub id) and ``model_max_length``, also the rough length pass
    (:mod:`.data_lengths`)."""
    def conversations(sample: Dict[str, Any], i: int, with_image: bool, found: List[Problem]) -> None:
        bad, token = _conversation_problem(sample.get("conversations"), with_image)
        if bad:
            found.append(Problem("bad conversations", data_path, i, bad))
        if token:
            found.append(Problem("image token", data_path, i, token))

    lengths = None
    if tokenizer and model_max_length:
        def lengths(records: List[Any]) -> List[Problem]:
            from .data_lengths import check_lengths

            return check_lengths(records, data_path, tokenizer, model_max_length, image_tokens)

    return _check_file(data_path, False, conversations, ("id",), False, image_folder, workers,
                       decode_images, lengths)


def question_text(sample: Dict[str, Any], science: bool) -> Any:
    """The question an upstream generator reads: ``text``, or ``conversations[0].value`` (science)."""
    if not science:
        return sample.get("text")
    conv = sample.get("conversations")
    if isinstance(conv, list) and conv and isinstance(conv[0], dict):
        return conv[0].get("value")
    return None


def check_question_file(path: str, image_folder: Optional[str], question_format: str = "jsonl",
                        workers: int = 8, decode_images: bool = False) -> DataReport:
    """Every problem of an upstream eval question file: ``"jsonl"`` (``model_vqa_loader`` /
    ``model_vqa``: ``{question_id, image, text}`` lines) or ``"science_json"`` (``model_vqa_science``:
    a JSON list of ``{id, image?, conversations}``)."""
    science = question_format == "science_json"

    def question(sample: Dict[str, Any], i: int, with_image: bool, found: List[Problem]) -> None:
        text = question_text(sample, science)
        if not isinstance(text, str) or not text.strip():
            found.append(Problem("bad question", path, i, "no question text"))

    return _check_file(path, not science, question, ("id",) if science else ("question_id",), True, image_folder,
                       workers, decode_images)
