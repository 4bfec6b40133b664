"""``run``: train a suite's tasks in order, evaluate every task seen so far after each, report.

    python -m llava_dymoe.cli run --suite eval_suites/coin.yaml --data-root $DATA --method dymoe \\
        --output-dir runs/coin_dymoe --base lmsys/vicuna-7b-v1.5 \\
        --vision-tower openai/clip-vit-large-patch14-336 --pretrain-mm-mlp-adapter mm_projector.bin \\
        --launcher deepspeed --deepspeed scripts/zero2.json --num-gpus 8 \\
        --train-arg bf16=True --train-arg per_device_train_batch_size=16

Rerunning the same command resumes (finished stages are verified and skipped).  The work is
done by :func:`llava_dymoe.protocol.runner.run_sequence`.
"""
from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--suite", required=True, help="suite YAML (task order, data files, generator, scorer)")
    parser.add_argument("--data-root", required=True, help="folder the suite's relative paths start from")
    from llava_dymoe.trainer.arguments import method_help

    parser.add_argument("--method", required=True, help=method_help(training_flag=False))
    parser.add_argument("--output-dir", required=True, help="run folder (new, empty, or this run's, to resume)")
    parser.add_argument("--base", help="base LLM (LLaVA --model_name_or_path; also --model-base at eval)")
    parser.add_argument("--vision-tower", help="CLIP vision tower (LLaVA --vision_tower)")
    parser.add_argument("--host", default="llava", help="llava (upstream LLaVA, default), hf-llava or qwen2_5_vl "
                        "(docs/hosts.md: --base is then the HF model folder; run in .venv-hf)")
    parser.add_argument("--pretrain-mm-mlp-adapter", help="stage-1 projector (mm_projector.bin) for task 1")
    parser.add_argument("--launcher", default="python", choices=("python", "deepspeed"),
                        help="how each task is trained (default: python, one process)")
    parser.add_argument("--deepspeed", help="DeepSpeed config, e.g. scripts/zero2.json (required by --launcher "
                                            "deepspeed; with --launcher python: a one-process DeepSpeed world)")
    parser.add_argument("--num-gpus", type=int, default=1, help="processes for --launcher deepspeed (default 1)")
    parser.add_argument("--train-arg", action="append", metavar="KEY=VALUE", default=[],
                        help="LLaVA training argument, e.g. max_steps=3 (repeatable; KEY= removes a default)")
    parser.add_argument("--dymoe-arg", action="append", metavar="KEY=VALUE", default=[],
                        help="DyMoE flag --dymoe_KEY, e.g. experts_per_task=2 (repeatable)")
    parser.add_argument("--task-order", metavar="ORDER",
                        help="train the suite's tasks in another order without editing its YAML: NAME,NAME,... (a "
                             "subset runs only those tasks) or random:SEED (every task, in the order "
                             "random.Random(SEED).sample draws); part of the run's identity")
    parser.add_argument("--stages", type=int, help="run only the first N stages (rerun with more to continue)")
    parser.add_argument("--eval-max-new-tokens", type=int,
                        help="override the suite's max_new_tokens (generators that accept it)")
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS of the subprocesses (default: 1 on CPU "
                                                    "unless OMP_NUM_THREADS is set; inherited with CUDA)")
    parser.add_argument("--skip-data-check", action="store_true",
                        help="do not check the stages' data (JSON, fields, images, <image> tokens) before training")
    parser.add_argument("--no-plot", action="store_true", help="skip matrix.png (no matplotlib needed)")
    parser.add_argument("--coin-repo", help="a checkout of CoIN: after the run, score every cell whose task uses a "
                                            "coin_* scorer with CoIN's own eval script too (coin_repo_check.json); "
                                            "exit 1 on any disagreement")
    parser.add_argument("--coin-python", help="Python interpreter for CoIN's scripts (default: this one)")
    parser.add_argument("--coin-cwd", help="working directory for CoIN's scripts (default: --coin-repo)")
    parser.add_argument("--oracle-routing", action="store_true",
                        help="after each stage t, also evaluate every task i < t with stage t's checkpoint "
                             "restricted to the banks of tasks 1..i (DYMOE_EVAL_MAX_TASKS=i): "
                             "matrix_restricted.csv, oracle_routing.json and a report.md section. Equals R[i, i] "
                             "exactly only with the projector frozen (--dymoe-arg train_projector=False)")


