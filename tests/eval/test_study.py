"""``make results`` plumbing: the plan, the commands it would run, and the aggregation into docs/results.md
(on hand-written run folders whose metrics are known, so means, spreads and gaps are checked by hand)."""
import dataclasses
import json
import math
import os
import types

import pytest

from llava_dymoe.eval.matrix import AccuracyMatrix
from llava_dymoe.eval.metrics import summary
from llava_dymoe.methods import METHODS
from llava_dymoe.study.aggregate import collect, mean_std, write_results_doc
from llava_dymoe.study.execute import make_jobs, run_dir
from llava_dymoe.study.plan import DEFAULT_GROUPS, PROFILES, build_plan

TASKS = ["a", "b"]


def test_plan_covers_every_method_the_ladder_taus_and_widths():
    plan = build_plan()
    assert {e.group for e in plan} == set(DEFAULT_GROUPS)
    assert {e.method for e in plan} <= set(METHODS.names())
    assert {"lora", "moelora", "olora", "incmoelora", "dymoe"} <= {e.method for e in plan if e.group == "methods"}
    assert [e.method for e in plan if e.group == "ladder"][0] == "incmoelora"
    assert sorted(dict(e.dymoe_args)["tau"] for e in plan if e.group == "tau") == ["0.1", "0.3", "0.5"]
    assert {(e.method, e.width) for e in plan if e.group == "width"} == {
        (m, w) for m in ("incmoelora", "dymoe") for w in (64, 256, 512)}
    # shared runs: the ladder's IncMoELoRA and the variants' three baselines are the methods' runs, the
    # variants' d=256 IncMoELoRA and DyMoE are the width study's, the routers group's baselines and dymoe_plus
    # (4 at each of its 3 looks) are the variants', variants_width's and order's runs
    assert len({e.key for e in plan}) == len(plan) - 1 - 3 - 2 - 12
    routers = [e for e in plan if e.group == "routers"]
    others = {e.key for e in plan if e.group != "routers"}
    assert len([e for e in routers if e.key not in others]) == 15 and all(e.dymoe_args for e in routers
                                                                           if e.key not in others)
    with pytest.raises(ValueError, match="unknown results group"):
        build_plan(["nope"])


def test_jobs_carry_the_recipe_seed_and_base_of_their_width(tmp_path):
    plan = build_plan(["tau", "width"], widths=[64])
    base = lambda w: types.SimpleNamespace(llm=f"/b{w}/llm", clip=f"/b{w}/clip", projector=f"/b{w}/p.bin")
    suite = types.SimpleNamespace(suite_yaml="/s/suite.yaml", root="/s")
    jobs = make_jobs(str(tmp_path), PROFILES["full"], plan, {128: base(128), 64: base(64)}, suite)
    assert len(jobs) == (3 + 2) * 3
    tau = [j for j in jobs if j.experiment.group == "tau" and j.seed == 2][0]
    cmd = " ".join(tau.command)
    assert "--dymoe-arg tau=0.1" in cmd and "--train-arg seed=2" in cmd and "--base /b128/llm" in cmd
    assert "--train-arg max_steps=150" in cmd and "--train-arg learning_rate=2e-3" in cmd
    assert "--dymoe-arg train_projector=False" in cmd
    assert "--oracle-routing" in cmd  # dymoe: one bank per task
    assert "--dymoe-arg log_routing=True" in cmd  # what TAG saw: routing_stats.json per checkpoint
    lora = make_jobs(str(tmp_path), PROFILES["full"], build_plan(["methods"]), {128: base(128)}, suite)
    assert ["--oracle-routing" in j.command for j in lora if j.seed == 0] == [False, False, True, True, True]
    # statistics only where a router scores one bank per task: not lora/moelora (one bank), not olora (no router)
    assert ["log_routing=True" in j.command for j in lora if j.seed == 0] == [False, False, False, True, True]
    quick = make_jobs(str(tmp_path), PROFILES["quick"], build_plan(["methods"]), {128: base(128)}, suite)
    assert not any("log_routing=True" in j.command for j in quick)
    narrow = [j for j in jobs if j.experiment.width == 64][0]
    assert "--base /b64/llm" in " ".join(narrow.command) and narrow.out_dir.endswith("_d64/seed0")


def _write_run(folder, final_a, final_b, first_a=80.0, oracle_a=None):
    m = AccuracyMatrix(TASKS)
    m.add_stage("1_a")
    m.set(0, "a", first_a)
    m.add_stage("2_b")
    m.set(1, "a", final_a)
    m.set(1, "b", final_b)
    os.makedirs(folder, exist_ok=True)
    m.to_csv(os.path.join(folder, "matrix.csv"))
    json.dump({"method": "x"}, open(os.path.join(folder, "run.json"), "w"))
    if oracle_a is not None:
        m.set(1, "a", oracle_a)
        m.to_csv(os.path.join(folder, "matrix_restricted.csv"))
    return summary(m)


