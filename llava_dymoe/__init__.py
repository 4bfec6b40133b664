"""llava-dymoe: LLaVA-DyMoE continual instruction tuning as a plugin for upstream LLaVA.

Importing this package never patches anything and never imports ``llava``,
``transformers`` or ``deepspeed``: the patches are applied by the entry points
(``python -m llava_dymoe.train``, ``python -m llava_dymoe.eval``) or explicitly through
``llava_dymoe.patches``.
"""
__version__ = "0.1.0"

SUPPORTED_LLAVA_TORCH = "1.2.2.post1"
SUPPORTED_TRANSFORMERS = "4.37.2"
