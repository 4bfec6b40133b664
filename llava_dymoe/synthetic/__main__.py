"""``python -m llava_dymoe.synthetic OUT_DIR [--suite NAME] [--seed N] [--n-train N] [--n-test N] ...``.

Writes a synthetic continual suite (LLaVA-format data, metadata, ``suite.yaml``) under OUT_DIR
and prints its manifest; see :mod:`llava_dymoe.synthetic`.  ``--suite coin_shaped`` (CoIN's eight
tasks, :mod:`~llava_dymoe.synthetic.coin_tasks`) also prints its measured properties
(:mod:`~llava_dymoe.synthetic.properties`).
"""
from __future__ import annotations

import argparse
import json
import sys

from .generate import SUITE_NAME, generate_suite
from .suites import get_suite, suite_names


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m llava_dymoe.synthetic",
                                description="Write the synthetic continual suite (CoIN-like, LLaVA format).")
    p.add_argument("out_dir", help="data root to write (suite.yaml paths are relative to it)")
    p.add_argument("--suite", default=SUITE_NAME, choices=suite_names(),
                   help=f"which suite (default {SUITE_NAME}; coin_shaped: CoIN's eight tasks, 16x16-patch CLIP)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-train", type=int, default=1000, help="training samples per task (default 1000)")
    p.add_argument("--n-test", type=int, default=100, help="test questions per task (default 100)")
    p.add_argument("--image-size", type=int, default=None,
                   help="image side in pixels (default: the suite's, 64 for synthetic with patch = image_size / 4, "
                        "96 for coin_shaped with patch = image_size / 16)")
    p.add_argument("--tasks", default="", help="comma-separated subset of the suite's tasks (synthetic: "
                   + ",".join(t.name for t in get_suite(SUITE_NAME).tasks) + ")")
    p.add_argument("--overwrite", action="store_true", help="rewrite even if OUT_DIR's manifest matches")
    p.add_argument("--no-properties", action="store_true", help="coin_shaped: skip the properties table")
    a = p.parse_args(argv)
    try:
        suite = generate_suite(a.out_dir, seed=a.seed, n_train=a.n_train, n_test=a.n_test, image_size=a.image_size,
                               tasks=[t for t in a.tasks.split(",") if t], overwrite=a.overwrite, suite=a.suite)
    except ValueError as e:
        p.error(str(e))
    print(json.dumps({"root": suite.root, "suite": suite.suite_yaml, **suite.manifest}, indent=2))
    if a.suite != SUITE_NAME and not a.no_properties:
        from .properties import measure, table

        spec = get_suite(a.suite)
        props = measure(suite.root, suite.task_names, spec.patches ** 2)
        print(table(props))
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
