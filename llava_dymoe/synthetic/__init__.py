"""The synthetic continual suite and the base-model stage for the embedded tiny LLaVA.

* :mod:`.world`: the shared image world (coloured shapes and glyphs on a 4x4 grid, one cell =
  one CLIP patch) and its deterministic PIL renderer;
* :mod:`.tasks`: five CoIN-like continual tasks (:data:`~.tasks.SUITE_TASKS`) and the base
  mixture (:data:`~.tasks.BASE_TASKS`), each sample with structured metadata;
* :mod:`.coin_world`, :mod:`.coin_tasks`: the CoIN-shaped suite (CoIN's eight tasks and instructions over
  four image domains of the same world) and its base mixture; :mod:`.suites` names the suites and the
  CLIP geometry each needs; :mod:`.properties` measures a written suite (image-token share, a text-only
  task classifier, shared question forms, conflicting answers);
* :mod:`.writer`, :mod:`.generate`: LLaVA-format files and the suite YAML
  (``python -m llava_dymoe.synthetic OUT_DIR [--suite coin_shaped]``);
* :mod:`.base`: the tiny LLaVA fully trained on the base mixture and exported as a Vicuna-like
  LLM dir plus ``mm_projector.bin`` (``python -m llava_dymoe.synthetic.base OUT_DIR``);
* :mod:`.evaluate`, :mod:`.learnability`: in-process answering/scoring and the zero-shot vs
  fine-tuned check (``python -m llava_dymoe.synthetic.learnability BASE SUITE --task vqa``).

Importing this package imports neither torch nor llava; the modules that need them import
them inside their functions.
"""
from .generate import SyntheticSuite, generate_suite
from .tasks import BASE_TASKS, SUITE_TASKS

__all__ = ["SyntheticSuite", "generate_suite", "SUITE_TASKS", "BASE_TASKS"]
