"""``cli convert-ucit`` and ``cli check-data --suite eval_suites/ucit.yaml`` on a miniature UCIT root."""
import json
import os

from ucit_mini import TASKS, write_ucit_mini

from llava_dymoe import cli

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SUITE = os.path.join(REPO, "eval_suites", "ucit.yaml")
FOLDER = {"ImageNet-R": "ImageNet-R", "ArxivQA": "ArxivQA", "VizWiz-Caption": "VizWiz", "IconQA": "IconQA",
          "CLEVR-Math": "CLEVR", "Flickr30k": "Flickr30k"}


def _lines(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _json_lines(text):
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_convert_ucit_writes_questions_and_references_in_the_test_order(tmp_path, capsys):
    root = write_ucit_mini(tmp_path / "ucit")
    assert cli.main(["convert-ucit", "--suite", SUITE, "--data-root", root]) == 0
    printed = _json_lines(capsys.readouterr().out)
    assert [p["task"] for p in printed] == list(FOLDER)
    for summary in printed:
        task, folder = summary["task"], FOLDER[summary["task"]]
        test = json.load(open(os.path.join(root, "instructions", folder, "test_3000.json")))
        assert summary["n"] == len(test) == 2 and "3000" in summary["warning"]  # the miniature is not 3000
        questions = _lines(os.path.join(root, "converted", task, "questions.jsonl"))
        assert questions == [{"question_id": r["question_id"], "image": r["image"], "text": r["text"]} for r in test]
        refs = _lines(os.path.join(root, "converted", task, "references.jsonl"))
        captions = TASKS[folder][5]
        if captions is None:
            assert refs == [{"question_id": r["question_id"], "answer": r["answer"]} for r in test]
        else:  # image id k is the k-th question; its reference captions in annotation order
            assert refs == [{"question_id": r["question_id"], "image_id": k, "answer": captions[k - 1]}
                            for k, r in enumerate(test, start=1)]
            assert summary["n_reference_captions"] == sum(len(c) for c in captions)


def test_convert_ucit_refuses_a_caption_file_that_does_not_pair_with_the_test_file(tmp_path, capsys):
    root = write_ucit_mini(tmp_path / "ucit")
    coco = os.path.join(root, "instructions", "Flickr30k", "val_coco_type_3000.json")
    data = json.load(open(coco))
    data["images"].append({"id": 3})
    json.dump(data, open(coco, "w"))
    assert cli.main(["convert-ucit", "--suite", SUITE, "--data-root", root, "--tasks", "Flickr30k"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "image ids are not exactly 1..2" in err
    assert not os.path.exists(os.path.join(root, "converted", "Flickr30k", "references.jsonl"))


def test_check_data_ucit_lists_missing_files_images_and_counts(tmp_path, capsys):
    root = write_ucit_mini(tmp_path / "ucit")
    assert cli.main(["convert-ucit", "--suite", SUITE, "--data-root", root]) == 0
    capsys.readouterr()
    assert cli.main(["check-data", "--suite", SUITE, "--data-root", root]) == 0  # counts are warnings only
    out = capsys.readouterr().out
    counts = _json_lines(out)
    assert [c["task"] for c in counts] == list(FOLDER)
    assert all(c["train"] == 3 and c["test"] == 2 and c["published_test"] == 3000 for c in counts)
    assert [c["published_train"] for c in counts] == [None, 40000, None, None, 40000, 40000]
    assert "warning sample count x9" in out  # six test files and three _4w training files
    # a missing image (named with its path), a missing caption file, a caption file that does not pair
    os.remove(os.path.join(root, "datasets", "CLEVR", "images", "test", "CLEVR_test_000101.png"))
    os.remove(os.path.join(root, "instructions", "VizWiz", "val_coco_type_3000.json"))
    coco = os.path.join(root, "instructions", "Flickr30k", "val_coco_type_3000.json")
    data = json.load(open(coco))
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] != 2]
    json.dump(data, open(coco, "w"))
    assert cli.main(["check-data", "--suite", SUITE, "--data-root", root]) == 1
    out = capsys.readouterr().out
    assert "error missing image x1" in out and "CLEVR_test_000101.png" in out
    assert "error missing file x1" in out and "VizWiz/val_coco_type_3000.json" in out
    assert "error caption references x1" in out and "image 2 has no caption" in out


def test_metrics_accepts_caption_scores_above_100_only_when_asked(tmp_path, capsys):
    matrix = tmp_path / "matrix.csv"
    matrix.write_text("stage,ImageNet-R,VizWiz-Caption\n1_ImageNet-R,80,\n2_VizWiz-Caption,60,110\n")
    assert cli.main(["metrics", str(matrix)]) == 2
    assert "outside [0, 100]" in capsys.readouterr().err
    assert cli.main(["metrics", str(matrix), "--max-score", "1000"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["mfn"] == (60 + 110) / 2 and got["bwt"] == 60 - 80


def test_cli_score_says_unanswered_questions_are_left_out_under_ucit(tmp_path, capsys):
    refs, answers = tmp_path / "refs.jsonl", tmp_path / "answers.jsonl"
    refs.write_text("".join(json.dumps({"question_id": i, "answer": a}) + "\n" for i, a in enumerate(["3", "4"])))
    answers.write_text(json.dumps({"question_id": 0, "text": "3"}) + "\n")
    assert cli.main(["score", "--scorer", "ucit_exact", "--answers", str(answers), "--references", str(refs)]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["score"] == 100.0  # one answer line, right
    assert "1 questions of" in captured.err and "left out of the score" in captured.err
    assert cli.main(["score", "--scorer", "exact", "--answers", str(answers), "--references", str(refs)]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["score"] == 50.0 and "1 of 2 questions" in captured.err
    assert "count as wrong" in captured.err