def test_aggregation_means_spreads_paired_gaps_and_doc(tmp_path):
    root = str(tmp_path / "out")
    plan = build_plan(["methods", "width"], widths=[64])
    profile = PROFILES["full"]
    finals = {"incmoelora": [(40.0, 90.0), (50.0, 70.0), (60.0, 80.0)],
              "dymoe": [(70.0, 85.0), (60.0, 75.0), (80.0, 80.0)]}
    written = {}
    for exp in plan:
        if exp.method not in finals:
            continue
        for seed, (fa, fb) in enumerate(finals[exp.method]):
            oracle = 80.0 if exp.method == "incmoelora" else None  # restricted routing gives R[1, a] back
            written[(exp.key, seed)] = _write_run(run_dir(root, exp, seed), fa, fb, oracle_a=oracle)
    # an unfinished run (1 of 2 stages) is not aggregated
    m = AccuracyMatrix(TASKS)
    m.add_stage("1_a")
    m.set(0, "a", 10.0)
    os.makedirs(run_dir(root, plan[0], 0))
    m.to_csv(os.path.join(run_dir(root, plan[0], 0), "matrix.csv"))

    rows = {r["experiment"].key: r for r in collect(root, plan, profile.seeds)}
    assert rows["lora"]["seeds"] == []
    inc = rows["incmoelora"]
    assert [written[("incmoelora", s)]["bwt"] for s in range(3)] == [0.0, 0.0, 0.0]  # the restricted matrix
    assert inc["stats"]["bwt_oracle"] == (0.0, 0.0) and math.isnan(rows["dymoe"]["stats"]["bwt_oracle"][0])
    assert inc["stats"]["bwt"] == pytest.approx((-30.0, 10.0))  # BWT per seed -40, -30, -20
    assert inc["final"]["a"] == pytest.approx((50.0, 10.0))
    assert inc["learned"]["a"] == pytest.approx((80.0, 0.0)) and inc["learned"]["b"] == pytest.approx((80.0, 10.0))
    # the study's suite sits in ROOT/suite: task a's test references give its majority rate (3 of 4 -> 75 %)
    os.makedirs(os.path.join(root, "suite", "a"))
    with open(os.path.join(root, "suite", "a", "references.jsonl"), "w") as f:
        for i, ans in enumerate(["x", "x", "y", "x"]):
            f.write(json.dumps({"question_id": f"a-{i}", "answer": ans}) + "\n")
    doc = str(tmp_path / "docs" / "results.md")
    write_results_doc(root, doc, plan, profile, command="python -m llava_dymoe.study --x", widths=[64])
    text = open(doc).read()
    # the diagonal table: majority row first (no references for b), then R[i, i] per task
    diag = text.split("Accuracy right after learning each task")[1]
    assert "| (majority answer) | 75.0 | – |\n| lora | – | – |" in diag
    assert "| incmoelora | 80.0 ± 0.0 | 80.0 ± 10.0 |" in diag
    assert "python -m llava_dymoe.study --x" in text
    assert "nothing is scaled with d: router temperature 0.01" in text  # the width study says what it kept
    assert "| incmoelora | `incmoelora` | 3 | 65.0 ± 5.0 |" in text  # MFN = mean of finals (a+b)/2
    assert text.count("--oracle-routing") >= 1
    # MAA per seed (80 + (fa + fb) / 2) / 2; MFT = mean of the diagonal (80 + fb) / 2 -> 85, 75, 80
    assert ("| incmoelora | `incmoelora` | 3 | 65.0 ± 5.0 | 72.5 ± 2.5 | -30.0 ± 10.0 | 80.0 ± 5.0 "
            "| -40.0, -30.0, -20.0 | 0.0 ± 0.0 |") in text
    assert "| dymoe | `dymoe` | 3 |" in text and "| lora | `lora` | 0 | – |" in text
    # paired gap at d=128: dymoe BWT per seed -10, -20, 0 minus incmoelora's -40, -30, -20 -> 30, 10, 20
    # MFN gap per seed 77.5-65, 67.5-60, 80-70 = 12.5, 7.5, 10; MFT gap (80 + fb) / 2: 82.5-85, 77.5-75, 80-80
    assert "| 128 | 20.0 ± 10.0 | 10.0 ± 2.5 | 0.0 ± 2.5 | 3 |" in text
    assert os.path.isfile(os.path.join(tmp_path, "docs", "results", "methods_bars.png"))
    saved = json.load(open(os.path.join(tmp_path, "docs", "results", "results.json")))
    assert {r["key"] for r in saved} >= {"incmoelora", "dymoe", "dymoe_d64"}


def test_mean_std_edge_cases():
    assert math.isnan(mean_std([])[0]) and math.isnan(mean_std([3.0])[1])
    assert mean_std([1.0, 3.0]) == (2.0, pytest.approx(math.sqrt(2.0)))


def test_drift_rows_and_markdown_from_a_drift_report(tmp_path):
    from llava_dymoe.study.diagnose import drift_markdown, drift_rows

    root = str(tmp_path)
    plan = build_plan(["methods"])
    folder = os.path.join(run_dir(root, [e for e in plan if e.method == "dymoe"][0], 0), "drift")
    os.makedirs(folder)
    stages = [{"mean_drift": 0.25, "mean_top1_changed": 0.5, "median_new_over_base": 0.125,
               "median_new_over_old": 2.0, "answer_logits": {"answer_kl": 0.75, "argmax_changed": 0.1}},
              {"mean_drift": 0.5, "mean_top1_changed": 0.75, "median_new_over_base": None,
               "median_new_over_old": None, "answer_logits": None}]
    before = os.path.join(root, "checkpoints", "2_read_llava_dymoe")
    json.dump({"before": before, "stages": stages}, open(os.path.join(folder, "drift.json"), "w"))
    rows = drift_rows(root, plan)
    assert [(r["method"], r["stage"], r["drift"], r["task"]) for r in rows] == [("dymoe", 3, 0.25, "read"),
                                                                               ("dymoe", 4, 0.5, "read")]
    text = drift_markdown(rows)
    assert "the second task's test inputs (`read`) (20 questions)" in text
    assert "| dymoe | 128 | 3 | 0.250 | 0.500 | 2 | 0.125 | 0.75 | 0.100 |" in text
    assert "| dymoe | 128 | 4 | 0.500 | 0.750 | – | – | – | – |" in text


