"""Aggregate a results plan's runs over seeds: tables (mean +- sample std), plots, ``docs/results.md``."""
from __future__ import annotations

import json
import math
import os
import platform
import time
from typing import Any, Dict, List, Optional, Sequence

from .numbers import fmt_ms, mean_std, paired_gap
from .plan import DEFAULT_SUITE, DEFAULT_WIDTH, Experiment, Profile, best_variant, orders_for, plan_suite

METRICS = ("mfn", "maa", "bwt", "mft")


def collect(root: str, plan: Sequence[Experiment], seeds: Sequence[int]) -> List[Dict[str, Any]]:
    """One row per experiment: per-seed metrics, their mean/std, and the mean final row per task."""
    from llava_dymoe.eval.matrix import AccuracyMatrix
    from llava_dymoe.eval.metrics import summary
    from llava_dymoe.eval.report import load_run

    from .execute import run_dir

    rows = []
    for exp in plan:
        per_seed, finals, learned = {}, {}, {}
        for seed in seeds:
            folder = run_dir(root, exp, seed)
            if not os.path.isfile(os.path.join(folder, "matrix.csv")):
                continue
            run = load_run(folder)
            matrix = run["matrix"]
            if len(matrix.stages) != len(matrix.tasks):  # unfinished run: not aggregated
                continue
            per_seed[seed] = {m: run["metrics"].get(m) for m in METRICS}
            restricted = os.path.join(folder, "matrix_restricted.csv")
            if os.path.isfile(restricted):
                rm = AccuracyMatrix.from_csv(restricted)
                if len(rm.stages) == len(rm.tasks):
                    per_seed[seed]["bwt_oracle"] = summary(rm)["bwt"]
            finals[seed] = {t: matrix.get(len(matrix.stages) - 1, t) for t in matrix.tasks}
            learned[seed] = {t: matrix.get(i, t) for i, t in enumerate(matrix.tasks)}
        stats = {m: mean_std([v[m] for v in per_seed.values()]) for m in METRICS}
        stats["bwt_oracle"] = mean_std([v["bwt_oracle"] for v in per_seed.values() if "bwt_oracle" in v])
        tasks = sorted({t for f in finals.values() for t in f}, key=lambda t: list(next(iter(finals.values()))).index(t)) \
            if finals else []
        final = {t: mean_std([f[t] for f in finals.values()]) for t in tasks}
        diagonal = {t: mean_std([d[t] for d in learned.values()]) for t in tasks}
        rows.append({"experiment": exp, "seeds": sorted(per_seed), "per_seed": per_seed, "stats": stats,
                     "final": final, "learned": diagonal})
    return rows


