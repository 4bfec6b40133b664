"""``metrics MATRIX``: print ``{mfn, maa, bwt, forgetting, mft, tasks, stages}`` as one JSON object."""
from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("matrix", help="matrix.csv (or matrix.json) of a run")
    parser.add_argument("--indent", type=int, default=None, help="pretty-print the JSON with this indent")
    parser.add_argument("--scale", choices=("percent", "fraction"), default=None,
                        help="what the cells are: percent (0-100) or fraction (0-1, multiplied by 100); needed when "
                             "every cell lies in [0, 1], which is refused otherwise")
    parser.add_argument("--max-score", type=float, default=None,
                        help="largest score a cell may hold (default 100); UCIT's caption tasks score the mean of "
                             "seven metrics x 100, CIDEr-D among them, which can exceed 100")


def run(args: argparse.Namespace) -> int:
    from llava_dymoe.eval.matrix import AccuracyMatrix
    from llava_dymoe.eval.metrics import summary

    import os

    from llava_dymoe.errors import ResultRangeError

    path = args.matrix
    if os.path.isdir(path):  # a run folder: its matrix
        inside = os.path.join(path, "matrix.csv")
        if not os.path.isfile(inside):
            raise ResultRangeError(f"{path} is a folder without a matrix.csv; pass a matrix.csv or matrix.json (a "
                                   "`cli run` output folder holds one once a stage has finished)")
        path = inside
    if path.endswith(".json"):
        matrix = AccuracyMatrix.from_json(path)
    else:
        matrix = AccuracyMatrix.from_csv(path)
    from llava_dymoe.result_checks import check_percent_scale, check_score_range

    if args.scale != "fraction":
        check_score_range(matrix, path, high=args.max_score)
    matrix = check_percent_scale(matrix, path, args.scale)
    try:
        result = summary(matrix)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    print(json.dumps(result, indent=args.indent))
    return 0
