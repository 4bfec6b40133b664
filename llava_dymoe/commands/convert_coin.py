"""``convert-coin``: CoIN test JSON -> upstream question files + reference JSONL.

Either a whole suite::

    python -m llava_dymoe.cli convert-coin --suite eval_suites/coin.yaml --data-root /data/coin

(writes each task's ``question_file`` and ``reference_file`` from its ``annotation_file``),
or one file::

    python -m llava_dymoe.cli convert-coin --test-json Grounding/test.json \\
        --generator llava.eval.model_vqa --scorer grounding_iou \\
        --question-file q.jsonl --reference-file refs.jsonl
"""
from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("suite mode")
    g.add_argument("--suite", help="suite YAML (e.g. eval_suites/coin.yaml)")
    g.add_argument("--data-root", help="folder the suite's relative paths start from")
    g.add_argument("--tasks", help="comma-separated task names (default: all)")
    f = parser.add_argument_group("single-file mode")
    f.add_argument("--test-json", help="CoIN test/val JSON (list of question_id/image/text/answer)")
    f.add_argument("--generator", default="llava.eval.model_vqa_loader",
                   help="upstream eval module that will read the question file")
    f.add_argument("--scorer", default="exact", help="scorer name (grounding_iou stores boxes)")
    f.add_argument("--question-file", help="question file to write")
    f.add_argument("--reference-file", help="references JSONL to write")
    f.add_argument("--official-answers", help="official TextVQA/VQAv2 annotations with 10 answers per question")


def run(args: argparse.Namespace) -> int:
    from llava_dymoe.eval import convert
    from llava_dymoe.eval.suite import GENERATORS, load_suite

    if args.suite:
        if not args.data_root:
            raise ValueError("--suite needs --data-root (the folder the suite's paths are relative to)")
        suite = load_suite(args.suite, data_root=args.data_root)
        tasks = [t.strip() for t in args.tasks.split(",")] if args.tasks else None
        results = convert.convert_suite(suite, tasks)
    else:
        missing = [o for o, v in (("--test-json", args.test_json), ("--question-file", args.question_file),
                                  ("--reference-file", args.reference_file)) if not v]
        if missing:
            raise ValueError(f"give --suite/--data-root, or {', '.join(missing)} for single-file mode")
        from llava_dymoe.eval.scorers import GROUNDING_SCORERS, get

        get(args.scorer)  # KeyError listing the known scorers
        if args.generator not in GENERATORS:
            raise ValueError(f"--generator {args.generator!r} is not supported; use one of {', '.join(GENERATORS)}")
        results = [convert.convert_coin_file(
            args.test_json, args.question_file, args.reference_file,
            question_format=GENERATORS[args.generator], grounding=args.scorer in GROUNDING_SCORERS,
            official_answers=args.official_answers)]
    for r in results:
        print(json.dumps(r))
    return 0
