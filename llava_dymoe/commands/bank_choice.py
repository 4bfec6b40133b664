"""``bank-choice``: which cue (image or question text) sends each task's inputs to its own bank
(``diagnostics/bank_choice.py``)."""
from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from llava_dymoe.diagnostics.bank_choice import CONDITIONS

    parser.add_argument("--ckpt", required=True, help="finished DyMoE task checkpoint (e.g. the last task's)")
    parser.add_argument("--model-base", required=True, help="base LLM the sequence was trained from")
    parser.add_argument("--task", required=True, action="append", metavar="NAME=QUESTIONS",
                        help="a task and its question JSONL (question_id, image, text); repeat in training order "
                             "(the i-th owns bank t{i-1})")
    parser.add_argument("--image-folder", required=True, help="folder the question images are relative to")
    parser.add_argument("--condition", action="append", choices=CONDITIONS, default=None,
                        help="prompt condition(s) to run (default: all of " + ", ".join(CONDITIONS) + ")")
    parser.add_argument("--max-questions", type=int, default=None, help="use only the first N questions per task")
    parser.add_argument("--output-dir", default=None, help="also write bank_choice.json and bank_choice.md there")


def parse_tasks(values):
    tasks = []
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--task {value!r}: expected NAME=QUESTIONS (e.g. read=suite/read/questions.jsonl)")
        tasks.append((name, path))
    return tasks


def run(args: argparse.Namespace) -> int:
    from llava_dymoe.diagnostics.bank_choice import CONDITIONS, markdown, run_bank_choice

    report = run_bank_choice(args.ckpt, args.model_base, parse_tasks(args.task), args.image_folder,
                             conditions=args.condition or CONDITIONS, max_questions=args.max_questions,
                             output_dir=args.output_dir)
    print(markdown(report))
    print(json.dumps({c: {t: round(r["own"], 4) for t, r in rows.items()}
                      for c, rows in report["conditions"].items()}))
    return 0
