"""eval layer of llava_dymoe (see README, "Where things live").

The eval shim: ``python -m llava_dymoe.eval llava.eval.MODULE ...`` (``shim.py``, ``__main__.py``).
"""
