"""The learnability check: majority baseline, and what each fine-tune mode runs (training and scoring stubbed)."""
import json
import os

import pytest

from llava_dymoe.integration import llava_args
from llava_dymoe.synthetic import learnability


def _references(path, answers):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        for i, a in enumerate(answers):
            f.write(json.dumps({"question_id": f"q{i}", "answer": a}) + "\n")


def test_majority_baseline_is_the_share_of_the_most_frequent_reference(tmp_path):
    path = str(tmp_path / "refs.jsonl")
    _references(path, ["B", "A", "B", "C", "B"])
    assert learnability.majority_baseline(path) == pytest.approx(60.0)
    _references(path, [[0.1, 0.2], [0.1, 0.2], "x", [0.2, 0.1]])  # boxes compare by value
    assert learnability.majority_baseline(path) == pytest.approx(50.0)


@pytest.fixture
def stubbed(tmp_path, monkeypatch):
    """A suite folder with choice's references; training and evaluation recorded instead of run."""
    suite, base = tmp_path / "suite", tmp_path / "base"
    _references(str(suite / "choice" / "references.jsonl"), ["A", "A", "B", "C"])
    calls = {"train": [], "eval": []}

    def fake_run(code_or_module, argv, module=False, **kw):
        calls["train"].append((code_or_module, module, list(argv)))

    def fake_eval(model_path, model_base, tasks, images, answers_dir=None, limit=None):
        calls["eval"].append((model_path, model_base))
        return {tasks[0].name: {"score": 75.0 if "zero" not in answers_dir else 0.0, "n": 4, "examples": []}}

    monkeypatch.setattr(llava_args, "run_python", fake_run)
    monkeypatch.setattr(learnability, "evaluate", fake_eval)
    return str(base), str(suite), str(tmp_path / "out"), calls


def test_plain_lora_runs_upstream_train_with_lora(stubbed):
    base, suite, out, calls = stubbed
    row = learnability.check_task(base, suite, "choice", out, steps=7)
    code, module, argv = calls["train"][0]
    assert code == llava_args.UPSTREAM_TRAIN and not module
    assert argv[argv.index("--lora_enable") + 1] == "True" and "--dymoe_method" not in argv
    assert argv[argv.index("--max_steps") + 1] == "7"
    assert argv[argv.index("--pretrain_mm_mlp_adapter") + 1] == os.path.join(os.path.abspath(base), "mm_projector.bin")
    assert (row["mode"], row["majority"], row["zero_shot"], row["trained"]) == ("lora", 50.0, 0.0, 75.0)
    assert calls["eval"][1] == (os.path.join(out, "llava-choice-lora"), os.path.join(os.path.abspath(base), "llm"))


def test_method_runs_stage_one_of_that_method(stubbed):
    base, suite, out, calls = stubbed
    row = learnability.check_task(base, suite, "choice", out, steps=7, method="incmoelora")
    code, module, argv = calls["train"][0]
    assert code == llava_args.DYMOE_TRAIN_MODULE and module
    assert "--lora_enable" not in argv
    i = argv.index("--dymoe_method")
    assert argv[i:i + 6] == ["--dymoe_method", "incmoelora", "--dymoe_task_id", "1", "--dymoe_train_projector", "False"]
    assert row["mode"] == "incmoelora"
    assert calls["eval"][1][0] == os.path.join(out, "llava-choice-incmoelora")


def test_method_errors(stubbed, capsys):
    base, suite, out, _ = stubbed
    with pytest.raises(ValueError, match="no_such_method.*known: .*incmoelora"):
        learnability.check_task(base, suite, "choice", out, method="no_such_method")
    with pytest.raises(ValueError, match="exclude each other"):
        learnability.check_task(base, suite, "choice", out, full=True, method="dymoe")
    with pytest.raises(SystemExit):
        learnability.main([base, suite, "--task", "choice", "--method", "no_such_method"])
    err = capsys.readouterr().err
    assert "no_such_method" in err and "incmoelora" in err  # names the known methods
    with pytest.raises(SystemExit):
        learnability.main([base, suite, "--task", "choice", "--method", "dymoe", "--full"])
    assert "exclude each other" in capsys.readouterr().err


def test_a_coin_shaped_task_trains_with_the_suite_model_max_length(stubbed):
    base, suite, out, calls = stubbed
    _references(os.path.join(suite, "ocrvqa", "references.jsonl"), ["lee", "bird"])
    learnability.check_task(base, suite, "choice", out, steps=3)  # no manifest: the default suite, its 256
    with open(os.path.join(suite, "synthetic.json"), "w") as f:
        json.dump({"name": "coin_shaped"}, f)
    row = learnability.check_task(base, suite, "ocrvqa", out, steps=3)
    default_argv, coin_argv = calls["train"][0][2], calls["train"][1][2]
    assert default_argv[default_argv.index("--model_max_length") + 1] == "256"
    assert coin_argv[coin_argv.index("--model_max_length") + 1] == "512"
    assert (row["task"], row["scorer"]) == ("ocrvqa", "exact")
