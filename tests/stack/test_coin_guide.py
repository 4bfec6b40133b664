"""docs/coin.md cannot rot: every fenced bash block of the guide is run or checked here.

On a miniature CoIN data root (``coin_mini``: CoIN's folder names and file formats, 3 training
samples and 2 test questions per task) and the tiny embedded model, in the guide's order:

* ``run`` blocks run as written (``llava-dymoe`` is ``python -m llava_dymoe.console``);
* ``run-gpu`` blocks are recorded, parsed by the real ``run`` parser, and the first one then runs
  for real on one CPU process: ``--launcher deepspeed --deepspeed ... --num-gpus N`` becomes
  ``--launcher python``, flash-attention is dropped, and ``--stages 1`` with one training step
  keeps it short;
* ``parse`` blocks (the multi-GPU ``deepspeed`` lines) are recorded; every flag must exist in
  ``llava-dymoe train --help``;
* ``external`` blocks (downloads, installs) only call the programs listed in EXTERNAL.

Placeholders: the guide's settings block (``DATA``, ``OUT``, ``NGPU``, ``BASE``, ``CLIP``, ``PROJ``)
gets the test's values; ``CKPT`` of the by-hand evaluation points at stage 1, the one stage trained.
"""
import json
import os
import re
import shlex
import subprocess
import sys
import time

import pytest
import yaml
from coin_mini import write_coin_mini

from llava_dymoe import cli
from llava_dymoe.eval.suite import load_suite
from llava_dymoe.protocol.layout import RunLayout

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GUIDE = os.path.join(REPO, "docs", "coin.md")
SUITE = os.path.join(REPO, "eval_suites", "coin.yaml")
SETTINGS = ("DATA", "OUT", "NGPU", "BASE", "CLIP", "PROJ")
EXTERNAL = {"pip", "huggingface-cli", "mkdir", "wget", "unzip"}
KINDS = {"run", "run-gpu", "parse", "external", "settings"}
#: what the real run of the first run-gpu block adds, to train one step of stage 1 on a CPU
CPU_RUN = ["--stages", "1", "--train-arg", "max_steps=1", "--train-arg", "bf16=False", "--train-arg", "tf32=False",
           "--train-arg", "dataloader_num_workers=0", "--train-arg", "model_max_length=512",
           "--dymoe-arg", "experts_per_task=2", "--threads", "1", "--no-plot"]
GPU_ONLY = {"--deepspeed": 1, "--num-gpus": 1}


def guide_blocks(guide=GUIDE, kinds=KINDS):
    """``[(kind, text)]`` of the guide's bash blocks, in order; every bash block carries a kind
    (docs/ucit.md's test reads its guide with this too)."""
    text = open(guide, encoding="utf-8").read()
    blocks = []
    for m in re.finditer(r"(?:<!-- guide-test: ([\w-]+)[^>]*-->\n)?```bash\n(.*?)```", text, re.S):
        assert m.group(1) in kinds, (f"a bash block of docs/{os.path.basename(guide)} has no (known) guide-test "
                                     f"kind:\n{m.group(2)}")
        blocks.append((m.group(1), m.group(2)))
    return blocks


def commands(block):
    """Shell commands of a block (continuation lines joined, comments dropped)."""
    joined = re.sub(r"\\\n\s*", " ", block)
    return [line.split(" #")[0].strip() for line in joined.splitlines() if line.strip() and
            not line.strip().startswith("#")]


def test_guide_blocks_are_tagged_and_external_ones_only_download_or_install():
    blocks = guide_blocks()
    kinds = [k for k, _ in blocks]
    assert kinds.count("settings") == 1 and kinds.count("run-gpu") >= 1 and kinds.count("parse") >= 1
    assert external_programs(blocks) <= EXTERNAL


def external_programs(blocks):
    """The programs the ``external`` blocks call (each command, split at ``&&``)."""
    return {shlex.split(part)[0] for kind, block in blocks if kind == "external"
            for cmd in commands(block) for part in re.split(r"&&", cmd)}


