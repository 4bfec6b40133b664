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

from typing import Any, List, Optional, Sequence

from .data_report import Problem

#: LLaVA-1.5's CLIP ViT-L/14-336: (336 / 14) ** 2 image tokens per image.
DEFAULT_IMAGE_TOKENS = 576
SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
          "detailed, and polite answers to the user's questions.")
_BATCH = 2048
#: tokens a text may have beyond its UTF-8 byte count (BOS, EOS, dummy prefix, margin)
_SLACK = 4


def render(sample: Any) -> Optional[str]:
    """The Vicuna v1 prompt of a sample without its ``<image>`` text; None if malformed."""
    conv = sample.get("conversations") if isinstance(sample, dict) else None
    if not isinstance(conv, list):
        return None
    parts = [SYSTEM]
    for turn in conv:
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            return None
        text = turn["value"].replace("<image>", "").strip()
        parts.append(f"USER: {text}" if turn.get("from") == "human" else f"ASSISTANT: {text}</s>")
    return " ".join(parts)


def load_tokenizer(name_or_path: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name_or_path, use_fast=True)
    except Exception:  # no fast tokenizer files: the slow one (what LLaVA uses) is exact, only slower
        return AutoTokenizer.from_pretrained(name_or_path, use_fast=False)


def check_lengths(records: Sequence[Any], path: str, tokenizer: Any, model_max_length: int,
                  image_tokens: Optional[int] = None) -> List[Problem]:
    """A ``too long`` problem for each sample whose prompt + image tokens exceed ``model_max_length``."""
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
    tok = load_tokenizer(tokenizer) if isinstance(tokenizer, str) else tokenizer
    problems = []
    for start in range(0, len(texts), _BATCH):
        ids = tok(texts[start:start + _BATCH], add_special_tokens=True)["input_ids"]
        for i, seq in zip(index[start:start + _BATCH], ids):
            n = len(seq) + (per_image if "image" in records[i] else 0)
            if n > model_max_length:
                problems.append(Problem("too long", path, i, f"about {n} tokens (with {per_image} per image) > "
                                                             f"model_max_length {model_max_length}"))
    return problems