def group_table(rows: Sequence[Dict[str, Any]]) -> str:
    head = ("| configuration | method | seeds | MFN | MAA | BWT | MFT | BWT per seed | BWT, oracle routing |\n"
            "|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rows:
        e, st = r["experiment"], r["stats"]
        per = ", ".join(f"{r['per_seed'][s]['bwt']:.1f}" for s in r["seeds"]) or "–"
        extra = "".join(f" --dymoe_{k} {v}" for k, v in e.dymoe_args)
        lines.append(f"| {e.name} | `{e.method}{extra}` | {len(r['seeds'])} | {fmt_ms(*st['mfn'])} | "
                     f"{fmt_ms(*st['maa'])} | {fmt_ms(*st['bwt'])} | {fmt_ms(*st['mft'])} | {per} | "
                     f"{fmt_ms(*st['bwt_oracle'])} |")
    return head + "\n".join(lines) + "\n"


def per_task_table(rows: Sequence[Dict[str, Any]], key: str = "final",
                   first: Optional[Dict[str, float]] = None, first_name: str = "") -> str:
    """Per-task means ± std of ``row[key]`` ("final": last row of the matrix, "learned": its diagonal),
    optionally under a first row of plain values (``first``, named ``first_name``)."""
    tasks: List[str] = []
    for r in rows:
        tasks += [t for t in r[key] if t not in tasks]
    if not tasks:
        return ""
    head = "| configuration | " + " | ".join(tasks) + " |\n|---|" + "---|" * len(tasks) + "\n"
    lines = [f"| {first_name} | " + " | ".join(fmt_ms(first.get(t, float("nan")), float("nan")) for t in tasks)
             + " |"] if first else []
    lines += [f"| {r['experiment'].name} | " + " | ".join(fmt_ms(*r[key].get(t, (float("nan"),) * 2)) for t in tasks)
              + " |" for r in rows]
    return head + "\n".join(lines) + "\n"


def majority_rates(suite_root: str, tasks: Sequence[str]) -> Dict[str, float]:
    """Percent of each task's test questions whose reference is its most frequent one (what answering
    one constant scores under exact match), for the tasks whose references exist under ``suite_root``."""
    from llava_dymoe.synthetic.learnability import majority_baseline
    from llava_dymoe.synthetic.writer import TaskFiles

    out = {}
    for t in tasks:
        path = os.path.join(suite_root, TaskFiles.for_task(t).reference_file)
        if os.path.isfile(path):
            out[t] = majority_baseline(path)
    return out


def width_rows(rows_by_key: Dict[str, Dict[str, Any]], widths: Sequence[int]) -> List[Dict[str, Any]]:
    out = []
    for w in sorted(set(widths) | {DEFAULT_WIDTH}):
        suffix = "" if w == DEFAULT_WIDTH else f"_d{w}"
        inc, dy = f"incmoelora{suffix}", f"dymoe{suffix}"
        if inc not in rows_by_key or dy not in rows_by_key:
            continue
        out.append({"width": w, "incmoelora": rows_by_key[inc], "dymoe": rows_by_key[dy],
                    "gap_bwt": paired_gap(rows_by_key, inc, dy, "bwt"),
                    "gap_mfn": paired_gap(rows_by_key, inc, dy, "mfn"),
                    "gap_mft": paired_gap(rows_by_key, inc, dy, "mft")})
    return out


def plot_group(rows: Sequence[Dict[str, Any]], path: str, title: str) -> Optional[str]:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import numpy as np
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(min(18.0, 1.5 + 1.1 * len(rows) * len(METRICS) / 2), 3.6))
    x = np.arange(len(METRICS))
    width = 0.8 / max(1, len(rows))
    # one colour per method, hatched in a task order other than the suite's own: a method's bars in two orders match
    methods = list(dict.fromkeys(r["experiment"].method for r in rows))
    cmap = plt.get_cmap("tab10" if len(methods) <= 10 else "tab20")
    for k, r in enumerate(rows):
        means = [r["stats"][m][0] for m in METRICS]
        stds = [0.0 if math.isnan(r["stats"][m][1]) else r["stats"][m][1] for m in METRICS]
        e = r["experiment"]
        ax.bar(x + (k - (len(rows) - 1) / 2) * width, np.nan_to_num(means), width, yerr=stds, capsize=2,
               label=e.name, color=cmap(methods.index(e.method) % cmap.N),
               hatch="" if e.order == "default" else "//", edgecolor="white" if e.order == "default" else "black",
               linewidth=0.3)
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xticks(x)
    ax.set_xticklabels([m.upper() for m in METRICS])
    ax.set_ylabel("percent (mean ± std over seeds)")
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_width(wrows: Sequence[Dict[str, Any]], path: str) -> Optional[str]:
    if not wrows:
        return None
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.4))
    ws = [w["width"] for w in wrows]
    for ax, metric in zip(axes, ("mfn", "bwt")):
        for method in ("incmoelora", "dymoe"):
            m = [w[method]["stats"][metric][0] for w in wrows]
            s = [0.0 if math.isnan(w[method]["stats"][metric][1]) else w[method]["stats"][metric][1] for w in wrows]
            ax.errorbar(ws, m, yerr=s, marker="o", capsize=3, label=method)
        ax.set_xscale("log", base=2)
        ax.set_xticks(ws)
        ax.set_xticklabels([str(w) for w in ws])
        ax.set_xlabel("LLM hidden size d")
        ax.set_ylabel(metric.upper())
        ax.legend(fontsize=8)
    fig.suptitle("IncMoELoRA vs DyMoE over the LLM width (paper recipe, T_route 0.01 unscaled)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


GROUP_TITLES = {"methods": "Methods (baselines, IncMoELoRA, DyMoE)",
                "ladder": "Ablation ladder (method.md §6.2)",
                "tau": "TAG threshold tau (DyMoE; 0.2 is the paper's, in the methods table)",
                "width": "Width study: IncMoELoRA vs DyMoE",
                "variants": "Beyond the paper: DyMoE variants against the baselines (d = 128)",
                "variants_width": "Beyond the paper at d = 256",
                "order": "Beyond the paper on the reversed task order (d = 128)",
                "causes": "Cause tests of the plasticity audit (d = 128)",
                "routers": "Beyond the paper, second and third rounds: the bank decision's rows and scope "
                           "(three looks)",
                "third_order": "Beyond the paper, third round: a third task order (d = 128)",
                "harder": "The harder suite (`coin_shaped`): every method in CoIN's order and a drawn order (d = 128)",
                "harder_candidates": "The harder suite: candidate changes to `dymoe_plus` in CoIN's order (d = 128)"}


def group_note(group: str) -> str:
    """A sentence under a group's title (what the width study kept fixed: the paper's recipe, from the config;
    what each beyond-the-paper recipe changes)."""
    from llava_dymoe.methods import VARIANTS, get_method

    if group == "variants":
        return ("Opt-in recipes beyond the paper (`llava_dymoe.methods.VARIANTS`), each the paper's `dymoe` recipe "
                "plus: " + "; ".join(f"`{name}`: " + ", ".join(f"{k}={v}" for k, v in cfg.items())
                                     for name, (cfg, _) in VARIANTS.items())
                + f". The first round's best, `{best_variant()}`, was `dymoe_plus` until the third round; the third "
                "round's recipe, `dymoe_seqbank` (groups routers and third_order), held the name until 2026-12-07, and "
                f"`dymoe_plus` is now `{get_method('dymoe_plus').name}` (docs/beyond-the-paper.md section 8). Same "
                "seeds, batches and steps as the baselines.\n")
    if group == "causes":
        return ("Each row changes one thing in a paper-rule run (d = 128): no specialisation loss (`c_spe=0`), or "
                "the projector trained at every task as in LLaVA's and CoIN's recipes (with it trained, oracle "
                "routing no longer rebuilds task i's model, so that column is not 0).\n")
    if group == "routers":
        return ("The first round's `dymoe_plus` (`dymoe_cascade_warm_spetag`) plus one of: `router_train=False` "
                "(the new bank's router rows stay the centroids of its task's inputs), `router_refresh=True` (those "
                "rows re-centred on the trained model's inputs at the "
                "end of the task), `bank_keys=refreshed` (separate never-trained keys decide the bank and are "
                "re-centred at the end of the task; the rows keep the gate), or those fixed rows and keys with "
                "`bank_scope=sequence` (the mean of a sequence's token scores decides one bank per projection for all "
                "its tokens), with the keys `refreshed` or `fitted` (also fitted through the model that trains "
                "before the first step). Each block is one look: d = 128 in the suite's order, d = 256, d = 128 "
                "reversed; the baselines and `dymoe_seqbank` (then `dymoe_plus`) are the runs of the groups above.\n")
    if group == "harder":
        return ("CoIN's eight tasks with CoIN's instructions, image tokens at least two thirds of every prompt, shared "
                "instructions and question forms (docs/suite.md). `oracle_bank` is told the true task id at "
                "evaluation: an upper bound. `hide_selector` is a HiDe-LLaVA-style selector (image and text anchors "
                "per task, a softmax over the banks); `prism_selector` takes the same anchors' argmax, as Prism's port "
                "of HiDe-LLaVA does (added after seed 0). `anchored_keys` is `dymoe_plus` since the pre-registered "
                "rule adopted it over `key_selector` on seeds 0-2 of CoIN's order, and `key_selector` held the name "
                "from its own adoption over `dymoe_seqbank` (the study's runs labelled `dymoe_plus` until then), both "
                "on 2026-12-07. The drawn order was drawn before any run (docs/beyond-the-paper.md section 8).\n")
    if group == "harder_candidates":
        return ("Changes to `dymoe_plus` (issue 26 item 5), each pre-registered in docs/beyond-the-paper.md section 8 "
                "before its first run and judged against the recipe it would replace (`dymoe_seqbank`, then "
                "`key_selector`). "
                "`key_selector`: `dymoe_seqbank`'s decision (one bank per sequence and projection by the mean of the "
                "prompt's scores against keys fitted at the end of each task) over the banks of `oracle_bank` and "
                "`hide_selector`, each trained on its own task alone; no task id at evaluation. Adopted: it is "
                "`dymoe_plus` from 2026-12-07. `anchored_keys` (candidate 2, judged against `key_selector`, adopted "
                "the same day): the anchors of `prism_selector` shortlist each prompt's two most similar tasks and "
                "`key_selector`'s keys choose one bank among them, per sequence and projection.\n")
    if group != "width":
        return ""

    cfg = get_method("dymoe").build_config()
    return ("Each width has its own base model (LLM d, MLP 2d, 2 layers, 4 heads, same base recipe and steps); "
            "the continual recipe is the paper's at every width and nothing is scaled with d: router temperature "
            f"{cfg.router_temperature:g}, tau {cfg.tau:g}, RSR {cfg.c_exc:g}/{cfg.c_spe:g}, {cfg.experts_per_task} "
            f"rank-{cfg.expert_rank} experts per task, the same steps and learning rate per task. d=128 is the "
            "methods table's run.\n")


def write_results_doc(root: str, doc_path: str, plan: Sequence[Experiment], profile: Profile, *,
                      command: str, bases: Optional[Dict[int, Any]] = None, total_s: Optional[float] = None,
                      widths: Sequence[int] = ()) -> Dict[str, Any]:
    """Write ``doc_path`` (Markdown), its plots and ``<doc stem>.json`` (the numbers) in ``<doc dir>/results/``;
    returns the collected rows."""
    rows = collect(root, plan, profile.seeds)
    by_key = {r["experiment"].key: r for r in rows}
    plot_dir = os.path.join(os.path.dirname(os.path.abspath(doc_path)), "results")
    os.makedirs(plot_dir, exist_ok=True)
    groups: List[str] = []
    for e in plan:
        if e.group not in groups:
            groups.append(e.group)
    try:
        import torch
        torch_version = torch.__version__
    except ImportError:  # pragma: no cover
        torch_version = "?"
    from .execute import suite_folder

    suite = plan_suite(plan)
    suite_words = ("synthetic 5-task suite" if suite == DEFAULT_SUITE else
                   f"{len(orders_for(suite)['default'])}-task `{suite}` suite")
    where = "the embedded default" if suite == DEFAULT_SUITE else f"the harder suite, `{suite}`"
    title = f"# Results on {where} (profile `{profile.name}`)\n"
    regime = ("The easy regime: every prompt of this suite names its task and images are a fifth of its tokens. "
              "The study on the CoIN-shaped suite, where neither holds, is docs/results-harder.md.\n"
              if suite == DEFAULT_SUITE else
              "CoIN's eight tasks with CoIN's instructions, image tokens at least two thirds of every prompt, shared "
              "instructions and question forms (docs/suite.md); the easy regime is docs/results.md.\n")
    out = [title, regime,
           f"Made by `{command}` on {time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPU core(s), "
           f"Python {platform.python_version()}, torch {torch_version}"
           + (f"; wall time {total_s / 60:.0f} min" if total_s else "") + ".\n",
           f"Setup: the tiny LLaVA base model (`llava_dymoe.synthetic.base`, {profile.base_steps} steps), the "
           f"{suite_words} (`eval_suites/{suite}.yaml`, {profile.n_train} train / {profile.n_test} test "
           f"samples per task), {profile.task_steps} steps per task with "
           + ", ".join(f"`{k}={v}`" for k, v in profile.train_args.items())
           + f"; seeds {list(profile.seeds)} (training seed; base model and suite fixed). Scores in percent; "
           "MFN = mean final accuracy, MAA = mean average accuracy, BWT = backward transfer (negative = "
           "forgetting), MFT = mean of R[i, i] (accuracy right after learning each task: plasticity; a method "
           "that learns a task less has less of it to forget, so read BWT next to MFT), method.md §5. Mean ± "
           "sample std over the seeds that finished. \"BWT, oracle routing\": "
           "the BWT of the same checkpoints when each old task is answered with routing restricted to the banks "
           "that existed when it was learned (`cli run --oracle-routing`, methods with one bank per task); with "
           "the projector frozen it is 0 exactly, so BWT itself is the forgetting caused by routing drift.\n"]
    if bases:
        out.append("## Base models\n\nHeld-out accuracy of each base model on its own base tasks "
                   "(what continual tuning starts from):\n")
        btasks = sorted({t for b in bases.values() for t in (b.accuracy or {})})
        if btasks:
            out.append("| d | " + " | ".join(btasks) + " |\n|---|" + "---|" * len(btasks))
            for w, b in sorted(bases.items()):
                out.append(f"| {w} | " + " | ".join(f"{b.accuracy.get(t, float('nan')):.0f}" for t in btasks) + " |")
            out.append("")
    for group in groups:
        grows = [{**by_key[e.key], "experiment": e} for e in plan if e.group == group]  # shared runs: own name
        out.append(f"## {GROUP_TITLES.get(group, group)}\n")
        note = group_note(group)
        if note:
            out.append(note)
        out.append(group_table(grows))
        if group in ("methods", "harder"):
            out.append("Final accuracy per task (last row of the matrix), mean ± std:\n")
            out.append(per_task_table(grows, "final"))
            learned_tasks = [t for r in grows for t in r["learned"]]
            majority = majority_rates(suite_folder(root, suite), list(dict.fromkeys(learned_tasks)))
            learned = per_task_table(grows, "learned", majority, "(majority answer)")
            if learned:
                out.append("Accuracy right after learning each task (R[i, i], the diagonal: is the task learned "
                           "at all?), mean ± std; the first row is the share of the test set's most frequent "
                           "reference answer, what one constant answer scores:\n")
                out.append(learned)
        png = plot_group(grows, os.path.join(plot_dir, f"{group}_bars.png"), GROUP_TITLES.get(group, group))
        if png:
            out.append(f"![{group}](results/{os.path.basename(png)})\n")
    from .variants import paired_markdown, reeval_markdown

    from . import harder

    verdict = harder.markdown(by_key, plan)
    if verdict:
        out.append(f"## The harder suite: `dymoe_plus` (= `{harder.CANDIDATE}`) against every method\n")
        out.append(verdict)
    candidates = harder.candidates_markdown(by_key, plan)
    if candidates:
        out.append("## The harder suite: changes to `dymoe_plus`, by the pre-registered rule\n")
        out.append(candidates)
    paired = paired_markdown(by_key, plan)
    if paired:
        out.append("## Beyond the paper: the recipes paired with the baselines\n")
        out.append(paired)
    reeval = reeval_markdown(root, plan, profile.seeds)
    if reeval:
        out.append("## Cause test: TAG's decision kept at inference\n")
        out.append(reeval)
    wrows = width_rows(by_key, widths) if widths else []
    if wrows:
        out.append("### DyMoE minus IncMoELoRA, paired by seed\n")
        out.append("| d | ΔBWT (DyMoE − IncMoELoRA) | ΔMFN | ΔMFT | seeds |\n|---|---|---|---|---|")
        for w in wrows:
            gaps = " | ".join(fmt_ms(*w[k][:2]) for k in ("gap_bwt", "gap_mfn", "gap_mft"))
            out.append(f"| {w['width']} | {gaps} | {w['gap_bwt'][2]} |")
        out.append("")
        png = plot_width(wrows, os.path.join(plot_dir, "width_curve.png"))
        if png:
            out.append(f"![width](results/{os.path.basename(png)})\n")
    from .routing import routing_markdown, routing_rows, share_markdown, share_rows

    tag_view = routing_markdown(routing_rows(root, plan, profile.seeds))
    if tag_view:
        out.append("## What TAG saw while training\n")
        out.append(tag_view)
        shares = share_markdown(share_rows(root, plan, profile.seeds))
        if shares:
            out.append(shares)
    from .diagnose import drift_markdown, drift_rows

    diag = drift_markdown(drift_rows(root, plan))
    if diag:
        out.append("## Routing diagnostics (why)\n")
        out.append(diag)
    from . import bank_choice

    cues = bank_choice.markdown(bank_choice.rows(root, plan, profile.seeds))
    if cues:
        out.append("## Which cue picks the bank\n")
        out.append(cues)
    from . import bank_swap

    swaps = bank_swap.markdown(root, plan)
    if swaps:
        out.append("## What a wrong bank costs\n")
        out.append(swaps)
    with open(doc_path, "w", encoding="utf-8") as f:
        f.write("\n".join(out).rstrip() + "\n")
    # one JSON per doc, so that a second doc written next to docs/results.md (e.g. docs/results-beyond.md, the
    # beyond-the-paper groups from another output dir) does not replace the first one's numbers
    stem = os.path.splitext(os.path.basename(doc_path))[0]
    with open(os.path.join(plot_dir, f"{stem}.json"), "w", encoding="utf-8") as f:
        json.dump([{"group": r["experiment"].group, "name": r["experiment"].name, "key": r["experiment"].key,
                    "method": r["experiment"].method, "width": r["experiment"].width, "seeds": r["seeds"],
                    "per_seed": r["per_seed"], "stats": r["stats"]} for r in rows], f, indent=2)
    return {"rows": rows, "doc": doc_path, "plot_dir": plot_dir}
