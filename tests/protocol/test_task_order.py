"""``--task-order`` parsing and ``Suite.reordered`` (protocol/task_order.py, eval/suite.py)."""
import random

import pytest

from llava_dymoe.eval.suite import Suite, TaskSpec
from llava_dymoe.protocol.task_order import apply_task_order, parse_task_order

COIN = ["science", "textvqa", "imagenet", "gqa", "vizwiz", "grounding", "vqav2", "ocrvqa"]


def _suite(names=COIN):
    tasks = [TaskSpec(name=n, train_json=f"{n}/train.json", question_file=f"{n}/q.jsonl",
                      annotation_file=f"{n}/q.jsonl", image_root="images", generator="llava.eval.model_vqa_loader",
                      scorer="exact") for n in names]
    return Suite(name="coin_shaped", tasks=tasks)


def test_names_give_that_order_and_a_subset_keeps_only_its_tasks():
    suite = _suite()
    out = apply_task_order(suite, "ocrvqa, science,gqa")
    assert out.task_names == ["ocrvqa", "science", "gqa"]
    assert [t is suite.task(t.name) for t in out.tasks] == [True] * 3  # the same task specs, only reordered
    assert suite.task_names == COIN  # the original is not changed
    assert apply_task_order(suite, None) is suite


def test_random_seed_is_the_pre_registered_drawn_order():
    # docs/beyond-the-paper.md section 8: random.Random(26).sample(range(8), 8) = [3, 5, 1, 7, 0, 4, 6, 2]
    drawn = [COIN[i] for i in (3, 5, 1, 7, 0, 4, 6, 2)]
    assert parse_task_order("random:26", _suite()) == drawn
    assert parse_task_order(" random: 26 ", _suite()) == drawn
    for seed in (0, 1, 123):
        order = parse_task_order(f"random:{seed}", _suite())
        assert sorted(order) == sorted(COIN)
        assert order == [COIN[i] for i in random.Random(seed).sample(range(8), 8)]


@pytest.mark.parametrize("spec, message", [
    ("science,nosuch", "unknown task(s) 'nosuch'; give each task at most once, from: science, textvqa"),
    ("gqa,science,gqa", "task(s) 'gqa' listed twice"),
    ("", "give task names separated by commas"),
    ("gqa,,science", "no empty name"),
    ("random:", "after 'random:' give an integer seed"),
    ("random:1.5", "after 'random:' give an integer seed"),
])
def test_bad_orders_are_refused_naming_the_flag_and_the_tasks(spec, message):
    with pytest.raises(ValueError) as e:
        apply_task_order(_suite(), spec)
    assert str(e.value).startswith(f"--task-order {spec!r}:") and message in str(e.value)


def test_reordered_refuses_no_task():
    with pytest.raises(ValueError, match="no task given"):
        _suite().reordered([])
