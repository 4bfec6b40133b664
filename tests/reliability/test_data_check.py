"""The data pre-flight: one test per fault, every problem in one run, the command, and where it runs
automatically (``llava_dymoe.train`` and ``cli run``) before any model loads."""
import json
import os

import pytest

from llava_dymoe.cli import main as cli
from llava_dymoe.integration.data_check import check_question_file, check_training_data
from llava_dymoe.integration.data_lengths import check_lengths
from llava_dymoe.integration.data_report import KINDS

from reliability_helpers import run_module, tree_hashes


def _load(data):
    return json.load(open(data.train_json))


def _save(data, samples):
    with open(data.train_json, "w") as f:
        json.dump(samples, f)


def _only(report, kind):
    assert not report.ok and {p.kind for p in report.errors} == {kind}, report.format()
    return report.errors


# ----------------------------------------------------------------------------- clean data passes
def test_smoke_data_passes(data):
    report = check_training_data(data.train_json, data.image_folder)
    assert report.ok and not report.problems and report.samples == 8 and report.images == 8
    assert check_question_file(data.questions, data.image_folder).ok


def test_synthetic_suite_and_base_mixture_pass(tmp_path):
    from llava_dymoe.eval.suite import load_suite
    from llava_dymoe.protocol.preflight import check_suite_data
    from llava_dymoe.synthetic.base import write_base_mixture
    from llava_dymoe.synthetic.generate import generate_suite

    s = generate_suite(str(tmp_path / "syn"), seed=0, n_train=6, n_test=3)
    report = check_suite_data(load_suite(s.suite_yaml, data_root=s.root))
    assert report.ok and not report.problems and report.samples == 5 * (6 + 3)
    mixture = write_base_mixture(str(tmp_path / "base"), 0, 4, 2, 64)
    report = check_training_data(mixture, str(tmp_path / "base" / "images"))
    assert report.ok and not report.problems, report.format()


