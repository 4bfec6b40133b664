"""``metrics MATRIX``: print ``{mfn, maa, bwt, forgetting, mft, tasks, stages}`` as one JSON object."""
from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("matrix", help="matrix.csv (or matrix.json) of a run")
    parser.add_argument("--indent", type=int, default=None, help="pretty-print the JSON with this indent")


def run(args: argparse.Namespace) -> int:
    from llava_dymoe.eval.matrix import AccuracyMatrix
    from llava_dymoe.eval.metrics import summary

    if args.matrix.endswith(".json"):
        matrix = AccuracyMatrix.from_json(args.matrix)
    else:
        matrix = AccuracyMatrix.from_csv(args.matrix)
    from llava_dymoe.result_checks import check_score_range

    check_score_range(matrix, args.matrix)
    try:
        result = summary(matrix)
    except ValueError as e:
        raise ValueError(f"{args.matrix}: {e}") from None
    print(json.dumps(result, indent=args.indent))
    return 0
