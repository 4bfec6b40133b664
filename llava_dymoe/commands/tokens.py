"""``tokens``: new/old/ambiguous token fractions of a new task's data against a checkpoint's experts."""
from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt", required=True, help="finished DyMoE task checkpoint (its banks are the old group)")
    parser.add_argument("--data", required=True, help="the new task's LLaVA training JSON")
    parser.add_argument("--image-folder", required=True, help="folder the training images are relative to")
    parser.add_argument("--model-base", required=True, help="base LLM the sequence was trained from")
    parser.add_argument("--output-dir", required=True, help="writes tokens.json, tokens.md and d_rel_hist.png")
    parser.add_argument("--tau", type=float, default=0.2, help="D_rel threshold of the token types (default 0.2)")
    parser.add_argument("--seed", type=int, default=0,
                        help="training --seed of the next task: the fresh bank is initialised as it would be")
    parser.add_argument("--max-samples", type=int, default=None, help="use only the first N samples")


def run(args: argparse.Namespace) -> int:
    from llava_dymoe.diagnostics.tokens import run_tokens

    report = run_tokens(args.ckpt, args.data, args.image_folder, args.model_base, args.output_dir, tau=args.tau,
                        seed=args.seed, max_samples=args.max_samples)
    print(json.dumps({"output_dir": args.output_dir, **report["mean"]}))
    return 0
