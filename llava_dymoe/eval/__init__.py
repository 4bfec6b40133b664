"""eval layer of llava_dymoe (see docs/layout.md).

The eval shim: ``python -m llava_dymoe.eval llava.eval.MODULE ...`` (``shim.py``, ``__main__.py``).
"""
