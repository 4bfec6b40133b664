"""trainer layer of llava_dymoe (see docs/layout.md)."""
