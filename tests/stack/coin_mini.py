"""A miniature CoIN data root (not a test module): CoIN's folder names and file formats, 3 training
samples and 2 test questions per task, 12x10 images.

Layout (what ``eval_suites/coin.yaml`` and docs/coin.md expect)::

    ROOT/Instructions_Original/<Task>/train.json        LLaVA conversations
    ROOT/Instructions_Original/<Task>/{test,val}.json   [{question_id, image, text, answer}] (+ answer_bbox, size)
    ROOT/cl_dataset/...                                 images, at the paths CoIN's files name
    ROOT/cl_dataset/TextVQA/TextVQA_0.5.1_val.json      official TextVQA answers (10 per question)
"""
import json
import os

from PIL import Image

SQA_SUFFIX = "Answer with the option's letter from the given choices directly."
SHORT = "Answer the question using a single word or phrase."
BOX = "Please provide the bounding box coordinate of the region this sentence describes:"

#: task folder -> (test file name, [(image path, question, answer)] for training, same for the test file)
TASKS = {
    "ScienceQA": ("test.json",
                  [("ScienceQA/images/train/{i}/image.png", "Which colour is shown?\nA. red\nB. blue\n" + SQA_SUFFIX,
                    "A")],
                  [("ScienceQA/images/test/{i}/image.png", "Which colour is shown?\nA. blue\nB. red\n" + SQA_SUFFIX,
                    "B")]),
    "TextVQA": ("val.json",
                [("TextVQA/train_images/{i:016x}.jpg", "what is written on the sign?\n" + SHORT, "stop")],
                [("TextVQA/train_images/{i:016x}.jpg", "what does the label say?\n" + SHORT, "pear")]),
    "ImageNet": ("test.json",
                 [("ImageNet/train/n01440764/n01440764_{i}.JPEG",
                   "What is the object in the image?\n" + SHORT, "tench")],
                 [("ImageNet/val/n01440764/ILSVRC2012_val_{i:08d}.JPEG",
                   "What is the object in the image?\n" + SHORT, "tench")]),
    "GQA": ("test.json",
            [("GQA/images/{i}.jpg", "Is the sky blue?\n" + SHORT, "yes")],
            [("GQA/images/{i}.jpg", "Which colour is the car?\n" + SHORT, "red")]),
    "VizWiz": ("val.json",
               [("VizWiz/train/VizWiz_train_{i:08d}.jpg", "What is this?\nWhen the provided information is "
                 "insufficient, respond with 'Unanswerable'.\n" + SHORT, "cup")],
               [("VizWiz/val/VizWiz_val_{i:08d}.jpg", "What colour is this shirt?\n" + SHORT, "unanswerable")]),
    "Grounding": ("test.json",
                  [("COCO2014/train2014/COCO_train2014_{i:012d}.jpg", f"{BOX} the red cup.",
                    "[0.1, 0.2, 0.5, 0.6]")],
                  [("COCO2014/train2014/COCO_train2014_{i:012d}.jpg", f"{BOX} the left dog.",
                    "[0.0, 0.1, 0.4, 0.9]")]),
    "VQAv2": ("val.json",
              [("COCO2014/train2014/COCO_train2014_{i:012d}.jpg", "How many dogs are there?\n" + SHORT, "2")],
              [("COCO2014/val2014/COCO_val2014_{i:012d}.jpg", "What sport is this?\n" + SHORT, "tennis")]),
    "OCRVQA": ("test.json",
               [("OCR-VQA/images/{i:010d}.jpg", "Who wrote this book?\n" + SHORT, "Jane Doe")],
               [("OCR-VQA/images/{i:010d}.jpg", "What is the title of this book?\n" + SHORT, "Tiny Tales")]),
}
N_TRAIN, N_TEST = 3, 2
COLOURS = ("red", "blue", "green", "yellow", "white")


def _image(root, rel, i):
    path = os.path.join(root, "cl_dataset", rel)
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.new("RGB", (12, 10), COLOURS[i % len(COLOURS)]).save(path)


def _dump(root, rel, obj):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f)


def write_coin_mini(root) -> str:
    """Write the miniature CoIN root under ``root``; returns it."""
    root = str(root)
    offset = 0
    for task, (test_name, train_spec, test_spec) in TASKS.items():
        train, test = [], []
        for i in range(N_TRAIN):
            pattern, question, answer = train_spec[0]
            rel = pattern.format(i=offset + i + 1)
            _image(root, rel, i)
            train.append({"id": f"{task}-train-{i}", "image": rel,
                          "conversations": [{"from": "human", "value": "<image>\n" + question},
                                            {"from": "gpt", "value": answer}]})
        for i in range(N_TEST):
            pattern, question, answer = test_spec[0]
            rel = pattern.format(i=offset + 100 + i)
            _image(root, rel, i + 1)
            rec = {"question_id": f"{task}-{i}", "image": rel, "text": question, "answer": answer}
            if task == "Grounding":
                rec.update(answer_bbox=answer, size=[12, 10])
            test.append(rec)
        offset += 1000
        _dump(root, f"Instructions_Original/{task}/train.json", train)
        _dump(root, f"Instructions_Original/{task}/{test_name}", test)
        if task == "TextVQA":
            _dump(root, "cl_dataset/TextVQA/TextVQA_0.5.1_val.json",
                  {"data": [{"question_id": r["question_id"], "answers": [r["answer"]] * 9 + ["other"]}
                            for r in test]})
    return root
