"""Expected upstream warnings: the whole text goes to a log file, the console gets one line per kind.

Reloading a full LLaVA checkpoint (the demo's base model, saved by upstream ``train()`` with the CLIP
weights inside) makes transformers warn "Some weights of the model checkpoint at ... were not used when
initializing LlavaLlamaForCausalLM: [...]" with every vision-tower parameter name (several KB).  That is
expected: upstream builds the vision tower separately and loads it from ``mm_vision_tower``.  Inside
``collapse_expected(log_path)`` every warning of the ``transformers`` loggers is appended to ``log_path``;
an expected one is left off the console and counted, an unexpected one is shown as before; on exit one
line per expected kind says how many there were, why they are expected and where the full text is.

A warning is expected only when all of it matches: an unused-weights warning that names one weight
outside ``model.vision_tower.`` is shown in full (it may be a real loading problem).
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Sequence, TextIO


@dataclass(frozen=True)
class ExpectedWarning:
    """One kind of expected upstream warning: ``matches(text)`` and the console line's explanation."""

    key: str
    explanation: str
    matches: Callable[[str], bool]


_UNUSED_WEIGHTS = re.compile(r"Some weights of the model checkpoint at .+? were not used when initializing "
                             r"\w+: \[(?P<names>[^\]]*)\]", re.S)


def unused_vision_weights(text: str) -> bool:
    """transformers' "weights ... were not used" warning whose every weight is a vision-tower weight."""
    m = _UNUSED_WEIGHTS.match(text)
    names = re.findall(r"'([^']*)'", m.group("names")) if m else []
    return bool(names) and all(n.startswith("model.vision_tower.") for n in names)


EXPECTED: Sequence[ExpectedWarning] = (
    ExpectedWarning("unused_vision_weights",
                    "expected 'weights not used' warning(s) while reloading the base (vision tower weights "
                    "are loaded separately, from the CLIP folder)", unused_vision_weights),
)


def classify(text: str, expected: Sequence[ExpectedWarning] = EXPECTED) -> Optional[ExpectedWarning]:
    """The expected kind ``text`` is, or None (an unexpected warning)."""
    return next((kind for kind in expected if kind.matches(text)), None)


class _Collapse(logging.Filter):
    """Handler filter: log every record to a file, drop (and count) the expected ones."""

    def __init__(self, log_path: str, expected: Sequence[ExpectedWarning]):
        super().__init__()
        self.log_path, self.expected = log_path, expected
        self.counts: Dict[str, int] = {}
        self._lock = threading.Lock()
        self._last: Optional[logging.LogRecord] = None  # a record seen by several handlers is logged once
        self._last_shown = True

    def filter(self, record: logging.LogRecord) -> bool:
        with self._lock:
            if record is self._last:
                return self._last_shown
            text = record.getMessage()
            kind = classify(text, self.expected)
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
            with open(self.log_path, "a", encoding="utf-8") as f:
                f.write(f"{stamp} {record.levelname} {record.name}: {text}\n")
            if kind is not None:
                self.counts[kind.key] = self.counts.get(kind.key, 0) + 1
            self._last, self._last_shown = record, kind is None
            return self._last_shown


def summary_lines(counts: Dict[str, int], log_path: str, expected: Sequence[ExpectedWarning] = EXPECTED) -> List[str]:
    """One console line per expected kind that occurred."""
    return [f"upstream: {counts[k.key]} {k.explanation}; full text in {log_path}" for k in expected
            if counts.get(k.key)]


def _transformers_handlers() -> List[logging.Handler]:
    from transformers.utils import logging as hf_logging

    hf_logging.get_logger("transformers")  # configures the library's stderr handler if nothing did yet
    return list(logging.getLogger("transformers").handlers)


@contextlib.contextmanager
def collapse_expected(log_path: str, console: Optional[TextIO] = None, expected: Sequence[ExpectedWarning] = EXPECTED,
                      handlers: Optional[Sequence[logging.Handler]] = None) -> Iterator[Dict[str, int]]:
    """Filter the ``transformers`` console handlers (or ``handlers``) as the module docstring says.

    Yields the live ``{kind key: count}``; the summary lines go to ``console`` (default stderr) on exit.
    """
    os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
    flt = _Collapse(log_path, expected)
    targets = list(_transformers_handlers() if handlers is None else handlers)
    for h in targets:
        h.addFilter(flt)
    try:
        yield flt.counts
    finally:
        for h in targets:
            h.removeFilter(flt)
        out = console or sys.stderr
        for line in summary_lines(flt.counts, log_path, expected):
            print(line, file=out, flush=True)
