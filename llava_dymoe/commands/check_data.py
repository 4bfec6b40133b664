"""``check-data``: the data pre-flight on its own (``llava_dymoe.integration.data_check``).

    python -m llava_dymoe.cli check-data --data_path train.json --image_folder images \\
        [--tokenizer BASE_LLM --model_max_length 2048]
    python -m llava_dymoe.cli check-data --suite eval_suites/coin.yaml --data-root $DATA
    python -m llava_dymoe.cli check-data --suite eval_suites/ucit.yaml --data-root $UCIT   # + UCIT's test,
        # caption files and one JSON line of sample counts per task (against the published ones)

Prints every problem grouped by kind (the first few of each) and exits 1 when there is an
error (``--strict``: also a warning), 0 when the data is fine.  Training (``llava_dymoe.train``,
``cli run``) runs the same checks itself before any model loads.
"""
from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data_path", "--data-path", dest="data_path",
                        help="LLaVA training JSON (a list of {id, image, conversations})")
    parser.add_argument("--image_folder", "--image-folder", dest="image_folder",
                        help="folder the samples' image paths are relative to")
    parser.add_argument("--question-file", help="also check an eval question file (images under --image_folder)")
    parser.add_argument("--question-format", default="jsonl", choices=("jsonl", "science_json"),
                        help="jsonl (model_vqa_loader, model_vqa) or science_json (model_vqa_science)")
    parser.add_argument("--suite", help="check every task of a suite YAML instead (train JSON and question file)")
    parser.add_argument("--data-root", help="folder the suite's relative paths start from (with --suite)")
    parser.add_argument("--tokenizer", help="base LLM (or tokenizer) path: also check prompt lengths")
    parser.add_argument("--model_max_length", "--model-max-length", dest="model_max_length", type=int,
                        help="token limit for the length check (LLaVA --model_max_length; needs --tokenizer)")
    parser.add_argument("--image-tokens", type=int, default=None,
                        help="tokens one image takes in the length check (default 576: CLIP ViT-L/14-336; "
                             "(image_size / patch_size)^2 of your vision tower)")
    parser.add_argument("--decode-images", action="store_true",
                        help="fully decode every image (finds truncated JPEG data too; slower than verify())")
    parser.add_argument("--max-examples", type=int, default=3, help="examples shown per kind of problem")
    parser.add_argument("--json", dest="json_path", help="also write the full report (every problem) as JSON here")
    parser.add_argument("--strict", action="store_true", help="exit 1 on warnings too (missing or duplicate ids)")


def run(args: argparse.Namespace) -> int:
    if bool(args.suite) == bool(args.data_path):
        raise ValueError("check-data needs either --data_path (with --image_folder) or --suite with --data-root")
    if args.model_max_length and not args.tokenizer:
        raise ValueError("--model_max_length needs --tokenizer (the base LLM) for the length check")
    lengths = dict(tokenizer=args.tokenizer, model_max_length=args.model_max_length, image_tokens=args.image_tokens)
    if args.suite:
        from llava_dymoe.eval.suite import load_suite
        from llava_dymoe.protocol.preflight import check_suite_data

        if not args.data_root:
            raise ValueError("--suite needs --data-root (the folder its relative paths start from)")
        suite = load_suite(args.suite, data_root=args.data_root)
        report = check_suite_data(suite, decode_images=args.decode_images, **lengths)
        if suite.name == "ucit":  # UCIT's test and caption files, counts against the published ones
            from llava_dymoe.eval.ucit_check import check_ucit_files, ucit_counts

            report.extend(check_ucit_files(suite))
            for row in ucit_counts(suite):
                print(json.dumps(row))
    else:
        from llava_dymoe.integration.data_check import check_question_file, check_training_data

        report = check_training_data(args.data_path, args.image_folder, decode_images=args.decode_images, **lengths)
        if args.question_file:
            report.extend(check_question_file(args.question_file, args.image_folder, args.question_format,
                                              decode_images=args.decode_images))
    if args.json_path:
        with open(args.json_path, "w") as f:
            json.dump(report.to_dict(), f, indent=1)
    print(report.format(max_examples=args.max_examples))
    return 0 if report.ok and not (args.strict and report.warnings) else 1
