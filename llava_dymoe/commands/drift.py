"""``drift``: routing drift of old-task inputs from checkpoint A to later checkpoints, with output-level
measures (new-bank delta norms; answer-logit KL with ``--references``) (``diagnostics/drift.py``)."""
from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--before", required=True, help="finished DyMoE task checkpoint A (the old task's model)")
    parser.add_argument("--after", required=True, action="append",
                        help="later checkpoint B of the same sequence; repeat for a sequence B1, B2, ...")
    parser.add_argument("--questions", required=True, help="old-task question JSONL (question_id, image, text)")
    parser.add_argument("--image-folder", required=True, help="folder the question images are relative to")
    parser.add_argument("--model-base", required=True, help="base LLM the sequence was trained from")
    parser.add_argument("--output-dir", required=True, help="writes drift.json, drift.md, drift_heatmap.png, "
                                                            "delta_norm_heatmap.png (and drift_by_stage.png)")
    parser.add_argument("--references", default=None,
                        help="reference JSONL (question_id, answer): also report exact-match accuracy and, "
                             "teacher forced on the reference answers, KL(p_A || p_B) of the answer tokens")
    parser.add_argument("--max-questions", type=int, default=None, help="use only the first N questions")
    parser.add_argument("--max-new-tokens", type=int, default=16, help="greedy answer length for --references")


def run(args: argparse.Namespace) -> int:
    from llava_dymoe.diagnostics.drift import run_drift
    from llava_dymoe.result_checks import check_shared_banks

    check_shared_banks(args.before, args.after)

    report = run_drift(args.before, args.after, args.questions, args.image_folder, args.model_base,
                       args.output_dir, references=args.references, max_questions=args.max_questions,
                       max_new_tokens=args.max_new_tokens)
    print(json.dumps({"output_dir": args.output_dir, "accuracy_before": report["accuracy_before"],
                      "stages": [{k: s[k] for k in ("ckpt", "mean_drift", "mean_top1_changed", "mean_new_over_base",
                                                    "accuracy", "answer_logits")}
                                 for s in report["stages"]]}))
    return 0
