"""Seconds per training step on each synthetic suite: the CoIN-shaped sequences against today's.

    python benchmarks/bench_suite_step.py [--steps 60 --rounds 2 --batch-size 8 --threads 1]

For each suite (``synthetic``: 16 image tokens; ``coin_shaped``: 256) a random tiny LLaVA of the
study's width (d = 128, :func:`llava_dymoe.synthetic.base.default_sizes` with the suite's CLIP
geometry) is fine-tuned with upstream ``train()`` (LoRA r 8, the suite's ``model_max_length``) on
the union of the suite's training sets, ``--steps`` steps of batch ``--batch-size``.  The suites
alternate in ``--rounds`` rounds so both see the same machine load; the figure per run is the
Trainer's ``train_runtime`` / steps (process start and model loading excluded).  Prints one JSON
object: seconds per step per run, their medians and the ratio coin_shaped / synthetic.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile

SUITES = ("synthetic", "coin_shaped")


def prepare(root: str, suite: str, seed: int = 0):
    """A tiny LLaVA of the suite's geometry and a mixed training file of its tasks: (tiny, data, images)."""
    from llava_dymoe.synthetic.base import default_sizes
    from llava_dymoe.synthetic.generate import generate_suite
    from llava_dymoe.synthetic.suites import get_suite
    from llava_dymoe.tiny import build_tiny_llava

    spec = get_suite(suite)
    tiny = build_tiny_llava(os.path.join(root, suite, "tiny"), seed=seed,
                            sizes=default_sizes(spec.image_size, spec.patches))
    data = generate_suite(os.path.join(root, suite, "data"), seed=seed, n_train=120, n_test=1, suite=suite)
    rows = []
    for files in data.tasks.values():
        with open(data.path(files.train_json)) as f:
            rows += json.load(f)
    random.Random(seed).shuffle(rows)
    mixed = os.path.join(root, suite, "mixed.json")
    with open(mixed, "w") as f:
        json.dump(rows, f)
    return tiny, mixed, data.image_folder, spec.training


def seconds_per_step(root: str, suite: str, prepared, steps: int, batch_size: int, threads: int, run: int) -> float:
    from llava_dymoe.integration.llava_args import UPSTREAM_TRAIN, llava_train_argv, run_python

    tiny, mixed, images, training = prepared
    out = os.path.join(root, suite, f"run{run}")
    argv = llava_train_argv(tiny.llm, tiny.clip, mixed, images, out, lora=True, max_steps=steps, overrides={
        "learning_rate": 2e-3, "per_device_train_batch_size": batch_size, "gradient_checkpointing": False,
        "logging_steps": steps, **training})
    run_python(UPSTREAM_TRAIN, argv, log_path=out + ".log",
               env={"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)})
    with open(os.path.join(out, "trainer_state.json")) as f:
        history = json.load(f)["log_history"]
    runtime = next(h["train_runtime"] for h in history if "train_runtime" in h)
    return runtime / steps


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as root:
        prepared = {s: prepare(root, s) for s in SUITES}
        per_run = {s: [] for s in SUITES}
        for r in range(a.rounds):
            for s in SUITES:
                per_run[s].append(round(seconds_per_step(root, s, prepared[s], a.steps, a.batch_size, a.threads, r), 3))
                print(f"round {r + 1}: {s} {per_run[s][-1]} s/step", file=sys.stderr, flush=True)
    median = {s: round(statistics.median(v), 3) for s, v in per_run.items()}
    print(json.dumps({"steps": a.steps, "batch_size": a.batch_size, "threads": a.threads, "s_per_step": per_run,
                      "median": median, "ratio": round(median["coin_shaped"] / median["synthetic"], 2)}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
