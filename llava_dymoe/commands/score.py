"""``score``: score a merged answers JSONL against a reference file with a registered scorer.

With ``--coin-repo PATH`` the same answers are also scored by the user's checkout of CoIN's
own evaluation script (:mod:`llava_dymoe.eval.coin_repo`); its printed accuracy is recorded
beside ours, and a disagreement is printed loudly to stderr and exits with status 1.
"""
from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scorer", required=True, help="scorer name: the coin profile (coin_sqa, coin_textvqa, "
                        "coin_imagenet, coin_gqa, coin_vizwiz, coin_grounding, coin_vqav2, coin_ocrvqa) or a "
                        "clean one (sqa_letter, vqa_soft, contains, exact, grounding_iou)")
    parser.add_argument("--answers", required=True, help="merged answers JSONL written by a llava.eval module")
    parser.add_argument("--references", required=True, help="references (JSONL/JSON list with question_id)")
    parser.add_argument("--reference-key", default="answer", help="field holding the reference (default answer)")
    parser.add_argument("--output", default=None, help="also write the full result (per question) as JSON here")
    parser.add_argument("--coin-repo", metavar="PATH",
                        help="root of a zackschen/CoIN checkout: also score the answers with CoIN's own eval script "
                             "(subprocess) and compare")
    parser.add_argument("--coin-task", help="CoIN task for --coin-repo (default: from a coin_* --scorer): ScienceQA, "
                                            "TextVQA, ImageNet, GQA, VizWiz, Grounding, VQAv2, OCR-VQA")
    parser.add_argument("--coin-annotation", metavar="PATH",
                        help="the file CoIN's script reads (its test/val JSON; TextVQA: TextVQA_0.5.1_val.json; "
                             "ScienceQA: the folder with problems.json and pid_splits.json; GQA: unused)")
    parser.add_argument("--coin-python", help="Python interpreter for CoIN's script (default: this one)")
    parser.add_argument("--coin-cwd", help="working directory for CoIN's script (default: --coin-repo; CoIN's "
                                           "GQA script reads ./cl_dataset/GQA/ from it)")


def run(args: argparse.Namespace) -> int:
    from llava_dymoe.eval.scorers import score_file

    from llava_dymoe.result_checks import check_answer_coverage

    result = score_file(args.scorer, args.answers, args.references, reference_key=args.reference_key)
    warning = check_answer_coverage(result, args.answers, args.references)  # refuses when no id matches
    if warning:
        print(warning, file=sys.stderr)
    summary = {k: result[k] for k in ("scorer", "score", "n", "n_answered")} | {"missing": len(result["missing"])}
    if "metrics" in result:  # caption scorers: BLEU-1..4, METEOR, ROUGE-L, CIDEr and their Average
        summary["metrics"] = result["metrics"]
    status = 0
    if args.coin_repo:
        from llava_dymoe.eval import coin_repo

        task = args.coin_task or coin_repo.TASK_OF_SCORER.get(args.scorer)
        if task is None:
            raise ValueError(f"--coin-repo: say which CoIN task {args.scorer!r} scores with --coin-task "
                             f"({', '.join(coin_repo.TASKS)})")
        theirs = coin_repo.run_coin_script(args.coin_repo, task, args.answers, args.coin_annotation,
                                           python=args.coin_python, cwd=args.coin_cwd)
        check = coin_repo.compare(result["score"], theirs["accuracy"])
        result["coin_repo"] = {**theirs, **check}
        summary["coin_repo"] = {"task": task, "accuracy": theirs["accuracy"], "agree": check["agree"],
                                "difference": round(check["difference"], 6)}
        if not check["agree"]:
            print(coin_repo.disagreement_banner(task, args.scorer, check), file=sys.stderr)
            status = 1
    if args.output:
        with open(args.output, "w") as f:
            json.dump(result, f, indent=2)
    print(json.dumps(summary))
    return status
