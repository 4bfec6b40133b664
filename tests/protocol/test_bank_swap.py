"""``protocol/bank_swap.py``: every task's test answered by every task's bank of a finished ``oracle_bank`` run.

The diagonal must reproduce the run's own final matrix row (the runner answered task i with bank i from the same
last checkpoint, greedy), each cell's job must carry its bank's task id, finished cells are kept, and runs that are
not told their bank, unfinished runs and unknown tasks are refused."""
import json
import os

import pytest

from smoke_suite import write_smoke_suite
from llava_dymoe.cli import main as cli
from llava_dymoe.integration.selector import TASK_ID_ENV
from llava_dymoe.protocol import bank_swap


@pytest.fixture(scope="module")
def oracle_run(tmp_path_factory, smoke_data, tiny):
    root = tmp_path_factory.mktemp("bank_swap")
    suite = write_smoke_suite(root / "two.yaml", "two", max_new_tokens=3)
    out = root / "run"
    argv = ["run", "--suite", suite, "--data-root", smoke_data.root, "--method", "oracle_bank",
            "--output-dir", str(out), "--base", tiny.llm, "--vision-tower", tiny.clip, "--threads", "1",
            "--train-arg", "max_steps=2", "--train-arg", "learning_rate=0.05",
            "--train-arg", "per_device_train_batch_size=4"]
    assert cli(argv) == 0
    return str(out)


def test_swap_matrix_diagonal_is_the_runs_final_row_and_cells_carry_their_bank(oracle_run):
    said = []
    report = bank_swap.swap_matrix(oracle_run, log=said.append)
    matrix = json.load(open(os.path.join(oracle_run, "matrix.json")))
    tasks = report["tasks"]
    assert tasks == matrix["tasks"] and len(tasks) == 2 and said and "4 of 4 cells" in said[0]
    for k, t in enumerate(tasks):
        assert report["score"][t][t] == pytest.approx(matrix["values"][-1][k])
    jobs = json.load(open(os.path.join(oracle_run, "bank_swap", "jobs.json")))
    assert len(jobs) == 4
    for job in jobs:  # task i's questions, answered into i's folder, with bank j's task id
        i, j = job["task"].split(" with bank ")
        argv = job["argv"]
        assert job["env"][TASK_ID_ENV] == str(tasks.index(j) + 1)
        assert argv[argv.index("--question-file") + 1].endswith("questions.jsonl")  # both smoke tasks share it
        assert argv[argv.index("--answers-file") + 1].endswith(os.path.join("bank_swap", i, f"bank_{tasks.index(j) + 1}_{j}",
                                                                           "answers.jsonl"))
    for i in tasks:
        for j in tasks:
            d = os.path.join(oracle_run, "bank_swap", i, f"bank_{tasks.index(j) + 1}_{j}")
            rec = json.load(open(os.path.join(d, "score.json")))
            assert rec["bank"] == j and rec["task"] == i and rec["score"] == report["score"][i][j]
    cost = report["cost"][tasks[0]]
    assert cost["cost_best_other"] == pytest.approx(report["score"][tasks[0]][tasks[0]] - report["score"][tasks[0]][tasks[1]])
    md = open(os.path.join(oracle_run, "bank_swap", "swap.md")).read()
    assert f"**{report['score'][tasks[1]][tasks[1]]:.1f}**" in md
    # finished cells are kept
    again = []
    assert bank_swap.swap_matrix(oracle_run, log=again.append)["score"] == report["score"] and not again


def test_wrong_bank_cost_against_a_hand_example():
    score = {"a": {"a": 60.0, "b": 50.0, "c": 20.0}, "b": {"a": 55.0, "b": 45.0, "c": 10.0},
             "c": {"a": 0.0, "b": 0.0, "c": 30.0}}
    cost = bank_swap.wrong_bank_cost(score, ["a", "b", "c"])
    assert cost["a"] == {"own": 60.0, "best_other": "b", "best_other_score": 50.0, "cost_best_other": 10.0,
                         "mean_cost": 25.0}
    assert cost["b"]["best_other"] == "a" and cost["b"]["cost_best_other"] == -10.0
    assert cost["c"]["best_other"] == "a" and cost["c"]["mean_cost"] == 30.0  # a tie goes to the earlier task


def test_refusals(oracle_run, tmp_path):
    with pytest.raises(ValueError, match="give two or more different tasks"):
        bank_swap.swap_matrix(oracle_run, tasks=["nope", "other"])
    with pytest.raises(FileNotFoundError, match="not a run folder"):
        bank_swap.swap_matrix(str(tmp_path))
    record = json.load(open(os.path.join(oracle_run, "run.json")))
    other = tmp_path / "dymoe_run"
    other.mkdir()
    json.dump({**record, "method": "dymoe"}, open(other / "run.json", "w"))
    with pytest.raises(ValueError, match="not told its bank"):
        bank_swap.swap_matrix(str(other))
    assert cli(["bank-swap", str(other)]) == 2


def test_checkpoint_task_reads_back_the_runners_checkpoint_names(tmp_path):
    """The task of a checkpoint folder, for the names the runner writes (task names with underscores and odd
    characters included) and None for other folders."""
    from llava_dymoe.protocol.layout import RunLayout, checkpoint_task, safe_name

    for t, task, method in ((2, "read", "dymoe"), (8, "ocrvqa", "dymoe_plus"), (3, "text_vqa", "key_selector"),
                            (11, "VQA v2", "oracle_bank")):
        path = RunLayout(str(tmp_path), method).checkpoint_dir(t, task)
        assert checkpoint_task(path) == safe_name(task)
        assert checkpoint_task(path + os.sep) == safe_name(task)
    for other in ("", str(tmp_path), "checkpoint-5", "x_read_llava_dymoe", "2_llava_dymoe"):
        assert checkpoint_task(other) is None, other
