"""The result of a data check: every problem, grouped by kind and counted (``data_check.py``).

Stdlib only.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from ..errors import DataError

#: kind -> (severity, what to do).  Severity "error" fails the check; "warning" is reported only.
KINDS: Dict[str, Tuple[str, str]] = {
    "missing file": ("error", "no such file; check the path (suite paths are relative to --data-root; "
                              "CoIN question files are written by `cli convert-coin`, UCIT's by `cli convert-ucit`)"),
    "invalid JSON": ("error", "the file is truncated or not JSON; re-download or re-export it"),
    "not a list": ("error", "LLaVA expects a JSON list of samples"),
    "empty": ("error", "the file holds no samples"),
    "not an object": ("error", "every sample must be a JSON object"),
    "bad conversations": ("error", "'conversations' must be a list of {from: human|gpt, value: text} turns, "
                                   "alternating, starting with human, with at least one gpt answer"),
    "bad question": ("error", "a question needs its text ('text', or conversations[0].value for model_vqa_science)"),
    "bad question id": ("error", "every question needs its own id ('question_id'; 'id' for model_vqa_science): "
                                 "answers are joined to references by it"),
    "bad image field": ("error", "'image' must be a non-empty relative path string"),
    "missing image": ("error", "no such file under the image folder; check --image_folder or the paths"),
    "unreadable image": ("error", "the file is not an image PIL can decode; replace or drop it"),
    "image token": ("error", "put exactly one '<image>' in a human turn of samples with an image, none elsewhere"),
    "too long": ("error", "upstream truncates it silently and its answer is lost; shorten it or raise "
                          "--model_max_length"),
    "no answer left": ("error", "the part before its first answer alone exceeds the limit: upstream truncates it "
                                "and the sample has no supervised token (loss 0); shorten it or raise "
                                "--model_max_length"),
    "caption references": ("error", "the COCO caption file must pair with the test file as UCIT's evaluator joins "
                                    "them (image ids 1..n in the test file's order, a caption for each): is it this "
                                    "task's val_coco_type_3000.json?"),
    "sample count": ("warning", "the file's sample count differs from the published one: a partial download or "
                                "another version of the benchmark; results will not compare with published tables"),
    "missing id": ("warning", "give every sample an 'id' so problems and answers can be traced"),
    "duplicate id": ("warning", "ids should be unique"),
}


@dataclass(frozen=True)
class Problem:
    kind: str
    file: str
    index: Optional[int]  # 0-based sample (or line) index; None for the whole file
    detail: str

    @property
    def severity(self) -> str:
        return KINDS[self.kind][0]

    def where(self) -> str:
        return self.file if self.index is None else f"{self.file} sample {self.index}"


@dataclass
class DataReport:
    """Every problem found, in file order; ``ok`` when none is an error."""

    files: List[str] = field(default_factory=list)
    samples: int = 0
    images: int = 0  # distinct image files checked
    problems: List[Problem] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def errors(self) -> List[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> List[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def counts(self) -> Dict[str, int]:
        return dict(Counter(p.kind for p in self.problems))

    def extend(self, other: "DataReport") -> "DataReport":
        self.files += other.files
        self.samples += other.samples
        self.images += other.images
        self.problems += other.problems
        self.seconds += other.seconds
        return self

    def summary(self) -> str:
        files = ", ".join(self.files) if len(self.files) <= 2 else f"{len(self.files)} files"
        return (f"data check of {files}: {self.samples} samples, {self.images} images, {len(self.errors)} error(s), "
                f"{len(self.warnings)} warning(s) in {self.seconds:.1f} s")

    def format(self, max_examples: int = 3) -> str:
        """Problems grouped by kind (errors first), counted, with the first ``max_examples`` of each."""
        lines = [self.summary()]
        groups: Dict[str, List[Problem]] = {}
        for p in self.problems:
            groups.setdefault(p.kind, []).append(p)
        for kind in sorted(groups, key=lambda k: (KINDS[k][0] != "error", list(KINDS).index(k))):
            severity, fix = KINDS[kind]
            items = groups[kind]
            lines.append(f"  {severity} {kind} x{len(items)}: {fix}")
            lines += [f"    {p.where()}: {p.detail}" for p in items[:max_examples]]
            if len(items) > max_examples:
                lines.append(f"    ... and {len(items) - max_examples} more")
        return "\n".join(lines)

    def to_dict(self) -> Dict[str, Any]:
        return {"ok": self.ok, "files": self.files, "samples": self.samples, "images": self.images,
                "seconds": round(self.seconds, 3), "counts": self.counts(),
                "problems": [{"kind": p.kind, "severity": p.severity, "file": p.file, "index": p.index,
                              "detail": p.detail} for p in self.problems]}

    def raise_if_failed(self, skip_hint: str = "--skip_data_check") -> "DataReport":
        """Raise :class:`DataError` (the report as details) when there is an error."""
        if not self.ok:
            kinds = ", ".join(f"{k} x{n}" for k, n in self.counts().items() if KINDS[k][0] == "error")
            raise DataError(f"the data check found {len(self.errors)} problem(s) ({kinds}) listed above; fix the "
                            f"data (or, if you know better, pass {skip_hint})", details=self.format())
        return self
