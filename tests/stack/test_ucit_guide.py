"""docs/ucit.md cannot rot: every fenced bash block of the guide is run or checked here.

On a miniature UCIT data root (``ucit_mini``: the authors' folder names and file formats, 3 training
samples and 2 test questions per task), in the guide's order:

* ``run`` blocks run as written (``llava-dymoe`` is ``python -m llava_dymoe.console``);
* ``run-gpu`` blocks are recorded and parsed by the real ``run`` parser; the slow test also runs the
  first one for real on one CPU process (one training step of stage 1 with the tiny model);
* ``after-run`` blocks run on a run folder this test fills: the answers files they name and a 6 x 6
  ``matrix.csv`` / ``matrix_clean.csv`` written by hand (a caption cell above 100, as CIDEr-D allows);
* ``external`` blocks (downloads, installs) only call the programs listed in EXTERNAL.
"""
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
from test_coin_guide import Shell, _cpu_run, _tiny_projector, external_programs
from test_coin_guide import guide_blocks as coin_guide_blocks
from ucit_mini import write_ucit_mini

from llava_dymoe import cli
from llava_dymoe.eval.suite import load_suite
from llava_dymoe.protocol.layout import RunLayout

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GUIDE = os.path.join(REPO, "docs", "ucit.md")
SUITE = os.path.join(REPO, "eval_suites", "ucit.yaml")
SETTINGS = ("DATA", "OUT", "NGPU", "BASE", "CLIP", "PROJ")
EXTERNAL = {"pip", "huggingface-cli", "mkdir", "sudo"}
KINDS = {"run", "run-gpu", "after-run", "external", "settings"}
TASKS = ["ImageNet-R", "ArxivQA", "VizWiz-Caption", "IconQA", "CLEVR-Math", "Flickr30k"]


def guide_blocks():
    return coin_guide_blocks(GUIDE, KINDS)


def test_blocks_are_tagged_settings_and_layout_match_the_suite():
    blocks = guide_blocks()
    kinds = [k for k, _ in blocks]
    assert kinds.count("settings") == 1 and kinds.count("run-gpu") >= 1 and kinds.count("after-run") >= 1
    assert external_programs(blocks) <= EXTERNAL
    settings = dict(re.findall(r"^export (\w+)=(\S+)", next(b for k, b in blocks if k == "settings"), re.M))
    assert tuple(settings) == SETTINGS
    layout = open(GUIDE, encoding="utf-8").read().split("```text\n", 1)[1].split("```", 1)[0]
    suite = load_suite(SUITE)
    assert suite.task_names == TASKS
    for task in suite.tasks:
        folder, train = task.train_json.split("/")[1:]
        names = [train, "test_3000.json"] + (["val_coco_type_3000.json"] if task.coco_captions else [])
        assert re.search(rf"\b{re.escape(folder)}/" + r"\s+".join(map(re.escape, names)) + r"\s*$", layout, re.M), \
            folder
        assert task.annotation_file == f"instructions/{folder}/test_3000.json"


def _fill_run(out, data):
    """What the after-run blocks read: two answers files of stage 6 and both matrices (by hand)."""
    layout = RunLayout(str(out), "dymoe")
    for task, texts in (("Flickr30k", ["two men play soccer", "a woman in a red dress"]), ("CLEVR-Math", ["2", "zero"])):
        path = os.path.join(layout.eval_dir(6, "Flickr30k", task), "answers.jsonl")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        qids = [json.loads(line)["question_id"]
                for line in open(os.path.join(data, "converted", task, "questions.jsonl"))]
        with open(path, "w") as f:
            f.writelines(json.dumps({"question_id": q, "text": t}) + "\n" for q, t in zip(qids, texts))
    rows = [[80, None, None, None, None, None], [70, 60, None, None, None, None], [65, 50, 110, None, None, None],
            [60, 45, 100, 55, None, None], [58, 40, 95, 50, 70, None], [55, 38, 90, 45, 60, 80]]
    for name, shift in (("matrix.csv", 0), ("matrix_clean.csv", 5)):
        lines = ["stage," + ",".join(TASKS)]
        for t, row in enumerate(rows, start=1):
            lines.append(f"{layout.stage_name(t, TASKS[t - 1])}," +
                         ",".join("" if v is None else str(v + shift) for v in row))
        (out / name).write_text("\n".join(lines) + "\n")


