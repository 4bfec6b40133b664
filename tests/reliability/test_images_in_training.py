"""Truncated JPEG data: the training pre-flight decodes every image when that is cheap (at most 2000
distinct images; ``--decode_images True|False`` decides otherwise), and an image that fails mid-run
names its file and sample in one ``error:`` line instead of ``OSError: image file is truncated``."""
import json
import os
from types import SimpleNamespace

import pytest

from llava_dymoe.errors import DataError

from reliability_helpers import tree_hashes


def _truncated_jpeg(data, users=(2,)):
    from PIL import Image

    path = os.path.join(data.image_folder, "photo.jpg")
    Image.effect_noise((256, 256), 64).convert("RGB").save(path, quality=95)  # header << scan data
    raw = open(path, "rb").read()
    open(path, "wb").write(raw[: len(raw) * 2 // 3])
    samples = json.load(open(data.train_json))
    for i in users:
        samples[i]["image"] = "photo.jpg"
    json.dump(samples, open(data.train_json, "w"))
    return path


def _argv(data, out, *extra):
    return ["--data_path", data.train_json, "--image_folder", data.image_folder, "--output_dir", str(out), *extra]


def test_training_preflight_decodes_images_when_cheap(data, tmp_path):
    """input: sample 2's JPEG cut to 2/3 (verify() passes it) -> refused before loading, no folder; with
    --decode_images False the check passes as before (the flag is taken off LLaVA's argv)."""
    from llava_dymoe.integration import data_check
    from llava_dymoe.trainer.preflight import training_preflight

    _truncated_jpeg(data)
    before = tree_hashes(data.root)
    with pytest.raises(DataError) as e:
        training_preflight(_argv(data, tmp_path / "out"))
    assert "unreadable image x1" in str(e.value) and "sample 2: " in e.value.details
    assert "truncated" in e.value.details and not (tmp_path / "out").exists()
    rest = training_preflight(_argv(data, tmp_path / "out2", "--decode_images", "False"), claim=False)
    assert "--decode_images" not in rest
    old = data_check.DECODE_WHEN_AT_MOST
    data_check.DECODE_WHEN_AT_MOST = 0  # more images than is cheap: verified only, unless asked
    try:
        training_preflight(_argv(data, tmp_path / "out3"), claim=False)
        with pytest.raises(DataError):
            training_preflight(_argv(data, tmp_path / "out3", "--decode_images", "True"), claim=False)
    finally:
        data_check.DECODE_WHEN_AT_MOST = old
    assert tree_hashes(data.root) == before


def test_an_image_that_fails_mid_run_names_file_and_sample(data):
    """LLaVA's own dataset class (no model, no tokenizer: the image is opened first) with the T2 watch."""
    from llava.train.train import LazySupervisedDataset

    from llava_dymoe.patches.train import name_bad_images

    path = _truncated_jpeg(data, users=(2,))
    args = SimpleNamespace(image_folder=data.image_folder, image_processor=None, image_aspect_ratio="pad",
                           is_multimodal=True, mm_use_im_start_end=False)
    dataset = LazySupervisedDataset(data.train_json, None, args)
    with pytest.raises(OSError, match="truncated"):
        dataset[2]  # upstream: no file, no sample named
    name_bad_images(dataset)
    name_bad_images(dataset)  # idempotent
    assert isinstance(dataset, LazySupervisedDataset) and len(dataset.lengths) == 8
    with pytest.raises(DataError, match=rf"training sample 2 \(id 'smoke-2'\): its image {path} cannot be read "
                                        r"\(OSError: image file is truncated"):
        dataset[2]
