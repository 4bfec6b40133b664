"""A miniature UCIT data root (not a test module): the authors' folder names and file formats,
3 training samples and 2 test questions per task, 12x10 images.

Layout (what ``eval_suites/ucit.yaml`` and docs/ucit.md expect; the authors' README)::

    ROOT/instructions/<Folder>/<train file>        LLaVA conversations (train.json, train_4w.json, ...)
    ROOT/instructions/<Folder>/test_3000.json      [{question_id, image, text, answer}]
    ROOT/instructions/{VizWiz,Flickr30k}/val_coco_type_3000.json   COCO captions, image id k = k-th question
    ROOT/datasets/...                              images, at the paths the files name
"""
import json
import os

from PIL import Image

CAPTION = "Provide a one-sentence caption for the provided image."
SHORT = "Answer the question using a single word or phrase."
#: folder -> (train file, image pattern, question, train answer, test answers, reference captions or None)
TASKS = {
    "ImageNet-R": ("train.json", "ImageNet-R/{split}/n01443537/art_{i}.jpg",
                   "What is the object in the image?\n" + SHORT, "goldfish", ["goldfish", "pug"], None),
    "ArxivQA": ("train_4w.json", "ArxivQA/images/{split}-{i}.jpg",
                "Which trend does the figure show?\nA. rising\nB. falling\nAnswer with the option's letter.",
                "A", ["A", "B"], None),
    "VizWiz": ("train.json", "VizWiz/{split}/VizWiz_{split}_{i:08d}.jpg", CAPTION, "a bottle of water",
               ["a can of soup", "a blue shirt"],
               [["a can of tomato soup", "a red soup can"], ["a blue shirt on a bed", "a folded blue shirt"]]),
    "IconQA": ("train.json", "IconQA/iconqa_data/iconqa/{split}/choose_txt/{i}/image.png",
               "How many circles are there?\n" + SHORT, "3", ["4", "circle"], None),
    "CLEVR": ("train_4w.json", "CLEVR/images/{split}/CLEVR_{split}_{i:06d}.png",
              "Subtract all red cubes. How many objects are left?\n" + SHORT, "5", ["2", "0"], None),
    "Flickr30k": ("train_brief_4w.json", "Flickr30k/{split}/{i}.jpg", CAPTION, "a dog runs on the grass",
                  ["two men play soccer", "a woman in a red dress"],
                  [["two men are playing soccer", "men playing football"], ["a woman wearing a red dress"]]),
}
N_TRAIN, N_TEST = 3, 2
COLOURS = ("red", "blue", "green", "yellow", "white")


def _image(root, rel, i):
    path = os.path.join(root, "datasets", rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", (12, 10), COLOURS[i % len(COLOURS)]).save(path)


def _dump(root, rel, obj):
    path = os.path.join(root, "instructions", rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f)


def write_ucit_mini(root) -> str:
    """Write the miniature UCIT root under ``root``; returns it."""
    root = str(root)
    for folder, (train_file, pattern, question, train_answer, test_answers, captions) in TASKS.items():
        train, test = [], []
        for i in range(N_TRAIN):
            rel = pattern.format(split="train", i=i)
            _image(root, rel, i)
            train.append({"id": f"{folder}-train-{i}", "image": rel,
                          "conversations": [{"from": "human", "value": "<image>\n" + question},
                                            {"from": "gpt", "value": train_answer}]})
        for i, answer in enumerate(test_answers):
            rel = pattern.format(split="test" if captions is None else "val", i=100 + i)
            _image(root, rel, i + 1)
            test.append({"question_id": f"{folder}-{i}", "image": rel, "text": question, "answer": answer})
        _dump(root, f"{folder}/{train_file}", train)
        _dump(root, f"{folder}/test_3000.json", test)
        if captions is not None:
            _dump(root, f"{folder}/val_coco_type_3000.json", {
                "images": [{"id": k, "file_name": rec["image"]} for k, rec in enumerate(test, start=1)],
                "annotations": [{"image_id": k, "id": 10 * k + j, "caption": c}
                                for k, caps in enumerate(captions, start=1) for j, c in enumerate(caps)]})
    return root
