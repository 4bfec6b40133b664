"""``python -m llava_dymoe.synthetic OUT_DIR [--seed N] [--n-train N] [--n-test N] ...``.

Writes the synthetic continual suite (LLaVA-format data, metadata, ``suite.yaml``) under
OUT_DIR and prints its manifest; see :mod:`llava_dymoe.synthetic`.
"""
from __future__ import annotations

import argparse
import json

from .generate import generate_suite
from .tasks import SUITE_TASKS


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m llava_dymoe.synthetic",
                                description="Write the synthetic continual suite (CoIN-like, LLaVA format).")
    p.add_argument("out_dir", help="data root to write (suite.yaml paths are relative to it)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-train", type=int, default=1000, help="training samples per task (default 1000)")
    p.add_argument("--n-test", type=int, default=100, help="test questions per task (default 100)")
    p.add_argument("--image-size", type=int, default=64,
                   help="image side in pixels, a multiple of 4 with cells >= 8 px (default 64; the base model's "
                        "CLIP uses it with patch = image_size / 4)")
    p.add_argument("--tasks", default="", help="comma-separated subset of: " + ",".join(t.name for t in SUITE_TASKS))
    p.add_argument("--overwrite", action="store_true", help="rewrite even if OUT_DIR's manifest matches")
    a = p.parse_args(argv)
    suite = generate_suite(a.out_dir, seed=a.seed, n_train=a.n_train, n_test=a.n_test, image_size=a.image_size,
                           tasks=[t for t in a.tasks.split(",") if t], overwrite=a.overwrite)
    print(json.dumps({"root": suite.root, "suite": suite.suite_yaml, **suite.manifest}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