def test_guide_settings_layout_and_batch_table_match_the_suite():
    block = next(b for k, b in guide_blocks() if k == "settings")
    settings = dict(re.findall(r"^export (\w+)=(\S+)", block, re.M))
    assert tuple(settings) == SETTINGS
    text = open(GUIDE, encoding="utf-8").read()
    layout = text.split("```text\n", 1)[1].split("```", 1)[0]
    for task in yaml.safe_load(open(SUITE))["tasks"]:
        folder = os.path.basename(os.path.dirname(task["annotation_file"]))
        assert task["train_json"] == f"Instructions_Original/{folder}/train.json"
        assert re.search(rf"\b{folder}/train\.json\s+{os.path.basename(task['annotation_file'])}\b", layout), folder
        if task.get("official_answers"):
            assert task["official_answers"].split("/", 1)[1] in layout
    rows = re.findall(r"^\| (\d+)(?: \([^)]*\))? \| (\d+) \| (\d+) \| (\d+) × (\d+) × (\d+) = 128 \|$", text, re.M)
    assert len(rows) >= 4
    for gpus, bs, acc, *product in rows:
        assert product == [bs, acc, gpus] and int(bs) * int(acc) * int(gpus) == 128


def _tiny_projector(tiny, path):
    import torch

    g = torch.Generator().manual_seed(0)
    h, c = tiny.sizes.hidden_size, tiny.sizes.clip_hidden_size
    torch.save({"model.mm_projector.0.weight": torch.randn(h, c, generator=g) * 0.02,
                "model.mm_projector.0.bias": torch.zeros(h),
                "model.mm_projector.2.weight": torch.randn(h, h, generator=g) * 0.02,
                "model.mm_projector.2.bias": torch.zeros(h)}, path)
    return path


class Shell:
    """Runs guide blocks one after another in bash, keeping exported variables between them."""

    def __init__(self, tmp, values):
        self.tmp, self.state, self.record = tmp, tmp / "state.sh", tmp / "recorded.jsonl"
        self.state.write_text("".join(f"export {k}={shlex.quote(str(v))}\n" for k, v in values.items()))
        self.env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"],
                    "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.env.pop("LLAVA_DYMOE_DEBUG", None)
        py = shlex.quote(sys.executable)
        self.real = f'llava-dymoe() {{ {py} -m llava_dymoe.console "$@"; }}\n'
        recorder = f'{py} -c "import json, sys; print(json.dumps(sys.argv[1:]))"'
        self.recording = (f'llava-dymoe() {{ {recorder} llava-dymoe "$@" >> {shlex.quote(str(self.record))}; }}\n'
                          f'deepspeed() {{ {recorder} deepspeed "$@" >> {shlex.quote(str(self.record))}; }}\n')

    def __call__(self, block, record=False):
        if self.record.exists():
            self.record.unlink()
        script = (f"set -euo pipefail\nsource {shlex.quote(str(self.state))}\n" +
                  (self.recording if record else self.real) + block +
                  f"\nexport -p | grep -v ' \\(BASHOPTS\\|BASH_VERSINFO\\|EUID\\|PPID\\|SHELLOPTS\\|UID\\)=' "
                  f"> {shlex.quote(str(self.state))}\n")
        res = subprocess.run(["bash", "-c", script], cwd=REPO, env=self.env, capture_output=True, text=True,
                             timeout=300)
        assert res.returncode == 0, f"guide block failed ({res.returncode}):\n{block}\n{res.stdout[-3000:]}\n" \
                                    f"{res.stderr[-4000:]}"
        recorded = [json.loads(line) for line in self.record.read_text().splitlines()] if record else []
        return res, recorded


def _train_flags(shell):
    res, _ = shell("llava-dymoe train --help")
    return set(re.findall(r"(--\w+)", res.stdout)) | {"--attn_implementation"}


def _check_run_argv(argv):
    """A recorded ``llava-dymoe run`` line parses with the real parser; returns the namespace."""
    assert argv[:2] == ["llava-dymoe", "run"], argv
    return cli.build_parser(argv[1:]).parse_args(argv[1:])


def _cpu_run(argv):
    """The recorded multi-GPU ``run`` line, made to run one step of stage 1 in one CPU process."""
    out, i = [], 2
    while i < len(argv):
        flag = argv[i]
        if flag in GPU_ONLY:
            i += 1 + GPU_ONLY[flag]
            continue
        if flag == "--launcher":
            out += ["--launcher", "python"]
            i += 2
            continue
        if flag == "--train-arg" and argv[i + 1].startswith("attn_implementation="):
            i += 2
            continue
        out.append(flag)
        i += 1
    return ["run", *out, *CPU_RUN]


