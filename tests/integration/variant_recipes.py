"""Which beyond-the-paper recipes the integration tests train through upstream train().

Between them every variant field is set (cascade, tag target, centroid warm start, distance gap; ``dymoe_seqbank``,
``dymoe_plus`` until 2026-12-07: fixed rows, keys fitted at the start and the end of the task, one bank per sequence);
every recipe's layer is trained bank by bank in process in tests/core/test_variants.py.  Today's ``dymoe_plus``
(``key_selector``) runs all its stages through the runner in the demo test (tests/stack/test_demo.py).
"""
TRAINED_VARIANTS = ("dymoe_cascade_spetag", "dymoe_cascade_warm_spetag_distance", "dymoe_seqbank")
