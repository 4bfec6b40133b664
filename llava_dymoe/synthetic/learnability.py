"""Is a continual task learnable from the base model on a CPU?  Zero-shot vs after a short fine-tune.

    python -m llava_dymoe.synthetic.learnability BASE_DIR SUITE_DIR --task vqa --task read --steps 300
    python -m llava_dymoe.synthetic.learnability BASE_DIR SUITE_DIR --task choice --steps 150 --method incmoelora

For each task: score the base model zero-shot on the task's test questions, fine-tune it on the
task starting from the exported base (``--model_name_or_path BASE/llm --pretrain_mm_mlp_adapter
BASE/mm_projector.bin``, exactly what a continual run starts from), score again, and report the
wall time of the fine-tune.  Also prints the majority-answer baseline of the test set.

The fine-tune is plain upstream ``llava.train.train.train()`` (LoRA r=8 by default, or ``--full``),
or with ``--method M`` the first stage of a continual run of method ``M`` (``llava_dymoe.train
--dymoe_method M --dymoe_task_id 1``, projector kept, as the study runs it).  The two can disagree:
the choice task with one object's attribute and fixed options reached 47.5 % after 150 plain LoRA
steps but stayed at 30 % (every answer "B") after 150 IncMoELoRA steps, so check a suite change
with the recipe the study uses.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from collections import Counter
from typing import Dict, Optional

from .evaluate import EvalTask, evaluate
from .generate import MANIFEST
from .suites import DEFAULT_SUITE, find_task, get_suite
from .writer import IMAGE_ROOT, TaskFiles


def majority_baseline(reference_file: str) -> float:
    """Percent of test questions whose reference is the most frequent one."""
    refs = [json.dumps(json.loads(line)["answer"]) for line in open(reference_file) if line.strip()]
    return 100.0 * Counter(refs).most_common(1)[0][1] / len(refs)


def suite_name(suite_root: str) -> str:
    """The name of the suite written under ``suite_root`` (its manifest's ``name``; the default suite's has none)."""
    path = os.path.join(suite_root, MANIFEST)
    if not os.path.isfile(path):
        return DEFAULT_SUITE
    with open(path) as f:
        return json.load(f).get("name", DEFAULT_SUITE)


def method_problem(method: Optional[str], full: bool) -> Optional[str]:
    """Why ``method`` (with ``full``) cannot be checked, or None."""
    if method is None:
        return None
    from llava_dymoe.methods import METHODS

    if method not in METHODS.names():
        return f"--method {method!r} is not a registered method; known: {', '.join(METHODS.names())}"
    if full:
        return "--full and --method exclude each other (a method trains its experts; the LLM stays frozen)"
    return None


def check_task(base_dir: str, suite_root: str, task: str, out_dir: str, steps: int = 300, batch_size: int = 8,
               learning_rate: float = 2e-3, full: bool = False, limit: Optional[int] = None,
               threads: int = 1, method: Optional[str] = None) -> Dict[str, float]:
    """Zero-shot score, score after ``steps`` of fine-tuning, and its wall time, for one task.

    ``method``: train as stage 1 of a continual run of that registered method instead of plain LoRA."""
    from llava_dymoe.integration.llava_args import DYMOE_TRAIN_MODULE, UPSTREAM_TRAIN, llava_train_argv, run_python

    problem = method_problem(method, full)
    if problem:
        raise ValueError(problem)

    base_dir, suite_root = os.path.abspath(base_dir), os.path.abspath(suite_root)
    spec, files = find_task(task), TaskFiles.for_task(task)
    training = get_suite(suite_name(suite_root)).training  # the suite's own overrides (model_max_length)
    eval_task = EvalTask(task, os.path.join(suite_root, files.question_file),
                         os.path.join(suite_root, files.reference_file), spec.scorer, spec.max_new_tokens)
    images = os.path.join(suite_root, IMAGE_ROOT)
    zero = evaluate(os.path.join(base_dir, "llava-base"), None, [eval_task], images,
                    answers_dir=os.path.join(out_dir, "zero_shot"), limit=limit)[task]

    mode = method or ("full" if full else "lora")
    ckpt = os.path.join(out_dir, f"llava-{task}-{mode}")
    extra = ["--dymoe_method", method, "--dymoe_task_id", "1", "--dymoe_train_projector", "False"] if method else []
    argv = llava_train_argv(os.path.join(base_dir, "llm"), os.path.join(base_dir, "clip"),
                            os.path.join(suite_root, files.train_json), images, ckpt,
                            lora=not full and method is None, extra=extra,
                            max_steps=steps, overrides={
                                "pretrain_mm_mlp_adapter": os.path.join(base_dir, "mm_projector.bin"),
                                "learning_rate": learning_rate, "per_device_train_batch_size": batch_size,
                                "gradient_checkpointing": False, "logging_steps": max(1, steps // 20),
                                **training})
    t0 = time.time()
    run_python(DYMOE_TRAIN_MODULE if method else UPSTREAM_TRAIN, argv, module=method is not None,
               log_path=ckpt + ".log", env={"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)})
    train_s = time.time() - t0
    if full:  # upstream saves no tokenizer for a full fine-tune; load_pretrained_model needs one
        import shutil
        for name in ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"):
            shutil.copy(os.path.join(base_dir, "llm", name), os.path.join(ckpt, name))
    after = evaluate(ckpt, None if full else os.path.join(base_dir, "llm"), [eval_task], images,
                     answers_dir=os.path.join(out_dir, "trained"), limit=limit)[task]
    return {"task": task, "scorer": spec.scorer, "majority": round(majority_baseline(eval_task.reference_file), 1),
            "zero_shot": round(zero["score"], 1), "trained": round(after["score"], 1), "n": after["n"],
            "steps": steps, "batch_size": batch_size, "mode": mode,
            "train_wall_s": round(train_s, 1), "examples": after["examples"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m llava_dymoe.synthetic.learnability", description=__doc__.split("\n")[0])
    p.add_argument("base_dir", help="a directory written by python -m llava_dymoe.synthetic.base")
    p.add_argument("suite_root", help="a directory written by python -m llava_dymoe.synthetic")
    p.add_argument("--task", action="append", required=True, help="a suite task (repeatable)")
    p.add_argument("--out-dir", default=None, help="default: SUITE_ROOT/../learnability")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--learning-rate", type=float, default=2e-3)
    p.add_argument("--full", action="store_true", help="full fine-tune instead of LoRA")
    p.add_argument("--method", default=None,
                   help="train as stage 1 of a continual run of this method (e.g. incmoelora) instead of plain LoRA")
    p.add_argument("--limit", type=int, default=None, help="score only the first N test questions")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    problem = method_problem(a.method, a.full)
    if problem:
        p.error(problem)
    if not os.path.isfile(os.path.join(a.suite_root, MANIFEST)):
        p.error(f"{a.suite_root} holds no generated suite ({MANIFEST} missing)")
    out = a.out_dir or os.path.join(os.path.dirname(os.path.abspath(a.suite_root)), "learnability")
    rows = [check_task(a.base_dir, a.suite_root, t, os.path.join(out, t), a.steps, a.batch_size, a.learning_rate,
                       a.full, a.limit, a.threads, a.method) for t in a.task]
    print(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
