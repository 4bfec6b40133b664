"""Routing-drift diagnostics (issue 6): ``drift`` between checkpoints and ``tokens`` of a new task's data.

Both run DyMoE checkpoints on CPU in fp32 with ``core.stats.RoutingStats`` attached; see ``drift.py``
and ``tokens.py`` for the definitions and the ``drift`` / ``tokens`` CLI commands for the interface.
"""
