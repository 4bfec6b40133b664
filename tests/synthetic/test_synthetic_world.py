"""The image world (glyphs, sizes) and the base mixture's answers, recomputed from their metadata."""
import json
import random
import string
from collections import Counter

import numpy as np
import pytest

from llava_dymoe.synthetic import world
from llava_dymoe.synthetic.base import MIX_WEIGHTS, write_base_mixture

NUMBERS = ["zero", "one", "two", "three", "four"]


@pytest.mark.parametrize("image_size", [32, 64])
def test_every_glyph_fits_a_cell_and_is_distinct(image_size):
    cell = image_size // 4
    seen = {}
    for letter in string.ascii_uppercase:
        img = world.render(world.Scene(letters=((letter, 1, 2),)), image_size)
        ink = (np.asarray(img).sum(axis=2) < 100)
        rows, cols = np.nonzero(ink)
        assert rows.min() >= cell and rows.max() < 2 * cell and cols.min() >= 2 * cell and cols.max() < 3 * cell
        assert ink.sum() >= 8, letter
        seen[ink.tobytes()] = letter
    assert len(seen) == 26  # legible: no two letters share a bitmap


def test_bad_image_sizes_are_refused():
    for size in (30, 24):
        with pytest.raises(ValueError):
            world.render(world.Scene(), size)


def test_rendering_is_deterministic():
    scene = world.text_scene(random.Random(5), "fish", 3)
    assert world.render(scene).tobytes() == world.render(scene).tobytes()


def _recompute(task, row):
    scene, query = row["scene"], row["query"]
    objs = scene["objects"]
    kinds = [f"{o['colour']} {o['shape']}" for o in objs]
    if task == "describe":
        n = len(objs)
        text = f"{NUMBERS[n]} object{'s' if n != 1 else ''}"
        if n:
            text += ": " + "; ".join(f"{k} in row {o['row'] + 1}, column {o['col'] + 1}" for k, o in zip(kinds, objs))
        return text + "." + (f" Text: {scene['text']['word']}." if scene["text"] else "")
    if task == "cell":
        r, c = query["row"], query["col"]
        assert f"row {r + 1}, column {c + 1}?" in row["question"]
        for k, o in zip(kinds, objs):
            if (o["row"], o["col"]) == (r, c):
                return k
        t = scene["text"]
        if t and t["row"] == r and 0 <= c - t["col"] < len(t["word"]):
            return "letter " + t["word"][c - t["col"]].upper()
        return "none"
    if task == "count":
        return NUMBERS[sum(o["shape"] == query["given"] for o in objs)]
    if task == "letter":
        (only,) = scene["letters"]
        return only["letter"]
    if task == "point":
        assert Counter(kinds)[query["given"]] == 1
        o = objs[kinds.index(query["given"])]
        c = scene["cell"]
        return "[%.2f, %.2f]" % ((o["col"] + 0.5) * c / scene["image_size"], (o["row"] + 0.5) * c / scene["image_size"])
    if task == "letterbox":
        (only,) = scene["letters"]
        assert row["question"].endswith(f"describes: the letter {only['letter']}.")
        assert (only["row"], only["col"]) not in {(o["row"], o["col"]) for o in objs}
        c, m, s = scene["cell"], scene["margin"], scene["image_size"]
        px = (only["col"] * c + m, only["row"] * c + m, (only["col"] + 1) * c - m, (only["row"] + 1) * c - m)
        return "[" + ", ".join("%.2f" % (v / s) for v in px) + "]"
    raise AssertionError(task)


def test_base_mixture_answers_recomputed_from_metadata(tmp_path):
    root = tmp_path / "base_data"
    write_base_mixture(str(root), seed=0, n_train=40, n_test=10, image_size=64)
    mixture = json.load(open(root / "mixture.json"))
    assert len(mixture) == 40 * sum(MIX_WEIGHTS.values()) == len({m["id"] for m in mixture})
    assert [m["id"] for m in mixture] != sorted(m["id"] for m in mixture)  # shuffled
    for task in ("describe", "cell", "count", "letter", "point", "letterbox"):
        for split in ("train", "test"):
            for line in open(root / task / f"meta_{split}.jsonl"):
                row = json.loads(line)
                assert _recompute(task, row) == row["answer"], row["id"]