# ----------------------------------------------------------------------------- one test per fault
def test_truncated_json_names_file_line_and_column(data):
    text = open(data.train_json).read()
    open(data.train_json, "w").write(text[: len(text) // 2])
    (problem,) = _only(check_training_data(data.train_json, data.image_folder), "invalid JSON")
    assert problem.file == data.train_json and "line " in problem.detail and "column " in problem.detail


def test_empty_list_and_not_a_list(data):
    _save(data, [])
    (p,) = _only(check_training_data(data.train_json, data.image_folder), "empty")
    assert p.detail == "0 samples"
    _save(data, {"conversations": []})
    _only(check_training_data(data.train_json, data.image_folder), "not a list")


def test_missing_file(tmp_path):
    (p,) = _only(check_training_data(str(tmp_path / "nope.json"), str(tmp_path)), "missing file")
    assert p.file.endswith("nope.json")


def test_sample_without_conversations(data):
    samples = _load(data)
    del samples[5]["conversations"]
    _save(data, samples)
    (p,) = _only(check_training_data(data.train_json, data.image_folder), "bad conversations")
    assert p.index == 5 and "'conversations' is missing" in p.detail


@pytest.mark.parametrize("turns, expected", [
    ([{"from": "gpt", "value": "x"}, {"from": "human", "value": "<image>\nq"}], "expected 'human'"),
    ([{"from": "human", "value": "<image>\nq"}, {"from": "human", "value": "a"}], "expected 'gpt'"),
    ([{"from": "user", "value": "<image>\nq"}, {"from": "gpt", "value": "a"}], "is not {from: human|gpt"),
    ([{"from": "human", "value": "<image>\nq"}], "no gpt answer"),
    ([{"from": "human", "value": None}, {"from": "gpt", "value": "a"}], "is not {from: human|gpt"),
])
def test_bad_turns(data, turns, expected):
    samples = _load(data)
    samples[2]["conversations"] = turns
    _save(data, samples)
    (p,) = _only(check_training_data(data.train_json, data.image_folder), "bad conversations")
    assert p.index == 2 and expected in p.detail


def test_missing_image(data):
    os.remove(os.path.join(data.image_folder, "00003.png"))
    (p,) = _only(check_training_data(data.train_json, data.image_folder), "missing image")
    assert p.index == 3 and "00003.png does not exist" in p.detail


def test_image_path_that_is_a_folder(data):
    os.remove(os.path.join(data.image_folder, "00003.png"))
    os.mkdir(os.path.join(data.image_folder, "00003.png"))
    (p,) = _only(check_training_data(data.train_json, data.image_folder), "missing image")
    assert p.index == 3 and p.detail.endswith("00003.png is a folder, not an image file")


def test_wrong_image_folder(data, tmp_path):
    (p,) = _only(check_training_data(data.train_json, str(tmp_path / "elsewhere")), "missing image")
    assert "8 image(s) referenced" in p.detail and "is not a directory" in p.detail


def test_file_that_is_not_an_image(data):
    open(os.path.join(data.image_folder, "00004.png"), "w").write("<html>404</html>")
    (p,) = _only(check_training_data(data.train_json, data.image_folder), "unreadable image")
    assert p.index == 4 and "UnidentifiedImageError" in p.detail


def test_truncated_image(data):
    path = os.path.join(data.image_folder, "00001.png")
    raw = open(path, "rb").read()
    open(path, "wb").write(raw[: len(raw) // 2])
    (p,) = _only(check_training_data(data.train_json, data.image_folder), "unreadable image")
    assert p.index == 1


@pytest.mark.parametrize("edit, expected", [
    (lambda s: s["conversations"][0].update(value="What color?"), "has an image but 0 '<image>' token(s)"),
    (lambda s: s["conversations"][0].update(value="<image>\n<image>\nWhat?"), "has an image but 2"),
    (lambda s: s["conversations"][1].update(value="<image> red"), "has an image but 2"),
    (lambda s: s.pop("image"), "has no image but 1 '<image>' token(s)"),
])
def test_image_token_where_an_image_is_given(data, edit, expected):
    samples = _load(data)
    edit(samples[6])
    _save(data, samples)
    (p,) = _only(check_training_data(data.train_json, data.image_folder), "image token")
    assert p.index == 6 and expected in p.detail


def test_bad_image_field(data):
    samples = _load(data)
    samples[0]["image"] = ["a.png", "b.png"]
    _save(data, samples)
    (p,) = _only(check_training_data(data.train_json, data.image_folder), "bad image field")
    assert p.index == 0


def test_text_only_sample_is_fine(data):
    samples = _load(data)
    samples.append({"id": "text-only", "conversations": [{"from": "human", "value": "Hi?"},
                                                         {"from": "gpt", "value": "Hello."}]})
    _save(data, samples)
    assert check_training_data(data.train_json, data.image_folder).problems == []


def test_duplicate_and_missing_ids_are_warnings_for_training_data(data):
    samples = _load(data)
    samples[3]["id"] = samples[1]["id"]
    del samples[4]["id"]
    _save(data, samples)
    report = check_training_data(data.train_json, data.image_folder)
    assert report.ok and report.counts() == {"duplicate id": 1, "missing id": 1}
    dup = next(p for p in report.warnings if p.kind == "duplicate id")
    assert dup.index == 3 and "also at sample 1" in dup.detail


def test_question_file_faults_are_errors(data):
    rows = [json.loads(line) for line in open(data.questions)]
    rows[1]["question_id"] = rows[0]["question_id"]
    del rows[2]["text"]
    rows[3]["image"] = "gone.png"
    open(data.questions, "w").writelines(json.dumps(r) + "\n" for r in rows)
    report = check_question_file(data.questions, data.image_folder)
    assert report.counts() == {"bad question id": 1, "bad question": 1, "missing image": 1} and len(report.errors) == 3
    text = report.format()  # each group's header says what its problem is
    assert "error bad question id x1: every question needs its own id" in text
    assert "error bad question x1: a question needs its text" in text
    open(data.questions, "a").write("{not json\n")
    (p,) = _only(check_question_file(data.questions, data.image_folder), "invalid JSON")
    assert p.detail.startswith("line 5 column")


def test_science_question_file(data, tmp_path):
    path = tmp_path / "questions.json"
    path.write_text(json.dumps([{"id": "q1", "image": "00000.png", "conversations": [{"from": "human", "value": "Q"}]},
                                {"id": "q2", "conversations": []}]))
    report = check_question_file(str(path), data.image_folder, "science_json")
    assert [(p.kind, p.index) for p in report.problems] == [("bad question", 1)]


class _WordTokenizer:
    """Stands in for a tokenizer: one token per whitespace-separated word (+1 for BOS)."""

    def __call__(self, texts, add_special_tokens=True):
        return {"input_ids": [[0] * (len(t.split()) + 1) for t in texts]}


def test_prompt_too_long_for_model_max_length(data):
    samples = _load(data)
    samples[7]["conversations"][1]["value"] = "word " * 400
    short = check_lengths(samples, data.train_json, _WordTokenizer(), model_max_length=300, image_tokens=16)
    assert [(p.kind, p.index) for p in short] == [("too long", 7)]
    assert "> model_max_length 300" in short[0].detail
    assert check_lengths(samples, data.train_json, _WordTokenizer(), model_max_length=1000, image_tokens=16) == []
    # samples whose byte count already fits are not tokenised: the tokenizer is not even loaded
    assert check_lengths(samples, data.train_json, "no/such-tokenizer", model_max_length=4000) == []


# ----------------------------------------------------------------------------- every problem, one run
def test_every_problem_is_reported_grouped_and_counted(data):
    samples = _load(data)
    for i in (0, 1, 2, 3, 4):
        samples[i]["image"] = f"missing-{i}.png"
    del samples[5]["conversations"]
    samples[6]["conversations"][0]["value"] = "no token"
    _save(data, samples)
    report = check_training_data(data.train_json, data.image_folder)
    assert report.counts() == {"missing image": 5, "bad conversations": 1, "image token": 1}
    text = report.format(max_examples=2)
    assert "error missing image x5" in text and "... and 3 more" in text
    assert f"{data.train_json} sample 0: " in text and f"{data.train_json} sample 5: " in text
    assert text.index("missing image") < text.index("image token")  # grouped in KINDS order
    assert set(report.to_dict()["counts"]) <= set(KINDS)


# ----------------------------------------------------------------------------- the command
def test_check_data_command(data, capsys, tmp_path):
    assert cli(["check-data", "--data_path", data.train_json, "--image_folder", data.image_folder]) == 0
    assert "0 error(s)" in capsys.readouterr().out
    os.remove(os.path.join(data.image_folder, "00002.png"))
    before = tree_hashes(data.root)
    out_json = tmp_path / "report.json"
    assert cli(["check-data", "--data-path", data.train_json, "--image-folder", data.image_folder,
                "--json", str(out_json)]) == 1
    assert "error missing image x1" in capsys.readouterr().out
    assert json.load(open(out_json))["counts"] == {"missing image": 1}
    assert tree_hashes(data.root) == before
    assert cli(["check-data", "--image_folder", data.image_folder]) == 2
    assert "needs either --data_path" in capsys.readouterr().err


def test_check_data_suite_and_strict(data, capsys, tmp_path):
    suite = tmp_path / "suite.yaml"
    suite.write_text("name: s\ndefaults:\n  image_root: images\n  generator: llava.eval.model_vqa_loader\n"
                     "  scorer: contains\ntasks:\n" + "".join(
                         f"  - name: {n}\n    train_json: train.json\n    question_file: questions.jsonl\n"
                         f"    annotation_file: questions.jsonl\n    reference_file: answers_ref.jsonl\n"
                         for n in "AB"))
    argv = ["check-data", "--suite", str(suite), "--data-root", data.root]
    assert cli(argv) == 0
    samples = _load(data)
    samples[1]["id"] = samples[0]["id"]
    _save(data, samples)
    assert cli(argv) == 0 and cli(argv + ["--strict"]) == 1
    out = capsys.readouterr().out
    assert "warning duplicate id x1" in out  # both tasks train on the same file: checked and listed once


# ----------------------------------------------------------------------------- automatic: training entry
def _train_argv(data, out):
    return ["--model_name_or_path", "no/such-model", "--data_path", data.train_json, "--image_folder",
            data.image_folder, "--output_dir", out]


def test_training_entry_refuses_bad_data_before_loading(data, tmp_path):
    del_ = _load(data)
    del del_[3]["conversations"]
    _save(data, del_)
    os.remove(os.path.join(data.image_folder, "00005.png"))
    before = tree_hashes(data.root)
    out = tmp_path / "out"
    res = run_module("llava_dymoe.train", *_train_argv(data, out))
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert "Traceback" not in res.stderr and lines[-1].startswith("error: the data check found 2 problem(s)")
    assert sum(line.startswith("error:") for line in lines) == 1 and "--skip_data_check" in lines[-1]
    assert f"{data.train_json} sample 3" in res.stderr and f"{data.train_json} sample 5" in res.stderr
    assert not out.exists() and tree_hashes(data.root) == before
    debug = run_module("llava_dymoe.train", *_train_argv(data, out), env={"LLAVA_DYMOE_DEBUG": "1"})
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "DataError" in debug.stderr


def test_skip_data_check_flag(data, tmp_path):
    from llava_dymoe.trainer.preflight import training_preflight

    open(data.train_json, "w").write("[")
    out = str(tmp_path / "out")
    with pytest.raises(Exception, match="invalid JSON"):
        training_preflight(_train_argv(data, out))
    for flag in (["--skip_data_check"], ["--skip_data_check", "True"], ["--skip_data_check=true"]):
        rest = training_preflight(_train_argv(data, out) + flag)
        assert rest == _train_argv(data, out)  # our flag never reaches LLaVA's parser


def test_data_check_runs_on_rank_zero_only(data, tmp_path, monkeypatch):
    """Under a launcher world rank 0 checks for everyone (its refusal ends the others); rank 1 does not repeat it."""
    from llava_dymoe.trainer.preflight import training_preflight

    open(data.train_json, "w").write("[")
    monkeypatch.setenv("RANK", "1")
    assert training_preflight(_train_argv(data, str(tmp_path / "r1"))) == _train_argv(data, str(tmp_path / "r1"))
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(Exception, match="invalid JSON"):
        training_preflight(_train_argv(data, str(tmp_path / "r0")))


# ----------------------------------------------------------------------------- automatic: cli run
def _suite(tmp_path):
    path = tmp_path / "suite.yaml"
    path.write_text("name: s\ndefaults:\n  image_root: images\n  generator: llava.eval.model_vqa_loader\n"
                    "  scorer: contains\ntasks:\n  - name: A\n    train_json: train.json\n"
                    "    question_file: questions.jsonl\n    annotation_file: questions.jsonl\n"
                    "    reference_file: answers_ref.jsonl\n")
    return str(path)


def _run_argv(suite, data, out):
    return ["run", "--suite", suite, "--data-root", data.root, "--method", "dymoe", "--output-dir", str(out),
            "--base", "org/base-llm", "--vision-tower", "org/clip", "--no-plot"]


def test_cli_run_refuses_bad_data_before_the_first_stage(data, tmp_path, capsys):
    samples = _load(data)
    samples[2]["conversations"][0]["value"] = "no image token"
    _save(data, samples)
    before = tree_hashes(data.root)
    out = tmp_path / "run"
    assert cli(_run_argv(_suite(tmp_path), data, out)) == 2
    err = capsys.readouterr().err
    assert "error image token x1" in err and err.strip().splitlines()[-1].startswith("error: the data check found 1")
    assert "--skip-data-check" in err
    assert not out.exists() and tree_hashes(data.root) == before


def test_cli_run_skip_data_check_and_stage_commands(data, tmp_path, monkeypatch):
    from llava_dymoe.protocol import launch, runner
    from llava_dymoe.protocol.options import RunOptions

    open(data.train_json, "w").write("[")
    reached = []
    monkeypatch.setattr(runner, "_run_stages", lambda *a, **k: reached.append(True) or (_ for _ in ()).throw(
        KeyboardInterrupt()))
    out = tmp_path / "run"
    assert cli(_run_argv(_suite(tmp_path), data, out) + ["--skip-data-check"]) == 130
    assert reached == [True]
    opts = RunOptions(suite="s", data_root=data.root, method="dymoe", output_dir=str(out), base="b",
                      vision_tower="v")
    from llava_dymoe.eval.suite import load_suite

    task = load_suite(_suite(tmp_path), data_root=data.root).tasks[0]
    cmd, _ = launch.train_command(opts, task, 1, str(out / "ckpt"), None, {})
    assert cmd[cmd.index("--skip_data_check") + 1] == "True"  # the runner checked every stage already


def test_a_missing_shared_image_is_a_problem_of_every_sample_using_it(data):
    samples = _load(data)
    for i in (1, 4, 6):
        samples[i]["image"] = "shared-but-gone.png"
    _save(data, samples)
    report = check_training_data(data.train_json, data.image_folder)
    assert [p.index for p in _only(report, "missing image")] == [1, 4, 6] and report.images == 6


def test_check_data_length_pass_with_the_tiny_tokenizer(data, tiny, capsys):
    samples = _load(data)
    samples[3]["conversations"][1]["value"] = "The square is red. " * 60
    _save(data, samples)
    argv = ["check-data", "--data_path", data.train_json, "--image_folder", data.image_folder,
            "--tokenizer", tiny.llm, "--model_max_length", "256", "--image-tokens", "16"]
    assert cli(argv) == 1
    out = capsys.readouterr().out
    assert "error too long x1" in out and f"{data.train_json} sample 3: about " in out
    assert cli(argv[:-2]) == 1 and "error no answer left x8" in capsys.readouterr().out  # 576 per image > 256
    assert cli(["check-data", "--data_path", data.train_json, "--image_folder", data.image_folder,
                "--model_max_length", "256"]) == 2
    assert "--model_max_length needs --tokenizer" in capsys.readouterr().err


def test_truncated_jpeg_needs_decode_images(data, capsys):
    from PIL import Image

    path = os.path.join(data.image_folder, "photo.jpg")
    Image.effect_noise((256, 256), 64).convert("RGB").save(path, quality=95)  # header << scan data
    raw = open(path, "rb").read()
    open(path, "wb").write(raw[: len(raw) * 2 // 3])
    samples = _load(data)
    samples[2]["image"] = "photo.jpg"
    _save(data, samples)
    assert check_training_data(data.train_json, data.image_folder).ok  # verify() reads the header only
    (p,) = _only(check_training_data(data.train_json, data.image_folder, decode_images=True), "unreadable image")
    assert p.index == 2 and "truncated" in p.detail
    argv = ["check-data", "--data_path", data.train_json, "--image_folder", data.image_folder]
    assert cli(argv) == 0 and cli(argv + ["--decode-images"]) == 1