def test_bank_choice_targets_rows_and_markdown(tmp_path, monkeypatch):
    """The study's bank-choice section: which runs are probed, and mean ± std over seeds of the shares."""
    from llava_dymoe.study import bank_choice as bc
    from llava_dymoe.study.plan import SEQUENCE_BANK, best_variant

    plan = build_plan(["variants", "routers", "third_order"])
    got = [(e.method, e.dymoe_args, e.order) for e in bc.targets(plan)]
    assert ("dymoe", (), "default") in got and (best_variant(), (), "default") in got
    assert (best_variant(), SEQUENCE_BANK, "default") in got and (best_variant(), SEQUENCE_BANK, "shuffled") in got
    assert all(e.width == 128 for e in bc.targets(plan)) and len(got) == len(set(got))
    plus = next(e for e in bc.targets(plan) if e.dymoe_args == SEQUENCE_BANK and e.order == "default")
    assert bc.label(plus) == "dymoe_seqbank"
    root = str(tmp_path)
    for seed, own in ((0, 1.0), (1, 0.5)):
        folder = os.path.join(run_dir(root, plus, seed), bc.FOLDER)
        os.makedirs(folder)
        conditions = {"as_asked": {"a": {"own": own}, "b": {"own": 1.0}},
                      "image_only": {"a": {"own": 0.0}, "b": {"own": 0.25}},
                      "swapped": {"a": {"own": 0.0, "text": own}, "b": {"own": 0.5, "text": 0.5}}}
        json.dump({"tasks": ["a", "b"], "conditions": conditions}, open(os.path.join(folder, "bank_choice.json"), "w"))
    rows = bc.rows(root, plan, (0, 1, 2))  # seed 2 has no report: two seeds
    assert [(r["label"], r["task"], r["seeds"]) for r in rows] == [("dymoe_seqbank", "a", 2), ("dymoe_seqbank", "b", 2)]
    assert rows[0]["as_asked"] == (0.75, pytest.approx(math.sqrt(0.125)))
    text = bc.markdown(rows)
    assert "| dymoe_seqbank | a | 75.0 ± 35.4 | 0.0 ± 0.0 | 0.0 ± 0.0 | 75.0 ± 35.4 | 2 |" in text
    assert "| dymoe_seqbank | b | 100.0 ± 0.0 | 25.0 ± 0.0 | 50.0 ± 0.0 | 50.0 ± 0.0 | 2 |" in text
    assert bc.markdown([]) == ""


def test_bank_swap_targets_and_markdown(tmp_path, monkeypatch):
    """The harder study's bank-swap section: oracle_bank's runs in both orders, seed 0's matrix as written."""
    from llava_dymoe.protocol.bank_swap import wrong_bank_cost
    from llava_dymoe.study import bank_swap as bs

    plan = build_plan(["harder"])
    assert sorted(e.order for e in bs.targets(plan)) == sorted({e.order for e in plan})
    assert {e.method for e in bs.targets(plan)} == {"oracle_bank"}
    root = str(tmp_path)
    assert bs.markdown(root, plan) == ""
    first = bs.targets(plan)[0]
    folder = os.path.join(run_dir(root, first, 0), bs.FOLDER)
    os.makedirs(folder)
    score = {"gqa": {"gqa": 57.5, "vqav2": 52.5}, "vqav2": {"gqa": 57.5, "vqav2": 47.5}}
    json.dump({"checkpoint": "ck", "tasks": ["gqa", "vqav2"], "score": score,
               "cost": wrong_bank_cost(score, ["gqa", "vqav2"])}, open(os.path.join(folder, "swap.json"), "w"))
    text = bs.markdown(root, plan)
    assert f"**{first.order} order, seed 0.**\n\n| questions \\ bank |" in text  # the table starts its own block
    assert "| gqa | **57.5** | 52.5 | vqav2 (+5.0) |" in text and "| vqav2 | 57.5 | **47.5** | gqa (-10.0) |" in text
    # no run finished: nothing is launched
    launched = []
    monkeypatch.setattr(bs, "run_logged", lambda cmd, log: launched.append(cmd) or True)
    assert bs.run_bank_swap(root, plan, log=lambda m: None) == {} and not launched
    open(os.path.join(run_dir(root, first, 0), "matrix.csv"), "w").close()
    assert list(bs.run_bank_swap(root, plan, log=lambda m: None)) == [run_dir(root, first, 0)]
    assert launched[0][-2:] == ["bank-swap", run_dir(root, first, 0)]


def _routing_stats(layers):
    """A routing_stats.json as the trainer writes it: per layer the means of its scored tokens."""
    return {"task_id": 2, "tau": 0.2, "layer_mean": {}, "layers": layers}


