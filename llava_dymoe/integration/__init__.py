"""integration layer of llava_dymoe (see docs/layout.md)."""
