"""The scorer registry and the prediction helpers both scoring profiles share.

``SCORERS`` holds every per-sample scorer ``(prediction: str, reference) -> float`` in ``[0, 1]``:
the clean profile registers its own in :mod:`llava_dymoe.eval.scorers`, the coin profile in
:mod:`llava_dymoe.eval.coin_scorers`.  Both import this module, and ``scorers`` imports
``coin_scorers`` so that every name is registered once ``scorers`` is imported; users keep
importing ``SCORERS``, ``get`` and ``names`` from ``scorers``.
"""
from __future__ import annotations

import re
from typing import Any, Callable, List, Optional

from llava_dymoe.registry import Registry

Scorer = Callable[[str, Any], float]
SCORERS: "Registry[Scorer]" = Registry("scorer")


#: scorers whose reference is a box: ``convert-coin`` stores ``answer_bbox`` parsed for them
GROUNDING_SCORERS = frozenset({"grounding_iou", "coin_grounding"})


def get(name: str) -> Scorer:
    """The scorer registered as ``name``; ``KeyError`` lists the known names."""
    return SCORERS.get(name)


def names() -> List[str]:
    return SCORERS.names()


def prediction_text(prediction: Any) -> str:
    """A prediction as text: ``None`` (no answer) is ``""``; anything but a string is an error."""
    if prediction is None:
        return ""
    if not isinstance(prediction, str):
        raise TypeError(f"a prediction must be a string, got {type(prediction).__name__}: {prediction!r}")
    return prediction


_ANSWER_IS = re.compile(r"The answer is ([A-Z])\.")
_SINGLE_CHAR_WORD = re.compile(r"\b(\w)\b")


def parse_letter(text: str) -> Optional[str]:
    """The option letter in ``text`` by the four ``sqa_letter`` rules (see ``scorers``), or ``None``."""
    text = prediction_text(text).strip()
    if len(text) == 1 and "A" <= text <= "Z":
        return text
    if len(text) >= 3 and "A" <= text[0] <= "Z" and text[1:3] == ". ":
        return text[0]
    m = _ANSWER_IS.search(text)
    if m:
        return m.group(1)
    m = _SINGLE_CHAR_WORD.search(text)
    return m.group(1).upper() if m else None
