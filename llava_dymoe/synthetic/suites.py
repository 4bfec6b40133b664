"""The synthetic suites this package can write, and what each needs from the tiny CLIP.

``synthetic`` (:data:`~.tasks.SUITE_TASKS`, the default) is today's five-task suite; ``coin_shaped``
(:data:`~.coin_tasks.COIN_SHAPED_TASKS`) is CoIN's eight tasks with CoIN's instructions, overlapping
question forms and image tokens dominating the prompt.  A :class:`SuiteSpec` names its tasks,
its base mixture (with weights) and its image geometry: the image side in pixels and the number
of CLIP patches per side (the base model's CLIP is built with ``patch_size = image_size /
patches``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from .tasks import BASE_TASKS, DESCRIPTION, MIX_WEIGHTS, SUITE_TASKS, TaskDef
from .world import GRID

DEFAULT_SUITE = "synthetic"


@dataclass(frozen=True)
class SuiteSpec:
    name: str
    tasks: Tuple[TaskDef, ...]
    base_tasks: Tuple[TaskDef, ...]
    mix_weights: Dict[str, int]
    description: str
    image_size: int
    patches: int  # CLIP patches per image side
    notes: Tuple[str, ...] = ()  # extra comment lines of the suite YAML
    #: LLaVA's ``model_max_length`` for this suite's training (None: the project's default, 256).  LLaVA
    #: truncates the sequence *after* splicing in the image features, so 256 image tokens need more.
    model_max_length: Optional[int] = None

    @property
    def training(self) -> Dict[str, int]:
        """The suite YAML's ``training:`` overrides (and the base stage's)."""
        return {} if self.model_max_length is None else {"model_max_length": self.model_max_length}

    @property
    def patch_size(self) -> int:
        return self.image_size // self.patches

    def check_image_size(self, image_size: int) -> None:
        if image_size % self.patches or image_size % GRID or image_size // GRID < 8:
            raise ValueError(f"suite {self.name}: image size {image_size} must be a multiple of {self.patches} "
                             f"(CLIP patches per side) and of {GRID} with cells of at least 8 px")


def _specs() -> Dict[str, SuiteSpec]:
    from .coin_tasks import COIN_BASE_TASKS, COIN_MIX_WEIGHTS, COIN_SHAPED_TASKS

    return {
        "synthetic": SuiteSpec("synthetic", SUITE_TASKS, BASE_TASKS, MIX_WEIGHTS, DESCRIPTION, 64, GRID),
        "coin_shaped": SuiteSpec(
            "coin_shaped", COIN_SHAPED_TASKS, COIN_BASE_TASKS, COIN_MIX_WEIGHTS,
            "CoIN's eight tasks in CoIN's order with CoIN's instructions (ScienceQA, TextVQA, ImageNet, GQA, "
            "VizWiz, Grounding, VQAv2, OCR-VQA analogues) over one world of shapes and glyphs on a 4x4 board, "
            "shown as plain boards, photos, blurred images and book covers (llava_dymoe.synthetic.coin_tasks); "
            "the short-answer tasks share the instruction and question forms; image tokens are at least two "
            "thirds of every prompt with a 16x16-patch CLIP.", 96, 16,
            ("# This suite: python -m llava_dymoe.synthetic DATA_ROOT --suite coin_shaped [--seed N]",
             "# Needs a tiny CLIP with 16x16 patches of 96 px images (patch 6): 256 image tokens beside",
             "# 57-97 text tokens. Build one with  python -m llava_dymoe.tiny OUT --geometry coin_shaped",
             "# and a base model with  python -m llava_dymoe.synthetic.base OUT --mixture coin_shaped",
             "# model_max_length 512: LLaVA truncates after splicing in the 256 image features."), 512),
    }


def get_suite(name: str) -> SuiteSpec:
    specs = _specs()
    if name not in specs:
        raise KeyError(f"unknown synthetic suite {name!r}; known: {', '.join(specs)}")
    return specs[name]


def suite_names() -> Tuple[str, ...]:
    return tuple(_specs())


def find_task(name: str) -> TaskDef:
    """A task of any suite or base mixture, by name (names are unique across suites)."""
    for spec in _specs().values():
        for t in spec.tasks + spec.base_tasks:
            if t.name == name:
                return t
    raise KeyError(f"unknown synthetic task {name!r}")