@pytest.mark.skipif(shutil.which("java") is None, reason="the guide's caption scoring needs Java")
def test_every_command_of_the_guide_on_a_miniature_ucit(tmp_path):
    pytest.importorskip("pycocoevalcap")
    data = write_ucit_mini(tmp_path / "ucit")
    out = tmp_path / "runs" / "ucit_dymoe"
    shell = Shell(tmp_path, {"DATA": data, "OUT": out, "NGPU": 8, "BASE": "base", "CLIP": "clip", "PROJ": "proj"})
    seen = []
    for kind, block in guide_blocks():
        if kind in ("external", "settings"):
            continue
        seen.append(kind)
        if kind == "run":
            res, _ = shell(block)
            if "java -version" in block:
                assert "pycocoevalcap ok" in res.stdout
            if "convert-ucit" in block:
                lines = [json.loads(line) for line in res.stdout.splitlines()]
                assert [r["task"] for r in lines] == TASKS and all(r["n"] == 2 for r in lines)
            if "check-data" in block:
                counts = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
                assert [c["test"] for c in counts] == [2] * 6 and "0 error(s), 9 warning(s)" in res.stdout
        elif kind == "run-gpu":
            _, recorded = shell(block, record=True)
            assert recorded and all(argv[:2] == ["llava-dymoe", "run"] for argv in recorded)
            for argv in recorded:
                args = cli.build_parser(argv[1:]).parse_args(argv[1:])
                assert args.suite == "eval_suites/ucit.yaml" and args.num_gpus == 8
                keys = dict(kv.split("=", 1) for kv in args.train_arg)
                assert int(keys["per_device_train_batch_size"]) * int(keys["gradient_accumulation_steps"]) * 8 == 128
        else:  # after-run
            if not (out / "matrix.csv").exists():
                _fill_run(out, data)
            res, _ = shell(block)
            if "llava-dymoe metrics" in block:
                mfn = [json.loads(line)["mfn"] for line in res.stdout.splitlines() if line.startswith("{")]
                assert mfn == [pytest.approx((55 + 38 + 90 + 45 + 60 + 80) / 6),
                               pytest.approx((55 + 38 + 90 + 45 + 60 + 80) / 6 + 5)]
                assert (out / "report" / "report.md").is_file()
            if "llava-dymoe score" in block:
                caption, clevr = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
                assert caption["scorer"] == "ucit_caption" and set(caption["metrics"]) >= {"Bleu_4", "CIDEr"}
                assert clevr["scorer"] == "ucit_exact" and clevr["score"] == 50.0  # "2" right, "zero" != "0"
    assert seen.count("after-run") == 2 and "run-gpu" in seen


@pytest.mark.slow
def test_the_guides_run_command_trains_and_scores_stage_1_on_a_cpu(tiny, tmp_path):
    data = write_ucit_mini(tmp_path / "ucit")
    out = tmp_path / "runs" / "ucit_dymoe"
    shell = Shell(tmp_path, {"DATA": data, "OUT": out, "NGPU": 8, "BASE": tiny.llm, "CLIP": tiny.clip,
                             "PROJ": _tiny_projector(tiny, tmp_path / "mm_projector.bin")})
    shell(next(b for k, b in guide_blocks() if k == "run" and "convert-ucit" in b))
    _, recorded = shell(next(b for k, b in guide_blocks() if k == "run-gpu"), record=True)
    res = subprocess.run([sys.executable, "-m", "llava_dymoe.console", *_cpu_run(recorded[0])], cwd=REPO,
                         env=shell.env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-4000:]
    assert (out / "matrix.csv").read_text().startswith("stage," + ",".join(TASKS))
    assert (out / "matrix_clean.csv").is_file()
    score = json.load(open(os.path.join(RunLayout(str(out), "dymoe").eval_dir(1, "ImageNet-R", "ImageNet-R"),
                                        "score.json")))
    assert score["scorer"] == "ucit_exact" and score["n"] == 2