def test_every_command_of_the_guide_on_a_miniature_coin(tiny, tmp_path):
    start = time.perf_counter()
    data = write_coin_mini(tmp_path / "coin")
    out = tmp_path / "runs" / "coin_dymoe"
    values = {"DATA": data, "OUT": out, "NGPU": 8, "BASE": tiny.llm, "CLIP": tiny.clip,
              "PROJ": _tiny_projector(tiny, tmp_path / "mm_projector.bin")}
    shell = Shell(tmp_path, values)
    last = RunLayout(str(out), "dymoe").checkpoint_dir(8, load_suite(SUITE).tasks[-1].name)
    first = RunLayout(str(out), "dymoe").checkpoint_dir(1, load_suite(SUITE).tasks[0].name)
    train_flags = None
    ran_gpu_run = False
    seen = []
    for kind, block in guide_blocks():
        if kind in ("external", "settings"):
            continue
        seen.append(kind)
        if kind == "run":
            if "export CKPT=" in block:  # the by-hand evaluation: the one stage this test trained
                assert f"$OUT/checkpoints/{os.path.basename(last)}" in block
                block = block.replace(os.path.basename(last), os.path.basename(first))
            res, _ = shell(block)
            if "llava-dymoe --version" in block:
                assert "llava-torch: " in res.stdout and "GPU: " in res.stdout
            if "convert-coin" in block:
                lines = [json.loads(line) for line in res.stdout.splitlines()]
                assert len(lines) == 8 and all(r["n"] == 2 for r in lines) and "warning" not in res.stdout
                assert next(r for r in lines if r["task"] == "TextVQA")["n_official_answers"] == 2
            if "check-data" in block:
                assert res.stdout.count("0 error(s), 0 warning(s)") == 2, res.stdout
            if "len(json.load" in block:
                assert res.stdout.split() == [w for t in ("ScienceQA", "TextVQA", "ImageNet", "GQA", "VizWiz",
                                                          "Grounding", "VQAv2", "OCRVQA") for w in (t, "3")]
            if "llava-dymoe metrics" in block:
                assert '"mfn"' in res.stdout and (out / "report" / "report.md").is_file()
            if "llava-dymoe score" in block:
                assert '"score"' in res.stdout
                assert (out / "by-hand" / "GQA.jsonl").is_file()
        elif kind == "run-gpu":
            _, recorded = shell(block, record=True)
            assert recorded and all(argv[:2] == ["llava-dymoe", "run"] for argv in recorded)
            for argv in recorded:
                args = _check_run_argv(argv)
                assert args.suite == "eval_suites/coin.yaml" and args.launcher == "deepspeed"
                assert args.num_gpus == 8 and args.deepspeed == "scripts/zero2.json"
                keys = dict(kv.split("=", 1) for kv in args.train_arg)
                bs, acc = int(keys["per_device_train_batch_size"]), int(keys["gradient_accumulation_steps"])
                assert bs * acc * args.num_gpus == 128
                train_flags = train_flags or _train_flags(shell)
                assert {f"--{k}" for k in keys} <= train_flags
            if not ran_gpu_run:  # the whole sequence's command, for real: one step of stage 1 on the CPU
                cpu = _cpu_run(recorded[0])
                res = subprocess.run([sys.executable, "-m", "llava_dymoe.console", *cpu], cwd=REPO, env=shell.env,
                                     capture_output=True, text=True, timeout=600)
                assert res.returncode == 0, res.stderr[-4000:]
                assert os.path.isfile(os.path.join(first, "dymoe_task.json"))
                assert (out / "matrix.csv").read_text().startswith("stage,ScienceQA,TextVQA")
                ran_gpu_run = True
        elif kind == "parse":
            _, recorded = shell(block, record=True)
            assert recorded
            train_flags = train_flags or _train_flags(shell)
            for argv in recorded:
                assert argv[:7] == ["deepspeed", "--num_gpus", "8", "--module", "llava_dymoe.train",
                                    "--deepspeed", "scripts/zero2.json"], argv
                flags = [a for a in argv[5:] if a.startswith("--")]
                assert set(flags) <= train_flags, set(flags) - train_flags
                assert "--dymoe_method" in flags and str(data) in " ".join(argv)
    assert ran_gpu_run and "parse" in seen
    print(f"docs/coin.md, every command: {time.perf_counter() - start:.1f} s")
