"""Small JSON / JSONL readers and writers shared by the scorers, converters and reports.

Every reader names the file and the line of a problem, so a user can fix the data.
"""
from __future__ import annotations

import json
import os
from typing import Any, Iterable, List


def read_records(path: str) -> List[Any]:
    """Read a JSON list or a JSONL file (one JSON value per line) into a list.

    The format is sniffed from the first non-blank character: ``[`` means a JSON list,
    anything else means JSONL (blank lines are skipped).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    with open(path, "r", encoding="utf-8") as f:
        text = f.read()
    head = text.lstrip()[:1]
    if head == "[":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None
        return list(data)
    records = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise ValueError(
                f"{path} line {lineno}: not valid JSON ({e.msg}); expected a JSON list or one JSON object per line"
            ) from None
    return records


def write_jsonl(path: str, records: Iterable[Any]) -> str:
    """Write one compact JSON value per line (creates the parent folder)."""
    _mkparent(path)
    with open(path, "w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return path


def write_json(path: str, obj: Any, indent: int = 2) -> str:
    """Write ``obj`` as indented JSON with a trailing newline (creates the parent folder)."""
    _mkparent(path)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=indent, ensure_ascii=False)
        f.write("\n")
    return path


def _mkparent(path: str) -> None:
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
