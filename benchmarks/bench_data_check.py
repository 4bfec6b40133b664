"""Speed of the data pre-flight (``llava_dymoe/integration/data_check.py``) on CoIN-sized data.

    python benchmarks/bench_data_check.py [--samples 100000] [--pool 256] [--distinct 2000] [--tokenizer LLM]

Writes, under a temporary folder, a LLaVA training JSON of ``--samples`` samples (1-3 turns each,
a tenth of them text-only) whose images come from a shared pool of ``--pool`` real PNG files, and
times :func:`check_training_data` on it (median of ``--repeats``).  Image verification is measured
separately on ``--distinct`` distinct image files (one sample each), since CoIN references ~10^5
distinct images: the line "per distinct image" extrapolates to a data set of that size.  With
``--tokenizer`` (a base LLM folder) also the rough length pass, at model_max_length 2048 (most
samples fit by their byte count and are not tokenised) and 600 (most are tokenised).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time

from llava_dymoe.integration.data_check import check_training_data


def write_images(folder: str, n: int, size: int = 336, seed: int = 0):
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    rng = random.Random(seed)
    names = []
    for i in range(n):
        img = Image.new("RGB", (size, size), tuple(rng.randrange(256) for _ in range(3)))
        img.putpixel((rng.randrange(size), rng.randrange(size)), (255, 255, 255))
        name = f"img_{i:06d}.{'png' if i % 2 else 'jpg'}"
        img.save(os.path.join(folder, name))
        names.append(name)
    return names


def write_samples(path: str, n: int, images, seed: int = 0) -> None:
    rng = random.Random(seed)
    words = "what colour is the object on the left of the red square in this image please answer".split()
    samples = []
    for i in range(n):
        turns = []
        for t in range(rng.choice((1, 1, 2, 3))):
            q = " ".join(rng.choice(words) for _ in range(rng.randrange(5, 30))) + "?"
            turns += [{"from": "human", "value": q}, {"from": "gpt", "value": " ".join(rng.sample(words, 6))}]
        sample = {"id": f"bench-{i}", "conversations": turns}
        if i % 10:
            sample["image"] = images[i % len(images)]
            turns[0]["value"] = "<image>\n" + turns[0]["value"]
        samples.append(sample)
    with open(path, "w") as f:
        json.dump(samples, f)


def timed(fn, repeats: int):
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=100_000)
    ap.add_argument("--pool", type=int, default=256, help="shared image files of the big JSON")
    ap.add_argument("--distinct", type=int, default=2000, help="distinct image files for the per-image cost")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tokenizer", help="base LLM folder: also time the length pass (model_max_length 2048)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as root:
        images = os.path.join(root, "images")
        pool = write_images(images, args.pool)
        data = os.path.join(root, "train.json")
        write_samples(data, args.samples, pool)
        mb = os.path.getsize(data) / 2 ** 20
        sec, report = timed(lambda: check_training_data(data, images), args.repeats)
        assert report.ok, report.format()
        print(f"{args.samples} samples ({mb:.0f} MB JSON, {report.images} shared images): {sec:.2f} s "
              f"(median of {args.repeats})")
        distinct = write_images(os.path.join(root, "distinct"), args.distinct, seed=1)
        small = os.path.join(root, "distinct.json")
        write_samples(small, args.distinct, [f"{n}" for n in distinct], seed=1)
        with open(small) as f:
            rows = json.load(f)
        for i, row in enumerate(rows):  # every sample with its own image
            if "image" not in row:
                row["image"] = distinct[i]
                row["conversations"][0]["value"] = "<image>\n" + row["conversations"][0]["value"]
        with open(small, "w") as f:
            json.dump(rows, f)
        dsec, dreport = timed(lambda: check_training_data(small, os.path.join(root, "distinct")), 1)
        assert dreport.ok, dreport.format()
        per = dsec / args.distinct
        print(f"{args.distinct} distinct images (336x336 PNG/JPEG, page cache warm): {dsec:.2f} s, "
              f"{per * 1e3:.3f} ms per distinct image -> about {per * 1e5:.0f} s for 100k distinct images")
        if args.tokenizer:  # 2048: most samples fit by their byte count; 600: most are tokenised
            for limit in (2048, 600):
                lsec, lreport = timed(lambda: check_training_data(data, images, tokenizer=args.tokenizer,
                                                                  model_max_length=limit), 1)
                print(f"with the length pass ({args.tokenizer}, model_max_length {limit}): {lsec:.2f} s, "
                      f"{len(lreport.errors)} too long")


if __name__ == "__main__":
    main()
