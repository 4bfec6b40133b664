"""``make results``: the experiment grid (``plan``), its execution (``execute``) and the results doc
(``aggregate``).  Entry: ``python -m llava_dymoe.study``."""
