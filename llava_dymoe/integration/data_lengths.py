"""The rough length pass of the data check: does each sample fit ``model_max_length``?

Upstream truncates ``input_ids`` to ``model_max_length`` and, after splicing the image features,
the embeddings again (``tokenizer_model_max_length``), so a too-long sample silently loses the
end of its answer.  Here each sample is rendered with the Vicuna v1 template (the system prompt,
``USER: ... ASSISTANT: ...</s>``), tokenised in batches with the fast tokenizer of the base LLM,
and an image counts ``image_tokens`` tokens instead of its ``<image>`` text.  Samples whose UTF-8
byte count (a token covers at least one byte) already fits are not tokenised.  It is a rough pass
(other conversation templates differ by a few tokens), meant to catch samples that are far off.
"""
from __future__ import annotations

import json
import os
from typing import Any, List, Optional, Sequence

from .data_report import Problem

#: LLaVA-1.5's CLIP ViT-L/14-336: (336 / 14) ** 2 image tokens per image.
DEFAULT_IMAGE_TOKENS = 576
SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
          "detailed, and polite answers to the user's questions.")
_BATCH = 2048
#: tokens a text may have beyond its UTF-8 byte count (BOS, EOS, dummy prefix, margin)
_SLACK = 4


def render(sample: Any, until_first_answer: bool = False) -> Optional[str]:
    """The Vicuna v1 prompt of a sample without its ``<image>`` text; None if malformed.

    ``until_first_answer``: only the part before the first answer's text (``... ASSISTANT:``), whose tokens
    upstream masks from the loss: a sample truncated within it has no supervised token left."""
    conv = sample.get("conversations") if isinstance(sample, dict) else None
    if not isinstance(conv, list):
        return None
    parts = [SYSTEM]
    for turn in conv:
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            return None
        text = turn["value"].replace("<image>", "").strip()
        if until_first_answer and turn.get("from") != "human":
            return " ".join(parts + ["ASSISTANT:"])
        parts.append(f"USER: {text}" if turn.get("from") == "human" else f"ASSISTANT: {text}</s>")
    return None if until_first_answer else " ".join(parts)


def load_tokenizer(name_or_path: str, local_only: bool = False):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name_or_path, use_fast=True, local_files_only=local_only)
    except Exception:  # no fast tokenizer files: the slow one (what LLaVA uses) is exact, only slower
        return AutoTokenizer.from_pretrained(name_or_path, use_fast=False, local_files_only=local_only)


_TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json", "tokenizer.model")


def tokenizer_at_hand(name_or_path: Optional[str]) -> Optional[str]:
    """``name_or_path`` when its tokenizer can be read without a download (a local folder with tokenizer
    files, or a hub id already in the Hugging Face cache), else None.  Imports no transformers."""
    if not name_or_path:
        return None
    path = os.path.expanduser(name_or_path)
    if os.path.isdir(path):
        return path if any(os.path.isfile(os.path.join(path, n)) for n in _TOKENIZER_FILES) else None
    if name_or_path.count("/") != 1 or os.path.isabs(name_or_path):
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    try:
        found = try_to_load_from_cache(name_or_path, "tokenizer_config.json")
    except Exception:  # a malformed id: no cached tokenizer
        return None
    return name_or_path if isinstance(found, str) else None


def image_tokens_of(vision_tower: Optional[str]) -> int:
    """Tokens one image takes: ``(image_size / patch_size) ** 2`` of a local vision tower's ``config.json``
    (its ``vision_config`` block for a CLIP model), else LLaVA-1.5's 576."""
    try:
        with open(os.path.join(os.path.expanduser(vision_tower or ""), "config.json")) as f:
            cfg = json.load(f)
        cfg = cfg.get("vision_config") or cfg
        return (int(cfg["image_size"]) // int(cfg["patch_size"])) ** 2
    except (OSError, ValueError, KeyError, TypeError, AttributeError, ZeroDivisionError):
        return DEFAULT_IMAGE_TOKENS


def check_lengths(records: Sequence[Any], path: str, tokenizer: Any, model_max_length: int,
                  image_tokens: Optional[int] = None, local_only: bool = False) -> List[Problem]:
    """A ``too long`` problem for each sample whose prompt + image tokens exceed ``model_max_length``, and a
    ``no answer left`` problem instead when the part before its first answer alone does not fit (upstream
    masks that part from the loss, so the truncated sample teaches nothing)."""
    per_image = DEFAULT_IMAGE_TOKENS if image_tokens is None else int(image_tokens)
    texts, index = [], []
    for i, sample in enumerate(records):
        text = render(sample)
        if text is None:
            continue
        # every token covers at least one byte of the text (sentencepiece with byte fallback, byte-level
        # BPE), plus the dummy-prefix space and the special tokens: a sample within that bound fits
        images = per_image if "image" in sample else 0
        if len(text.encode("utf-8")) + _SLACK + images > model_max_length:
            texts.append(text)
            index.append(i)
    if not texts:
        return []
    tok = load_tokenizer(tokenizer, local_only) if isinstance(tokenizer, str) else tokenizer
    problems = []
    for start in range(0, len(texts), _BATCH):
        ids = tok(texts[start:start + _BATCH], add_special_tokens=True)["input_ids"]
        over = [(i, len(seq) + (per_image if "image" in records[i] else 0))
                for i, seq in zip(index[start:start + _BATCH], ids)]
        over = [(i, n) for i, n in over if n > model_max_length]
        heads = tok([render(records[i], until_first_answer=True) or "" for i, _ in over],
                    add_special_tokens=True)["input_ids"] if over else []
        for (i, n), head in zip(over, heads):
            first = len(head) + (per_image if "image" in records[i] else 0)
            if first >= model_max_length:
                problems.append(Problem("no answer left", path, i, f"about {n} tokens, its first answer starts at "
                                        f"token {first} >= model_max_length {model_max_length}"))
            else:
                problems.append(Problem("too long", path, i, f"about {n} tokens (with {per_image} per image) > "
                                                             f"model_max_length {model_max_length}"))
    return problems


def tokens_of(problem: Problem) -> int:
    """The token count a ``too long`` / ``no answer left`` problem names."""
    return int(problem.detail.split()[1])


def refuse_unsupervised(problems: Sequence[Problem], samples: int, model_max_length: int, path: str,
                        skip_hint: str) -> List[Problem]:
    """Raise :class:`DataError` when a sample has no supervised token left at ``model_max_length`` (naming how
    many, the longest and the flag to raise); returns the ``too long`` problems (partly truncated samples)."""
    from ..errors import DataError
    from .data_report import DataReport

    lost = [p for p in problems if p.kind == "no answer left"]
    if lost:
        longest = max(lost, key=tokens_of)
        report = DataReport(files=[path], samples=samples, problems=list(lost))
        raise DataError(f"{len(lost)} of {samples} samples of {path} lose every supervised token at "
                        f"--model_max_length {model_max_length} (the longest: about {tokens_of(longest)} tokens, "
                        f"sample {longest.index}): training would learn nothing from them. Raise --model_max_length "
                        f"(to about {tokens_of(longest)}) or shorten those samples (or pass {skip_hint})",
                        details=report.format())
    return [p for p in problems if p.kind == "too long"]