def test_routing_rows_average_layers_then_stages_then_seeds(tmp_path):
    from llava_dymoe.study.routing import COLUMNS, routing_markdown, routing_rows

    root = str(tmp_path)
    plan = build_plan(["methods"])
    dymoe = [e for e in plan if e.method == "dymoe"][0]
    keys = [k for _, k in COLUMNS]

    def layer(v):
        return {k: v for k in keys}

    # seed 0: stage 2 has layers 0.2 and 0.4 (mean 0.3), stage 3 has 0.5 -> run mean 0.4;
    # stage 1 has one bank (no scores) and must not count; seed 1: one stage of 0.6 -> mean over seeds 0.5
    files = {(0, "1_a"): {"q": {"n_tokens": 4, "bank_mass": [4.0]}},
             (0, "2_b"): {"q": layer(0.2), "v": layer(0.4), "k": {"n_tokens": 3}},
             (0, "3_c"): {"q": layer(0.5)},
             (1, "2_b"): {"q": layer(0.6)}}
    for (seed, stage), layers in files.items():
        folder = os.path.join(run_dir(root, dymoe, seed), "checkpoints", f"{stage}_llava_dymoe")
        os.makedirs(folder)
        json.dump(_routing_stats(layers), open(os.path.join(folder, "routing_stats.json"), "w"))
    os.makedirs(os.path.join(run_dir(root, dymoe, 2), "checkpoints", "2_b_llava_dymoe"))  # no statistics file
    rows = routing_rows(root, plan, (0, 1, 2))
    assert [r["experiment"].key for r in rows] == ["dymoe"]
    (row,) = rows
    assert row["seeds"] == [0, 1] and row["stages"] == [2, 3]
    for key in keys:
        m, s = row["stats"][key]
        assert m == pytest.approx(0.5) and s == pytest.approx(math.sqrt(0.02))
    text = routing_markdown(rows)
    assert "| dymoe | 128 | 2 | 0.50 ± 0.14 | 0.50 ± 0.14 |" in text
    assert routing_markdown([]) == ""
    doc = str(tmp_path / "docs" / "results.md")
    write_results_doc(root, doc, plan, PROFILES["full"], command="python -m llava_dymoe.study")
    assert "## What TAG saw while training" in open(doc).read()


def test_aggregate_only_reports_the_base_models_already_built_and_builds_nothing(tmp_path, capsys):
    from llava_dymoe.study.__main__ import main
    from llava_dymoe.study.execute import finished_bases

    root = str(tmp_path / "out")
    plan = build_plan(["methods", "width"], widths=[64])
    record = {"request": {"any": 1}, "results": {"accuracy": {"cell": {"score": 38.0}, "count": {"score": 62.5}}}}
    os.makedirs(os.path.join(root, "base"))
    json.dump(record, open(os.path.join(root, "base", "base.json"), "w"))
    os.makedirs(os.path.join(root, "base_d64"))  # started, never finished: no base.json
    bases = finished_bases(root, plan)
    assert list(bases) == [128]
    assert bases[128].accuracy == {"cell": 38.0, "count": 62.5}
    assert bases[128].llm == os.path.join(root, "base", "llm")
    doc = str(tmp_path / "results.md")
    assert main(["--output-dir", root, "--doc", doc, "--groups", "methods", "width", "--widths", "64",
                 "--aggregate-only"]) == 0
    text = open(doc).read()
    assert "| d | cell | count |" in text and "| 128 | 38 | 62 |" in text
    assert sorted(os.listdir(root)) == ["base", "base_d64"] and os.listdir(os.path.join(root, "base_d64")) == []


def _fake_job(tmp_path, name, n_stages, rc=0):
    """A RunJob whose command writes ``n_stages`` stage records (slowly) and exits with ``rc``."""
    import sys

    from llava_dymoe.study.execute import RunJob

    out = str(tmp_path / name)
    code = ("import os, sys, time\n"
            f"for t in range({n_stages}):\n"
            f"    d = os.path.join({out!r}, 'stages', f'{{t + 1}}_task')\n"
            "    os.makedirs(d)\n"
            "    time.sleep(0.3)\n"
            "    open(os.path.join(d, 'stage.json'), 'w').write('{}')\n"
            f"sys.exit({rc})\n")
    exp = build_plan(["methods"])[0]
    return RunJob(exp, 0, out, [sys.executable, "-c", code], out + ".log")


