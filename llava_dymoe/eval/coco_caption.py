"""Caption metrics with the field's library: pycocoevalcap 1.2 (BLEU-1..4, METEOR 1.5, ROUGE-L, CIDEr-D).

UCIT's authors (HiDe-LLaVA, ``llava/eval/eval_caption.py`` with the ``eval.py`` their README asks
users to put into ``pycocoevalcap/``) score a caption set like this, and so does
:func:`caption_metrics`:

1. ``gts`` and ``res`` are dicts keyed by image id, in the order of the COCO file's ``images``
   (``COCO.getImgIds()``); ``gts[id]`` holds the reference captions of the image in annotation
   order, ``res[id]`` the one predicted caption;
2. both go through Stanford's PTBTokenizer (Java, ``stanford-corenlp-3.4.1.jar``: lower-cased,
   one caption per line, punctuation tokens dropped);
3. ``Bleu(4)``, ``Meteor()`` (Java, ``meteor-1.5.jar``), ``Rouge()`` and ``Cider()`` (CIDEr-D:
   Gaussian length penalty, clipped counts, document frequencies from this set's references)
   each score the whole set; SPICE is not run (the authors' ``eval.py`` comments it out);
4. every metric times 100, and ``Average`` = the mean of the seven (it can exceed 100: CIDEr-D
   is not bounded by 1).

The library is called exactly as the authors' ``COCOEvalCap.evaluate`` calls it (same dict
order, same tokenizer calls), so quirks carry over: a ``\\r`` inside a caption is a line break
for the Java tokenizer and shifts every later caption of the set by one line.

Without Java the metrics cannot be computed the authors' way; :func:`require_java` refuses in
one line instead of substituting an approximate tokenizer.
"""
from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
from typing import Dict, List, Mapping, Sequence

#: the metrics the authors print, in their order (``coco_eval.eval`` without SPICE)
METRICS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")
AVERAGE = "Average"


class CaptionScoringUnavailable(ValueError):
    """Java or pycocoevalcap is missing: caption scoring is refused (the message says what to install)."""


def java_version() -> str:
    """The first line ``java -version`` prints; :class:`CaptionScoringUnavailable` when there is no Java."""
    java = shutil.which("java")
    why = "no `java` on PATH"
    if java is not None:
        try:
            done = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError) as e:
            why = f"`java -version` failed ({e})"
        else:
            lines = (done.stderr or done.stdout).strip().splitlines()
            if done.returncode == 0 and lines:
                return lines[0]
            why = f"`java -version` exited with status {done.returncode}"
    raise CaptionScoringUnavailable(
        f"caption scoring needs Java ({why}): pycocoevalcap runs Stanford's PTBTokenizer and METEOR 1.5 as Java "
        "programs; install a Java runtime (e.g. apt-get install openjdk-17-jre-headless) and retry")


def require_java() -> str:
    """Refuse (one line) unless both Java and pycocoevalcap 1.2 are available; returns Java's version line."""
    version = java_version()
    try:
        import pycocoevalcap  # noqa: F401
    except ImportError:
        raise CaptionScoringUnavailable(
            "caption scoring needs pycocoevalcap 1.2 (the library UCIT's authors use): pip install "
            "pycocoevalcap==1.2 (or this package's [test] / [captions] extra)") from None
    return version


def caption_metrics(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> Dict[str, float]:
    """The seven pycocoevalcap metrics (times 100) and their ``Average`` of a whole caption set.

    ``predictions[k]`` is the caption predicted for image ``k`` and ``references[k]`` its reference
    captions, both in the order of the COCO file's ``images`` (see the module docstring).  Each
    image needs at least one reference (pycocoevalcap asserts so).  Returns ``{"Bleu_1", ...,
    "CIDEr", "Average", "n"}``.
    """
    if len(predictions) != len(references):
        raise ValueError(f"caption scoring: {len(predictions)} predictions but {len(references)} reference sets")
    if not predictions:
        raise ValueError("caption scoring: no captions to score")
    for k, (pred, refs) in enumerate(zip(predictions, references)):
        if not isinstance(pred, str):
            raise TypeError(f"caption scoring: prediction {k} must be a string, got {type(pred).__name__}: {pred!r}")
        if isinstance(refs, str) or not refs or not all(isinstance(r, str) for r in refs):
            raise ValueError(f"caption scoring: image {k} needs a non-empty list of reference captions, got {refs!r}")
    require_java()
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    # keys 1..n in image order; the tokenizer reads only the "caption" field of each entry
    gts = {k: [{"caption": r} for r in refs] for k, refs in enumerate(references, start=1)}
    res = {k: [{"caption": p}] for k, p in enumerate(predictions, start=1)}
    raw: Dict[str, float] = {}
    with contextlib.redirect_stdout(sys.stderr):  # the library prints BLEU's counts; keep stdout for results
        tokenizer = PTBTokenizer()
        gts_tok, res_tok = tokenizer.tokenize(gts), tokenizer.tokenize(res)
        if gts_tok.keys() != res_tok.keys():
            raise ValueError("caption scoring: the PTB tokenizer lost captions (a line break such as '\\r' inside "
                             "a caption shifts the lines); pycocoevalcap fails here too")
        for scorer, names in ((Bleu(4), METRICS[:4]), (Meteor(), METRICS[4:5]), (Rouge(), METRICS[5:6]),
                              (Cider(), METRICS[6:7])):
            score, _ = scorer.compute_score(gts_tok, res_tok)
            for name, value in zip(names, score if len(names) > 1 else [score]):
                raw[name] = float(value)
    out = {name: raw[name] * 100.0 for name in METRICS}
    out[AVERAGE] = sum(out[name] for name in METRICS) / len(METRICS)
    out["n"] = len(predictions)
    return out


def coco_references(coco: Mapping) -> List[tuple]:
    """``[(image_id, [captions])]`` of a COCO caption file, in ``images`` order (``COCO.getImgIds()``);
    captions in annotation order.  A repeated image id keeps its first place, as pycocotools does."""
    if not isinstance(coco, Mapping) or not isinstance(coco.get("images"), list) \
            or not isinstance(coco.get("annotations"), list):
        raise ValueError("a COCO caption file is a JSON object with 'images' and 'annotations' lists")
    order: Dict[object, None] = {}
    for pos, img in enumerate(coco["images"], start=1):
        if not isinstance(img, Mapping) or "id" not in img:
            raise ValueError(f"COCO file: images entry {pos} has no 'id'")
        order.setdefault(img["id"], None)
    caps: Dict[object, List[str]] = {}
    for pos, ann in enumerate(coco["annotations"], start=1):
        if not isinstance(ann, Mapping) or "image_id" not in ann or not isinstance(ann.get("caption"), str):
            raise ValueError(f"COCO file: annotations entry {pos} needs 'image_id' and a string 'caption'")
        caps.setdefault(ann["image_id"], []).append(ann["caption"])
    return [(image_id, caps.get(image_id, [])) for image_id in order]
