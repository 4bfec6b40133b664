"""``make demo``: the main job on the embedded default (tiny LLaVA, synthetic suite, CPU).

``python -m llava_dymoe.demo [--output-dir demo_out] [--quick]``:

1. the base-model stage (``llava_dymoe.synthetic.base``: the tiny LLaVA fully trained on a base
   mixture over the image world; cached);
2. the synthetic continual suite (``llava_dymoe.synthetic``: five CoIN-like tasks; cached);
3. ``cli run`` with ``dymoe`` (the paper), ``incmoelora`` and ``dymoe_plus`` (= ``anchored_keys``, our opt-in variant
   beyond the paper, docs/beyond-the-paper.md), side by side (train each task, evaluate all tasks seen so far with
   the upstream eval modules, accuracy matrix, MFN/MAA/BWT, heatmap; resumable); each run's log is
   ``runs/<method>.log``;
4. ``cli report``: the comparison table (printed) and ``comparison.png``, under one output folder;
5. a verdict: MFN / BWT / MFT per method, one sentence on what they show and what they cannot, the
   heatmaps and the report.

Expected upstream warnings of the in-process base stage (the "weights not used" list of the vision
tower when the base is reloaded for its evaluation) are one line each on the console and whole in
``upstream_warnings.log``; unexpected ones are shown as they come.

``--quick`` is the reduced mode CI runs (fewer steps and questions, the first three tasks; same pipeline).
``--smoke`` keeps the foundation smoke run (upstream LoRA train + reload + answers).
Numbers from this demo are not the paper's claim: see pilot-drift.md for what a tiny CPU model can
and cannot show.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

from llava_dymoe.eval.verdict import verdict
from llava_dymoe.integration.llava_args import UPSTREAM_TRAIN, llava_train_argv, run_python
from llava_dymoe.integration.upstream_warnings import collapse_expected
from llava_dymoe.smoke_data import write_smoke_dataset
from llava_dymoe.study.plan import TINY_DYMOE_ARGS, TINY_TRAIN_ARGS, Experiment, Profile
from llava_dymoe.tiny import build_tiny_llava


def generate_answers(ckpt: str, model_base: str, questions: str, image_folder: str,
                     max_new_tokens: int = 8):
    """Answer each question of a ``question_id/image/text`` JSONL with the checkpoint (greedy, CPU)."""
    import torch
    from PIL import Image
    from tqdm import tqdm
    from llava.constants import DEFAULT_IMAGE_TOKEN
    from llava.conversation import conv_templates
    from llava.mm_utils import get_model_name_from_path, process_images, tokenizer_image_token
    from llava.model.builder import load_pretrained_model

    tok, model, processor, _ = load_pretrained_model(ckpt, model_base, get_model_name_from_path(ckpt),
                                                     device="cpu", device_map="cpu")
    model = model.float().eval()
    rows = [json.loads(line) for line in open(questions)]
    answers = []
    for q in tqdm(rows, desc="answering", unit="q"):
        conv = conv_templates["vicuna_v1"].copy()
        conv.append_message(conv.roles[0], DEFAULT_IMAGE_TOKEN + "\n" + q["text"])
        conv.append_message(conv.roles[1], None)
        ids = tokenizer_image_token(conv.get_prompt(), tok, return_tensors="pt").unsqueeze(0)
        image = Image.open(os.path.join(image_folder, q["image"])).convert("RGB")
        pix = process_images([image], processor, model.config)
        with torch.inference_mode():
            out = model.generate(ids, images=pix, image_sizes=[image.size], do_sample=False,
                                 max_new_tokens=max_new_tokens, pad_token_id=tok.unk_token_id)
        answers.append({"question_id": q["question_id"],
                        "text": tok.decode(out[0], skip_special_tokens=True).strip()})
    return answers


def smoke_main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m llava_dymoe.demo --smoke", description="foundation smoke run")
    p.add_argument("--output-dir", default="demo_out")
    p.add_argument("--steps", type=int, default=int(os.environ.get("DYMOE_DEMO_STEPS", 80)))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    out = os.path.abspath(args.output_dir)
    os.makedirs(out, exist_ok=True)
    t0 = time.time()
    print("[1/4] building the tiny LLaVA (sentencepiece tokenizer, tiny Llama, tiny CLIP)")
    tiny = build_tiny_llava(os.path.join(out, "tiny"), seed=args.seed)
    print("[2/4] writing a small LLaVA-format dataset (PNG images + conversation JSON)")
    data = write_smoke_dataset(os.path.join(out, "data"), n_train=64, n_test=8, seed=args.seed)
    ckpt = os.path.join(out, "checkpoints", "llava-tiny-lora")
    print(f"[3/4] upstream llava.train.train.train() with LoRA, {args.steps} steps (log: {ckpt}.log)")
    os.makedirs(os.path.dirname(ckpt), exist_ok=True)
    argv = llava_train_argv(tiny.llm, tiny.clip, data.train_json, data.image_folder, ckpt,
                            max_steps=args.steps, overrides={"learning_rate": 3e-3,
                                                              "per_device_train_batch_size": 8})
    run_python(UPSTREAM_TRAIN, argv, log_path=ckpt + ".log")
    state = json.load(open(os.path.join(ckpt, "trainer_state.json")))
    losses = [h["loss"] for h in state["log_history"] if "loss" in h]
    print(f"      loss {losses[0]:.3f} -> {losses[-1]:.3f} over {len(losses)} logged steps")
    print("[4/4] reloading through llava.model.builder.load_pretrained_model and answering held-out questions")
    answers = generate_answers(ckpt, tiny.llm, data.questions, data.image_folder)
    refs = {r["question_id"]: r["answer"] for r in map(json.loads, open(data.references))}
    correct = 0
    print(f"\n{'question':<12} {'reference':<24} answer")
    for a in answers:
        ok = a["text"].strip().lower() == refs[a["question_id"]].lower()
        correct += ok
        print(f"{a['question_id']:<12} {refs[a['question_id']]:<24} {a['text']!r}{'  ok' if ok else ''}")
    with open(os.path.join(out, "answers.jsonl"), "w") as f:
        f.writelines(json.dumps(a) + "\n" for a in answers)
    print(f"\nexact match {correct}/{len(answers)}; wall time {time.time() - t0:.0f} s; outputs in {out}")
    print("Note: this is the foundation smoke run; `python -m llava_dymoe.demo` runs the continual demo.")
    return 0


#: Sizes of the full demo and of ``--quick`` (CI): base-model steps, steps per task, train samples and
#: test questions per task.  The per-task recipe is ``study.plan.TINY_TRAIN_ARGS``.  No oracle-routing
#: evaluation (the study's diagnostic; the demo does not report it): with it, and 30 test questions per
#: task, the demo took 12 min 45 s from scratch on the 2-core machine (2026-12-03), over its 10-minute goal.
FULL = Profile("demo", base_steps=1000, task_steps=120, n_train=600, n_test=20, seeds=(0,),
               train_args=TINY_TRAIN_ARGS, dymoe_args=TINY_DYMOE_ARGS, oracle_routing=False)
#: ``--quick`` trains the suite's first three tasks (five stages each took the CI test 6 min of its 15: 2 cores)
QUICK = Profile("quick", base_steps=30, task_steps=4, n_train=24, n_test=4, seeds=(0,), train_args=TINY_TRAIN_ARGS,
                dymoe_args=TINY_DYMOE_ARGS, oracle_routing=False, tasks=("choice", "read", "classify"))
METHODS = ("dymoe", "incmoelora", "dymoe_plus")
#: the full text of the upstream warnings of the in-process stages (the console shows one line per kind)
UPSTREAM_LOG = "upstream_warnings.log"


def continual_main(argv=None) -> int:
    from llava_dymoe.cli import main as cli
    from llava_dymoe.study.execute import make_jobs, prepare, run_jobs

    p = argparse.ArgumentParser(prog="python -m llava_dymoe.demo", description=__doc__.split("\n")[0])
    p.add_argument("--output-dir", default="demo_out")
    p.add_argument("--quick", action="store_true", default=os.environ.get("DYMOE_DEMO_QUICK") == "1",
                   help="reduced mode (CI): fewer steps and questions, same pipeline")
    p.add_argument("--seed", type=int, default=0, help="training seed of the runs (base model and suite: seed 0)")
    p.add_argument("--smoke", action="store_true",  # main() takes it off and runs smoke_main (its own --help)
                   help="instead of the continual demo, the foundation smoke run (upstream LoRA training, reload, "
                        "answers); see `python -m llava_dymoe.demo --smoke --help`")
    p.add_argument("--jobs", type=int, default=len(METHODS),
                   help=f"runs at a time, one thread each (default {len(METHODS)}: all side by side)")
    args = p.parse_args(argv)
    profile = dataclasses.replace(QUICK if args.quick else FULL, seeds=(args.seed,))
    out = os.path.abspath(args.output_dir)
    t0 = time.time()
    plan = [Experiment("demo", m, m) for m in METHODS]
    print(f"[1/3] base model ({profile.base_steps} steps, cached) and the synthetic suite "
          "(eval_suites/synthetic.yaml, the easy one: each prompt names its task; the harder coin_shaped suite is "
          "studied by make results-harder)", flush=True)
    with collapse_expected(os.path.join(out, UPSTREAM_LOG)):
        bases, suite = prepare(out, profile, plan, log=lambda m: print("  " + m, flush=True))
    print(f"[2/3] {', '.join(METHODS[:-1])} and {METHODS[-1]} (beyond the paper) on {len(suite.tasks)} tasks, {profile.task_steps} steps each, "
          f"{args.jobs} runs at a time (logs: {os.path.join(out, 'runs', '<method>.log')})", flush=True)
    jobs = make_jobs(out, profile, plan, bases, suite, folder=lambda e, s: os.path.join(out, "runs", e.method))
    try:
        run_jobs(jobs, args.jobs, stages_per_run=len(suite.tasks), desc="demo runs")
    except RuntimeError as e:
        print(str(e), file=sys.stderr)
        return 1
    print("[3/3] comparison report", flush=True)
    runs = [j.out_dir for j in jobs]
    rc = cli(["report", *runs, "--output-dir", out])
    print(f"\ndemo finished in {time.time() - t0:.0f} s; per-run reports: {', '.join(runs)}", flush=True)
    print("\n" + demo_verdict(out, profile, args.seed, [(j.experiment.method, j.out_dir) for j in jobs],
                              n_tasks=len(suite.tasks)))
    return rc


def demo_verdict(out: str, profile: Profile, seed: int, runs, n_tasks: int) -> str:
    """The demo's ending (``eval.verdict``): ``runs`` is ``[(method, run folder)]`` in display order."""
    metrics = {}
    for method, folder in runs:
        path = os.path.join(folder, "metrics.json")
        if os.path.isfile(path):
            with open(path) as f:
                metrics[method] = json.load(f)
        else:
            metrics[method] = {}
    caveat = (f"a tiny synthetic LLaVA trained on CPU, {n_tasks} toy tasks of {profile.n_test} test questions, "
              f"one seed ({seed}): not CoIN numbers nor the paper's claim, and gaps of a few points can be "
              "seed noise (the multi-seed study is `make results`, docs/results.md).")
    if profile.name == QUICK.name:
        caveat = (f"--quick trains {profile.task_steps} steps per task, so these numbers only show that the "
                  "pipeline runs; and in any case " + caveat)
    return verdict(metrics, caveat, heatmaps={m: os.path.join(f, "matrix.png") for m, f in runs},
                   report=f"{os.path.join(out, 'report.md')} (plot: {os.path.join(out, 'comparison.png')})")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--smoke" in argv:
        argv.remove("--smoke")
        return smoke_main(argv)
    return continual_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