def test_run_jobs_counts_finished_stages_and_reports_failures(tmp_path, capsys):
    from llava_dymoe.study.execute import finished_stages, run_jobs

    jobs = [_fake_job(tmp_path, "a", 3), _fake_job(tmp_path, "b", 3)]
    walls = run_jobs(jobs, 2, stages_per_run=3, desc="demo runs")
    assert set(walls) == {j.out_dir for j in jobs}
    assert [finished_stages(j.out_dir) for j in jobs] == [3, 3]
    err = capsys.readouterr().err
    assert "demo runs" in err and "6/6" in err and "stage" in err
    os.makedirs(os.path.join(jobs[0].out_dir, "stages", "4_task"))  # a stage without its record
    assert finished_stages(jobs[0].out_dir) == 3
    bad = _fake_job(tmp_path, "c", 1, rc=3)
    with pytest.raises(RuntimeError, match=r"exit 3, log .*c\.log"):
        run_jobs([bad], 1, stages_per_run=2, progress=False)
    # a finished run recorded under a former name of its recipe (dymoe_plus, then dymoe_seqbank) is read, not
    # relaunched: its failing command never runs; any other finished run is relaunched (cli run checks it)
    from llava_dymoe.study.execute import finished_under_former_name

    def as_method(job, method):
        return dataclasses.replace(job, experiment=dataclasses.replace(job.experiment, method=method))

    done = as_method(_fake_job(tmp_path, "a", 3, rc=5), "dymoe_seqbank")
    open(os.path.join(done.out_dir, "matrix.csv"), "w").write("stage\n")
    open(os.path.join(done.out_dir, "run.json"), "w").write(json.dumps({"method": "dymoe_plus"}))
    logged = open(done.log).read()
    assert finished_under_former_name(done.out_dir, "dymoe_seqbank", 3)
    assert run_jobs([done], 1, stages_per_run=3, progress=False) == {done.out_dir: 0.0}
    assert open(done.log).read() == logged  # no command was logged
    for record, method in (({"method": "dymoe_plus", "recipe": "key_selector"}, "dymoe_seqbank"),  # another recipe
                           ({"method": "dymoe_plus"}, "dymoe_plus"),  # today's dymoe_plus is anchored_keys: relaunch
                           ({"method": "dymoe_seqbank"}, "dymoe_seqbank")):  # the same name: cli run checks it
        open(os.path.join(done.out_dir, "run.json"), "w").write(json.dumps(record))
        assert not finished_under_former_name(done.out_dir, method, 3), (record, method)
    # started as dymoe_plus while that name meant key_selector (after its own adoption): read as key_selector's run
    record = {"method": "dymoe_plus", "recipe": "key_selector"}
    open(os.path.join(done.out_dir, "run.json"), "w").write(json.dumps(record))
    assert finished_under_former_name(done.out_dir, "key_selector", 3)
    open(os.path.join(done.out_dir, "run.json"), "w").write(json.dumps({"method": "dymoe_plus"}))
    assert not finished_under_former_name(done.out_dir, "dymoe_seqbank", 4)  # a stage missing
    with pytest.raises(RuntimeError, match="seed 0: exit"):
        run_jobs([as_method(done, "dymoe_plus")], 1, stages_per_run=3, progress=False)
    assert open(done.log).read() != logged


def test_variant_groups_pair_the_best_variant_with_the_baselines_at_two_widths_and_two_orders(tmp_path):
    from llava_dymoe.methods import VARIANTS, get_method
    from llava_dymoe.study.plan import ORDERS, VARIANT_BASELINES

    from llava_dymoe.study.plan import SEQUENCE_BANK, best_variant

    plan = build_plan(["variants", "variants_width", "order", "causes"])
    best = best_variant()  # the first round's recipe; dymoe_seqbank (dymoe_plus until 2026-12-07) is built on it
    plus = get_method("dymoe_seqbank")
    assert best == "dymoe_cascade_warm_spetag" and get_method("dymoe_plus").name == "anchored_keys"
    from llava_dymoe import methods

    # the study's flags are the registered recipe's fields beyond the first round's, as the flags spell them
    extra = {k: v for k, v in methods.SEQUENCE_BANK.items() if k not in methods.VARIANTS[best][0]}
    assert {k: str(v) for k, v in extra.items()} == dict(SEQUENCE_BANK)
    assert plus.build_config() == get_method(best).build_config(extra)
    assert [e.method for e in plan if e.group == "variants"] == list(VARIANT_BASELINES) + list(VARIANTS)
    assert {(e.method, e.width) for e in plan if e.group == "variants_width"} == {
        (m, 256) for m in VARIANT_BASELINES + (best,)}
    order = [e for e in plan if e.group == "order"]
    assert {e.order for e in order} == {"reversed"} and all(e.key.endswith("_order-reversed") for e in order)
    assert sorted(ORDERS["reversed"]) == sorted(ORDERS["default"]) and ORDERS["reversed"] != ORDERS["default"]
    causes = {e.name: (e.method, dict(e.dymoe_args)) for e in plan if e.group == "causes"}
    assert causes["dymoe c_spe=0"] == ("dymoe", {"c_spe": "0"})
    assert causes["dymoe, projector trained"] == ("dymoe", {"train_projector": "True"})
    # the order's jobs read a suite file with the same tasks in the reversed order, named apart
    from llava_dymoe.synthetic.generate import SyntheticSuite

    suite = SyntheticSuite(str(tmp_path), str(tmp_path / "suite.yaml"), {}, {t: None for t in ORDERS["default"]})
    base = types.SimpleNamespace(llm="/b/llm", clip="/b/clip", projector="/b/p.bin")
    jobs = make_jobs(str(tmp_path), PROFILES["full"], order, {128: base}, suite)
    yaml_path = jobs[0].command[jobs[0].command.index("--suite") + 1]
    import yaml

    data = yaml.safe_load(open(yaml_path))
    assert data["name"] == "synthetic-reversed" and [t["name"] for t in data["tasks"]] == list(ORDERS["reversed"])
    assert all(j.out_dir.endswith(f"_order-reversed/seed{j.seed}") for j in jobs)


