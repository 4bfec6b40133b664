"""``convert-ucit``: UCIT's test files -> upstream question files + reference JSONL.

    python -m llava_dymoe.cli convert-ucit --suite eval_suites/ucit.yaml --data-root /data/ucit

For each task of the suite it reads ``annotation_file`` (``test_3000.json``) and, for the two
caption tasks, ``coco_captions`` (``val_coco_type_3000.json``), and writes ``question_file`` and
``reference_file`` (:mod:`llava_dymoe.eval.convert_ucit`).  One JSON line per task is printed
(``n``: questions; caption tasks also ``n_reference_captions``; ``warning`` when the count is not
the published 3000).
"""
from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--suite", required=True, help="suite YAML (eval_suites/ucit.yaml)")
    parser.add_argument("--data-root", required=True, help="folder the suite's relative paths start from")
    parser.add_argument("--tasks", help="comma-separated task names (default: all)")


def run(args: argparse.Namespace) -> int:
    from llava_dymoe.eval import convert_ucit
    from llava_dymoe.eval.suite import load_suite

    suite = load_suite(args.suite, data_root=args.data_root)
    tasks = [t.strip() for t in args.tasks.split(",")] if args.tasks else None
    for result in convert_ucit.convert_suite(suite, tasks):
        print(json.dumps(result))
    return 0
