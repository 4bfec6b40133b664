"""Implementations of ``python -m llava_dymoe.cli`` commands, one module per command.

Each module defines ``add_arguments(parser)`` and ``run(args) -> int`` and keeps heavy
imports inside ``run`` (see :mod:`llava_dymoe.cli`).
"""