def test_paired_gaps_and_goal_check_from_known_runs(tmp_path):
    from llava_dymoe.study.variants import goal_check, paired_markdown

    root = str(tmp_path)
    plan = build_plan(["variants"])
    # (final a, final b) per seed; first_a = 80 everywhere -> BWT = final_a - 80, MFN = (fa + fb) / 2,
    # MFT = (80 + fb) / 2
    finals = {"incmoelora": [(40.0, 90.0), (50.0, 70.0)], "olora": [(60.0, 50.0), (60.0, 60.0)],
              "dymoe": [(70.0, 60.0), (70.0, 50.0)]}
    from llava_dymoe.study.plan import best_variant

    best = best_variant()
    finals[best] = [(75.0, 86.0), (75.0, 70.0)]
    for exp in plan:
        for seed, (fa, fb) in enumerate(finals.get(exp.method, [])):
            _write_run(run_dir(root, exp, seed), fa, fb)
    rows = {r["experiment"].key: r for r in collect(root, plan, (0, 1))}
    wider = build_plan(["variants", "variants_width"])  # a look without finished runs gets no row and no verdict
    assert paired_markdown({r["experiment"].key: r for r in collect(root, wider, (0, 1))}, wider) \
        == paired_markdown(rows, plan)
    text = paired_markdown(rows, plan)
    # vs incmoelora: MFN per seed 80.5-65, 72.5-60 -> 15.5, 12.5; BWT 35, 25; MFT 83-85, 75-75 -> -2, 0
    assert "| d = 128, the suite's order | incmoelora | 14.0 ± 2.1 | 30.0 ± 7.1 | -1.0 ± 1.4 | 2 |" in text
    keys = {e.method: e.key for e in plan}
    verdict = goal_check(rows, keys, best)
    assert verdict.startswith("3 of 3 conditions met") and "MFT -1.0 vs IncMoELoRA (within 3)" in verdict
    finals[best] = [(75.0, 70.0), (75.0, 60.0)]  # MFT 75, 70 -> -5 vs IncMoELoRA's 80: the goal is missed
    for seed, (fa, fb) in enumerate(finals[best]):
        _write_run(run_dir(root, [e for e in plan if e.method == best][0], seed), fa, fb)
    rows = {r["experiment"].key: r for r in collect(root, plan, (0, 1))}
    assert goal_check(rows, keys, best).startswith("2 of 3 conditions met")


def test_third_round_recipe_is_paired_at_every_look_it_ran(tmp_path):
    """The third round's recipe (flags on the first round's) is the candidate wherever the plan has it; every other
    run of the look (here the shuffled order's baselines) is an other method of the goal check."""
    from llava_dymoe.study.plan import SEQUENCE_BANK, VARIANT_BASELINES
    from llava_dymoe.study.variants import paired_markdown

    root = str(tmp_path)
    plan = build_plan(["third_order"])
    assert [e.method for e in plan] == list(VARIANT_BASELINES) + ["dymoe_cascade_warm_spetag"]
    assert plan[-1].dymoe_args == SEQUENCE_BANK and {e.order for e in plan} == {"shuffled"}
    finals = {"incmoelora": [(40.0, 90.0), (50.0, 70.0)], "olora": [(60.0, 50.0), (60.0, 60.0)],
              "dymoe": [(70.0, 60.0), (70.0, 50.0)], "dymoe_cascade_warm_spetag": [(80.0, 86.0), (80.0, 70.0)]}
    for exp in plan:
        for seed, (fa, fb) in enumerate(finals[exp.method]):
            _write_run(run_dir(root, exp, seed), fa, fb)
    text = paired_markdown({r["experiment"].key: r for r in collect(root, plan, (0, 1))}, plan)
    # vs dymoe: MFN (83 - 65, 75 - 60) -> 16.5 ± 2.1; BWT (0 - -10, 0 - -10) -> 10; MFT (83 - 70, 75 - 65) -> 11.5
    assert "| d = 128, the shuffled order | dymoe | 16.5 ± 2.1 | 10.0 ± 0.0 | 11.5 ± 2.1 | 2 |" in text
    assert "* d = 128, the shuffled order: 3 of 3 conditions met" in text
    assert text.startswith("`dymoe_seqbank` (the third round's recipe, `dymoe_plus` until 2026-12-07") and \
        "first round" not in text


def test_new_share_by_stage_phase_and_kind(tmp_path):
    from llava_dymoe.study.routing import share_markdown, share_rows

    root = str(tmp_path)
    plan = build_plan(["methods"])
    dymoe = [e for e in plan if e.method == "dymoe"][0]

    def stats(all_, start, end, image):
        return {"layer_mean": {"frac_new": all_},
                "phases": {"start": {"layer_mean": {"frac_new": start}}, "middle": {"layer_mean": {}},
                           "end": {"layer_mean": {"frac_new": end}}},
                "by_kind": {"image": {"frac_new": image}}}

    files = {(0, "2_b"): stats(0.3, 0.1, 0.5, 0.2), (0, "3_c"): stats(0.1, 0.0, 0.2, 0.0),
             (1, "2_b"): stats(0.5, 0.3, 0.7, 0.4)}
    for (seed, stage), rec in files.items():
        folder = os.path.join(run_dir(root, dymoe, seed), "checkpoints", f"{stage}_llava_dymoe")
        os.makedirs(folder)
        json.dump(rec, open(os.path.join(folder, "routing_stats.json"), "w"))
    (row,) = share_rows(root, plan, (0, 1))
    assert row["stages"][2] == pytest.approx((0.4, math.sqrt(0.02))) and row["stages"][3][0] == pytest.approx(0.1)
    # seed 0: start mean over its stages (0.1 + 0) / 2 = 0.05; seed 1: 0.3 -> 0.175
    assert row["parts"]["start"][0] == pytest.approx(0.175) and row["parts"]["image"][0] == pytest.approx(0.25)
    assert "middle" not in row["parts"]
    text = share_markdown([row])
    assert "| dymoe | 128 | default | 2 | 0.40 ± 0.14 | 0.10 |" in text


