"""``score``: score a merged answers JSONL against a reference file with a registered scorer."""
from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scorer", required=True, help="scorer name: sqa_letter, vqa_soft, contains, exact, "
                                                        "grounding_iou")
    parser.add_argument("--answers", required=True, help="merged answers JSONL written by a llava.eval module")
    parser.add_argument("--references", required=True, help="references (JSONL/JSON list with question_id)")
    parser.add_argument("--reference-key", default="answer", help="field holding the reference (default answer)")
    parser.add_argument("--output", default=None, help="also write the full result (per question) as JSON here")


def run(args: argparse.Namespace) -> int:
    from llava_dymoe.eval.scorers import score_file

    result = score_file(args.scorer, args.answers, args.references, reference_key=args.reference_key)
    if args.output:
        with open(args.output, "w") as f:
            json.dump(result, f, indent=2)
    print(json.dumps({k: result[k] for k in ("scorer", "score", "n", "n_answered")}
                     | {"missing": len(result["missing"])}))
    return 0
