"""D1 (``patches/vision_check.py``): Pillow's presence is checked once per process, answers and errors unchanged."""
import importlib.metadata

import numpy as np
import pytest
import transformers
from transformers import image_transforms, image_utils
from transformers.utils import import_utils

from llava_dymoe.patches import vision_check
from llava_dymoe.patches._base import applied_patch_sets, is_ours

pytestmark = [pytest.mark.llava11,  # holds on both upstream lines (make test-llava11)
              pytest.mark.skipif(transformers.__version__ not in vision_check.TRANSFORMERS,
                                 reason="D1 is written for the transformers of the two upstream lines")]


def _count_version_lookups(monkeypatch):
    calls = []
    real = importlib.metadata.version

    def version(name):
        calls.append(name)
        return real(name)
    monkeypatch.setattr(importlib.metadata, "version", version)
    return calls


def test_the_image_path_asks_the_metadata_once_and_gets_the_same_pixels(monkeypatch):
    from transformers import CLIPImageProcessor
    from PIL import Image

    proc = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    image = Image.fromarray((np.arange(48 * 40 * 3) % 251).astype(np.uint8).reshape(48, 40, 3))
    calls = _count_version_lookups(monkeypatch)
    want = proc.preprocess([image] * 3, return_tensors="np")["pixel_values"]
    unpatched = calls.count("Pillow")
    assert unpatched >= 3 * 4  # several lookups per image without D1 (the cost D1 removes)
    calls.clear()
    with vision_check.vision_check_cache() as ps:
        assert ps is not None and ps.applied and ps in applied_patch_sets()
        assert is_ours(image_utils.is_vision_available) and is_ours(image_transforms.requires_backends)
        got = proc.preprocess([image] * 3, return_tensors="np")["pixel_values"]
        got_again = proc.preprocess([image] * 3, return_tensors="np")["pixel_values"]
    assert calls.count("Pillow") == 1  # once, for both replacements, whatever the number of images
    assert np.array_equal(got, want) and np.array_equal(got_again, want)
    assert not is_ours(image_utils.is_vision_available) and not is_ours(image_transforms.requires_backends)
    assert image_utils.is_vision_available is import_utils.is_vision_available  # restored: upstream's own


def test_requires_backends_keeps_its_answers_for_other_backends(monkeypatch):
    def needs(obj):
        return obj
    with vision_check.vision_check_cache():
        assert image_transforms.requires_backends(needs, ["vision"]) is None
        assert image_transforms.requires_backends(needs, "vision") is None
        monkeypatch.setitem(import_utils.BACKENDS_MAPPING, "absent", (lambda: False, "{0} needs absent (test)\n"))
        with pytest.raises(ImportError, match="needs needs absent"):  # another backend: the original decides
            image_transforms.requires_backends(needs, ["vision", "absent"])


def test_when_pillow_is_missing_the_patched_check_says_so_too(monkeypatch):
    monkeypatch.setattr(import_utils, "is_vision_available", lambda: False)
    monkeypatch.setattr(image_utils, "is_vision_available", lambda: False)
    monkeypatch.setitem(import_utils.BACKENDS_MAPPING, "vision", (lambda: False, "{0} needs Pillow (test)\n"))
    with vision_check.vision_check_cache():
        assert image_utils.is_vision_available() is False
        with pytest.raises(ImportError, match="resize needs Pillow"):
            image_transforms.requires_backends(image_transforms.resize, ["vision"])


def test_other_transformers_is_left_alone(monkeypatch, caplog):
    monkeypatch.setattr(vision_check, "_installed_version", lambda dist: "4.99.0")
    with caplog.at_level("INFO", logger="llava_dymoe.patches"):
        with vision_check.vision_check_cache() as ps:
            assert ps is None and not is_ours(image_utils.is_vision_available)
    assert "D1 (vision check cache) not applied: transformers 4.99.0, written for 4.37.2 or 4.31.0" in caplog.text
    with pytest.raises(ValueError, match="not 4.99.0"):
        vision_check.vision_check_patch_set("4.99.0")