def test_reeval_markdown_compares_the_rules_on_the_same_checkpoints(tmp_path):
    from llava_dymoe.study.variants import reeval_markdown

    root = str(tmp_path)
    plan = build_plan(["variants"])
    dymoe = [e for e in plan if e.method == "dymoe"][0]
    folder = run_dir(root, dymoe, 0)
    _write_run(folder, 40.0, 50.0)
    _write_run(os.path.join(folder, "reeval", "cascade"), 60.0, 70.0)
    text = reeval_markdown(root, plan, (0, 1))
    assert "| dymoe | 1 | own (plain router) | 45.0 | -40.0 | 65.0 |" in text
    assert "| dymoe | 1 | TAG kept (cascade) | 65.0 | -20.0 | 75.0 |" in text
    assert reeval_markdown(str(tmp_path / "empty"), plan, (0,)) == ""


def test_harder_group_plans_every_method_in_both_orders_on_its_own_suite(tmp_path):
    from llava_dymoe.study.execute import base_folder, suite_folder
    from llava_dymoe.study.plan import (COIN_SHAPED_DRAWN, HARDER_METHODS, HARDER_SUITE, orders_for, plan_suite)
    from llava_dymoe.synthetic.suites import get_suite

    plan = build_plan(["harder"])
    assert [(e.method, e.order) for e in plan] == [(m, o) for o in ("default", "drawn") for m in HARDER_METHODS]
    assert {e.suite for e in plan} == {HARDER_SUITE} and len({e.key for e in plan}) == len(plan) == 22
    assert all(m in METHODS for m in HARDER_METHODS)  # every method is registered (oracle_bank, hide_selector too)
    coin = [t.name for t in get_suite(HARDER_SUITE).tasks]
    assert list(orders_for(HARDER_SUITE)["default"]) == coin and len(coin) == 8
    assert list(orders_for(HARDER_SUITE)["drawn"]) == [coin[i] for i in (3, 5, 1, 7, 0, 4, 6, 2)]
    assert sorted(COIN_SHAPED_DRAWN) == list(range(8))
    # its runs, base model and suite never share a folder with the default suite's
    default = build_plan(["methods"])
    assert not {run_dir("r", e, 0) for e in plan} & {run_dir("r", e, 0) for e in default}
    assert base_folder("r", 128, HARDER_SUITE) != base_folder("r", 128) == os.path.join("r", "base")
    assert suite_folder("r", HARDER_SUITE) != suite_folder("r") == os.path.join("r", "suite")
    with pytest.raises(ValueError, match="mixes suites"):
        plan_suite(default + plan)
    assert "harder" not in {e.group for e in build_plan()}  # not in make results' default groups


def _harder_row(values):
    """A collect()-style row from per-seed (mfn, bwt, mft)."""
    per_seed = {s: {"mfn": v[0], "bwt": v[1], "mft": v[2]} for s, v in enumerate(values)}
    stats = {m: mean_std([p[m] for p in per_seed.values()]) for m in ("mfn", "bwt", "mft")}
    return {"seeds": sorted(per_seed), "per_seed": per_seed, "stats": stats}


def test_harder_goal_check_by_hand():
    from llava_dymoe.study import harder

    plan = [e for e in build_plan(["harder"]) if e.order == "default"]
    keys = harder.order_keys(plan, "default")
    runs = {"lora": [(10, -60, 70)], "moelora": [(12, -55, 66)], "olora": [(20, -30, 50)],
            "incmoelora": [(22, -40, 60), (26, -36, 64)], "dymoe": [(20, -30, 50), (24, -26, 50)],
            "hide_selector": [(30, -10, 40)], "prism_selector": [(36, -8, 44)], "oracle_bank": [(60, 0, 60)],
            "dymoe_seqbank": [(34, -12, 50)], "key_selector": [(34, -12, 50)],
            "anchored_keys": [(42, -20, 58), (46, -16, 62)]}
    by_key = {keys[m]: _harder_row(v) for m, v in runs.items()}
    conditions = harder.goal(by_key, keys)
    # MFN 44 > prism 36; BWT -18 >= dymoe's -28; MFT 60 vs incmoelora 62: -2 within 3; (44 - 22) / (60 - 22) = 58 %
    assert [ok for _, ok, _ in conditions] == [True, True, True, True]
    assert "closes 58% of 38.0 points" in conditions[3][2]
    by_key[keys["hide_selector"]] = _harder_row([(45, -5, 50)])  # a selector with a better MFN: not the best
    by_key[keys["anchored_keys"]] = _harder_row([(40, -30, 60)])  # BWT -30 < -28; MFT -2; (40 - 22) / 38 = 47 %
    conditions = harder.goal(by_key, keys)
    assert [ok for _, ok, _ in conditions] == [False, False, True, False]
    assert "best other (hide_selector) 45.0" in conditions[0][2]
    by_key[keys["oracle_bank"]] = _harder_row([(50, 0, 50)])  # oracle_bank is never a rival: it is told the task
    by_key[keys["hide_selector"]] = _harder_row([(30, -5, 50)])
    assert harder.goal(by_key, keys)[0][1] is True
    del by_key[keys["lora"]]  # a rival without a finished run: not measurable, never met
    first = harder.goal(by_key, keys)[0]
    assert first[1] is None and "lora" in first[2]
    text = harder.markdown(by_key, plan)
    assert "| default | dymoe | 18.0 ± 0.0 |" not in text and "| default | oracle_bank |" in text
    assert "default order: 2 of 4 conditions met (1 not measurable yet)" in text
    assert harder.markdown(by_key, build_plan(["methods"])) == ""