def run(args: argparse.Namespace) -> int:
    from llava_dymoe.eval.report import matrix_markdown
    from llava_dymoe.protocol.launch import StageFailed
    from llava_dymoe.protocol.options import RunOptions, parse_key_values
    from llava_dymoe.protocol.runner import run_sequence

    opts = RunOptions(
        suite=args.suite, data_root=args.data_root, method=args.method, output_dir=args.output_dir,
        base=args.base, vision_tower=args.vision_tower, pretrain_mm_mlp_adapter=args.pretrain_mm_mlp_adapter,
        launcher=args.launcher, deepspeed=args.deepspeed, num_gpus=args.num_gpus,
        train_args=parse_key_values(args.train_arg, "--train-arg"),
        dymoe_args=parse_key_values(args.dymoe_arg, "--dymoe-arg", strip_prefix="dymoe_"),
        stages=args.stages, eval_max_new_tokens=args.eval_max_new_tokens, threads=args.threads,
        plot=not args.no_plot, oracle_routing=args.oracle_routing, skip_data_check=args.skip_data_check,
        host=args.host, task_order=args.task_order)
    try:
        result = run_sequence(opts)
    except StageFailed as e:
        print(f"error: {e}\nRerun the same command to resume after fixing the cause.", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"interrupted; rerun the same command to resume {args.output_dir}", file=sys.stderr)
        return 130
    print(matrix_markdown(result.matrix))
    if result.restricted is not None:
        print("\nrouting restricted to each task's banks (--oracle-routing; diagonal = all banks):")
        print(matrix_markdown(result.restricted))
    print(json.dumps({k: result.summary[k] for k in ("mfn", "maa", "bwt", "forgetting", "mft")}))
    return _coin_cross_check(args, result) if args.coin_repo else 0


def _coin_cross_check(args: argparse.Namespace, result) -> int:
    """``--coin-repo``: every coin_* cell scored again by the user's CoIN checkout; 1 on a disagreement."""
    import os

    from llava_dymoe.eval import coin_repo
    from llava_dymoe.eval.suite import load_suite
    from llava_dymoe.protocol.layout import ANSWERS, RunLayout
    from llava_dymoe.protocol.task_order import apply_task_order

    layout = RunLayout(args.output_dir, args.method)
    cells = coin_repo.cross_check_run(
        args.coin_repo,
        apply_task_order(load_suite(args.suite, data_root=args.data_root), args.task_order),
        result.records,
        lambda rec, task: os.path.join(layout.eval_dir(rec["stage"], rec["task"], task), ANSWERS),
        python=args.coin_python, cwd=args.coin_cwd)
    with open(os.path.join(args.output_dir, "coin_repo_check.json"), "w") as f:
        json.dump(cells, f, indent=2)
    bad = [c for c in cells if c.get("agree") is False]
    failed = [c for c in cells if "error" in c]
    for c in bad:
        print(coin_repo.disagreement_banner(f"{c['task']} (stage {c['stage']})", "coin profile", c), file=sys.stderr)
    for c in failed:
        print(f"warning: CoIN's script failed on {c['stage']} / {c['task']}: {c['error']}", file=sys.stderr)
    print(f"--coin-repo: {len(cells) - len(bad) - len(failed)} of {len(cells)} cells agree with CoIN's scripts "
          f"({os.path.join(args.output_dir, 'coin_repo_check.json')})")
    return 1 if bad else 0