def test_harder_candidates_by_the_pre_registered_rule():
    """Group harder_candidates: each candidate in CoIN's order only, on the harder suite, judged against the recipe it
    would replace (dymoe_seqbank, dymoe_plus when the rule was written); adopted when its mean MFN (paired by seed) is
    higher and its mean BWT not lower by more than 2 points, undecided until seeds 0-2 all finished, the highest MFN
    among the adopted wins.  The adopted candidates are methods of the harder group (the same runs); anchored_keys,
    adopted over key_selector, is dymoe_plus."""
    from llava_dymoe.methods import get_method
    from llava_dymoe.study import harder
    from llava_dymoe.study.plan import HARDER_CANDIDATES, HARDER_SUITE

    plan = build_plan(["harder", "harder_candidates"])
    cands = [e for e in plan if e.group == "harder_candidates"]
    assert [(e.method, e.order, e.suite) for e in cands] == [(m, "default", HARDER_SUITE) for m in HARDER_CANDIDATES]
    assert all(m in METHODS for m in HARDER_CANDIDATES)
    assert harder.CANDIDATE == get_method("dymoe_plus").name == "anchored_keys" and harder.RULE_BASELINE == \
        get_method("dymoe_seqbank").name
    assert harder.order_keys(plan, "default")["key_selector"] == cands[0].key  # one folder: the same runs
    assert harder.order_keys(plan, "default")["anchored_keys"] == cands[1].key
    assert len({run_dir("r", e, 0) for e in plan}) == len(plan) - 2
    plus = harder.order_keys(plan, "default")["dymoe_seqbank"]
    cand = cands[0].key
    by_key = {plus: _harder_row([(60, 0, 60), (62, 2, 61), (58, -2, 59)]),
              cand: _harder_row([(63, -3, 66), (61, -1, 64)])}
    row, second = harder.candidate_verdicts(by_key, plan)
    assert row["adopt"] is None and row["seeds"] == [0, 1]  # seed 2 missing
    assert second["method"] == "anchored_keys" and second["against"] == "key_selector" and second["adopt"] is None
    assert "undecided (2 of 3 seeds)" in harder.candidates_markdown(by_key, plan)
    by_key[cand] = _harder_row([(63, -2, 66), (61, 0, 64), (59, -3, 62)])  # ΔMFN +1, ΔBWT -1.67
    row = harder.candidate_verdicts(by_key, plan)[0]
    assert row["adopt"] is True and row["gaps"]["mfn"][0] == pytest.approx(1.0)
    text = harder.candidates_markdown(by_key, plan)
    assert "| `key_selector` | `dymoe_seqbank` | 1.0 ± " in text and "| adopted |" in text
    assert "Adopted: `key_selector`" in text
    # candidate 2 is judged against key_selector, the dymoe_plus of its day, and replaces it only when adopted
    anchored = cands[1].key
    by_key[anchored] = _harder_row([(64, -1, 67), (62, -1, 65), (60, -4, 63)])  # ΔMFN +1, ΔBWT -0.33
    second = harder.candidate_verdicts(by_key, plan)[1]
    assert second["adopt"] is True and second["gaps"]["mfn"][0] == pytest.approx(1.0)
    assert "Adopted: `anchored_keys`" in harder.candidates_markdown(by_key, plan)
    by_key[anchored] = _harder_row([(62, -2, 67), (60, 0, 65), (58, -3, 63)])  # ΔMFN -1: rejected
    assert harder.candidate_verdicts(by_key, plan)[1]["adopt"] is False
    assert "Adopted: `key_selector`" in harder.candidates_markdown(by_key, plan)
    by_key[cand] = _harder_row([(63, -3, 66), (61, -1, 64), (59, -5, 62)])  # ΔBWT -3: more than 2 points lower
    assert harder.candidate_verdicts(by_key, plan)[0]["adopt"] is False
    by_key[anchored] = _harder_row([(64, -1, 67), (62, -1, 65), (60, -4, 63)])
    assert "Adopted:" not in harder.candidates_markdown(by_key, plan)  # its recipe of reference was never adopted
    by_key[cand] = _harder_row([(60, 0, 66), (62, 2, 64), (58, -2, 62)])  # ΔMFN 0: not higher
    assert harder.candidate_verdicts(by_key, plan)[0]["adopt"] is False
    assert harder.candidates_markdown(by_key, build_plan(["harder"])) == ""
