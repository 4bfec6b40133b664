"""Scorers on hand-written cases, including edge cases, and score_file over small files."""
import importlib.util
import json
import os

import pytest

from llava_dymoe.eval import scorers
from llava_dymoe.eval.scorers import get, parse_box, parse_letter, score_file
from llava_dymoe.eval.vqa_norm import normalize_answer, soft_accuracy


def test_registry_has_the_fixed_names():
    clean = ["contains", "exact", "grounding_iou", "sqa_letter", "vqa_soft"]
    coin = ["coin_gqa", "coin_grounding", "coin_imagenet", "coin_ocrvqa", "coin_sqa", "coin_textvqa", "coin_vizwiz",
            "coin_vqav2"]
    ucit = ["caption_coco", "ucit_caption", "ucit_exact"]
    assert scorers.names() == sorted(clean + coin + ucit)
    with pytest.raises(KeyError, match="Known scorers"):
        get("vqa")


# ------------------------------------------------------------------ sqa_letter
@pytest.mark.parametrize("pred,letter", [
    ("B", "B"), ("B. a cat", "B"), ("The answer is C.", "C"), ("I think (D) is right", "I"),  # CoIN quirk: first single-character word
    ("b", "B"), ("  A  ", "A"), ("A. B. C", "A"), ("Maybe E, not A", "E"),
    ("", None), ("cats and dogs", None), ("12", None),
])
def test_parse_letter(pred, letter):
    assert parse_letter(pred) == letter


def test_sqa_letter_scores_and_references():
    sqa = get("sqa_letter")
    assert sqa("B", "B") == 1.0
    assert sqa("The answer is B.", "B") == 1.0
    assert sqa("C", "B") == 0.0
    assert sqa("", "A") == 0.0  # CoIN: FAILED
    assert sqa("B", 1) == 1.0 and sqa("A", 1) == 0.0  # 0-based index
    assert sqa("B", "B. a cat") == 1.0
    with pytest.raises(ValueError):
        sqa("A", 30)
    with pytest.raises(ValueError):
        sqa("A", ["A"])


# ------------------------------------------------------------------ vqa_soft
@pytest.mark.parametrize("raw,norm", [
    ("Two dogs.", "2 dogs"), ("The Red One", "red 1"), ("yes-no", "yes no"), ("100,978", "100978"),
    ("3.5", "3.5"), ("It's 2:50 PM!", "it 's 2:50 pm"), ("dont know", "don't know"),
    ("hello - world", "hello world"), ("  Coca-Cola\n", "coca cola"), ("u.s.a.", "usa"),
    ("its", "its"), ("well", "well"), ("none", "0"), ("x-ray (left)", "x ray left"),
])
def test_normalize_answer(raw, norm):
    assert normalize_answer(raw) == norm


def test_vqa_soft_ten_answers():
    v = get("vqa_soft")
    assert v("two", ["2"] * 10) == 1.0
    # 3 matches: leaving out a match leaves 2 (2/3), leaving out another leaves 3 (1)
    assert v("cat", ["cat"] * 3 + ["dog"] * 7) == pytest.approx((3 * 2 / 3 + 7 * 1) / 10)
    assert v("cat", ["cat"] * 1 + ["dog"] * 9) == pytest.approx(9 * (1 / 3) / 10)
    assert v("cat", ["dog"] * 10) == 0.0
    assert v("A cat.", ["cat"] * 4 + ["dog"] * 6) == 1.0


def test_vqa_soft_other_lengths():
    v = get("vqa_soft")
    assert v("Yes.", "yes") == 1.0 and v("yes", ["no"]) == 0.0  # one answer: normalised exact match
    assert v("yes", ["yes", "yes"]) == 1.0  # threshold min(3, n-1) = 1
    assert v("yes", ["yes", "no"]) == pytest.approx(0.5)
    assert v("a", ["a", "a", "b", "b"]) == pytest.approx((2 * (1 / 3) + 2 * (2 / 3)) / 4)
    with pytest.raises(ValueError):
        v("yes", [])


def _m4c():
    spec = importlib.util.find_spec("llava")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], "eval", "m4c_evaluator.py")
    if not os.path.isfile(path):
        return None
    mspec = importlib.util.spec_from_file_location("_m4c_oracle", path)
    mod = importlib.util.module_from_spec(mspec)
    mspec.loader.exec_module(mod)  # imports only re and tqdm, not the llava package
    return mod


def test_vqa_soft_agrees_with_upstream_m4c_evaluator():
    m4c = _m4c()
    if m4c is None:
        pytest.skip("llava-torch not installed")
    proc, ev = m4c.EvalAIAnswerProcessor(), m4c.TextVQAAccuracyEvaluator()
    words = ["Two dogs.", "the cat's toy", "yes-no", "hello - world", "100,978", "3.5", "It's 2:50 PM!",
             "dont know", "An apple", "x-ray (left)", "50%", "u.s.a.", "whats up?", "e.g. this"]
    for w in words:
        assert normalize_answer(w) == proc(w), w
    import random
    rng = random.Random(0)
    pool = ["yes", "no", "Yes.", "two", "2", "the red one", "red", "a dog", "dog"]
    for _ in range(50):
        gts = [rng.choice(pool) for _ in range(10)]
        pred = rng.choice(pool)
        want = ev.eval_pred_list([{"pred_answer": pred, "gt_answers": gts}])
        assert soft_accuracy(pred, gts) == pytest.approx(want, abs=1e-12)


# ------------------------------------------------------------------ exact / contains
def test_exact():
    e = get("exact")
    assert e("Yes.", "yes") == 1.0
    assert e("  Blue  ", "blue.") == 1.0
    assert e("blue..", "blue") == 0.0  # only one trailing period is stripped
    assert e("light blue", "blue") == 0.0
    assert e("Unanswerable", "unanswerable") == 1.0
    assert e("red", ["blue", "Red"]) == 1.0
    assert e("", "") == 1.0 and e("", "x") == 0.0
    with pytest.raises(ValueError):
        e("x", [])


def test_contains():
    c = get("contains")
    assert c("This is a Golden Retriever.", "golden retriever") == 1.0
    assert c("retriever", "Golden Retriever") == 1.0  # prediction inside the reference
    assert c("a cat", "dog") == 0.0
    assert c("", "dog") == 0.0 and c("   ", "dog") == 0.0  # empty prediction: 0 (CoIN: 1)
    assert c("dog", "") == 0.0
    assert c("STRASSE", "straße") == 1.0  # casefold, not lower


# ------------------------------------------------------------------ grounding_iou
@pytest.mark.parametrize("text,box", [
    ("[0.1, 0.2, 0.3, 0.4]", [0.1, 0.2, 0.3, 0.4]),
    (" [0.1,0.2,0.3,0.4]", [0.1, 0.2, 0.3, 0.4]),
    ("The box is (0.1, 0.2, 0.3, 0.4).", [0.1, 0.2, 0.3, 0.4]),
    ("2 cats [0.1 0.2 0.3 0.4] and [1, 2]", [0.1, 0.2, 0.3, 0.4]),
    ("0.1, 0.2, 0.3, 0.4", [0.1, 0.2, 0.3, 0.4]),
    ("[.5, 1e-1, 1, 1.]", [0.5, 0.1, 1.0, 1.0]),
    ("[0.1, 0.2, 0.3]", None), ("no box here", None), ("", None), ("[1, 2, 3, 4, 5]", None),
])
def test_parse_box(text, box):
    got = parse_box(text)
    assert got == (pytest.approx(box) if box else None)


def test_grounding_iou():
    g = get("grounding_iou")
    ref = [0.0, 0.0, 1.0, 1.0]
    assert g("[0.0, 0.0, 1.0, 1.0]", ref) == 1.0
    assert g("[0.0, 0.0, 0.5, 1.0]", ref) == 0.0  # IoU exactly 0.5 is not > 0.5
    assert g("[0.0, 0.0, 0.6, 1.0]", ref) == 1.0  # IoU 0.6
    assert g("[0.5, 0.5, 0.6, 0.6]", ref) == 0.0
    assert g("[0.6, 0.0, 0.0, 1.0]", ref) == 0.0  # inverted box
    assert g("garbage", ref) == 0.0
    assert g("[0.0, 0.0, 1.0, 1.0]", "[0, 0, 1, 1]") == 1.0  # CoIN's answer_bbox string
    with pytest.raises(ValueError):
        g("[0, 0, 1, 1]", [1, 1, 0, 0])


def test_scorers_reject_non_string_predictions():
    with pytest.raises(TypeError):
        get("exact")(3, "3")
    assert get("exact")(None, "x") == 0.0


# ------------------------------------------------------------------ score_file
def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _answer(qid, text):
    return {"question_id": qid, "prompt": "q", "text": text, "answer_id": "x", "model_id": "m", "metadata": {}}


def test_score_file_counts_missing_as_zero(tmp_path):
    qs = _write_jsonl(tmp_path / "refs.jsonl", [{"question_id": i, "answer": a} for i, a in
                                                 [(1, "yes"), (2, "no"), (3, "red"), (4, "blue")]])
    ans = _write_jsonl(tmp_path / "merge.jsonl", [_answer(1, "Yes."), _answer(2, "yes"), _answer(3, "red"),
                                                  _answer(99, "extra")])
    res = score_file("exact", ans, qs)
    assert res["score"] == 50.0 and res["n"] == 4 and res["n_answered"] == 3
    assert res["missing"] == ["4"] and res["extra"] == ["99"]
    assert res["per_question"] == {"1": 1.0, "2": 0.0, "3": 1.0, "4": 0.0}


def test_score_file_json_list_ids_as_strings_and_custom_key(tmp_path):
    qs = tmp_path / "test.json"
    qs.write_text(json.dumps([{"question_id": "a", "answer_bbox": "[0, 0, 1, 1]", "answer": "ignored"},
                              {"question_id": "b", "answer_bbox": [0, 0, 0.5, 0.5]}]))
    ans = _write_jsonl(tmp_path / "merge.jsonl", [_answer("a", "[0, 0, 1, 1]"), _answer("b", "[0.5, 0.5, 1, 1]")])
    res = score_file("grounding_iou", ans, str(qs), reference_key="answer_bbox")
    assert res["score"] == 50.0 and res["missing"] == []


def test_score_file_science_ids(tmp_path):
    qs = tmp_path / "q.json"
    qs.write_text(json.dumps([{"id": "7", "answer": "C"}]))
    ans = _write_jsonl(tmp_path / "m.jsonl", [_answer("7", "C")])
    assert score_file("sqa_letter", ans, str(qs))["score"] == 100.0


def test_score_file_errors(tmp_path):
    qs = _write_jsonl(tmp_path / "q.jsonl", [{"question_id": 1, "answer": "x"}, {"question_id": 1, "answer": "y"}])
    ans = _write_jsonl(tmp_path / "a.jsonl", [_answer(1, "x")])
    with pytest.raises(ValueError, match="appears twice"):
        score_file("exact", ans, qs)
    qs = _write_jsonl(tmp_path / "q2.jsonl", [{"question_id": 1, "answer": "x"}])
    dup = _write_jsonl(tmp_path / "a2.jsonl", [_answer(1, "x"), _answer(1, "x")])
    with pytest.raises(ValueError, match="appears twice"):
        score_file("exact", dup, qs)
    nokey = _write_jsonl(tmp_path / "q3.jsonl", [{"question_id": 1, "label": "x"}])
    with pytest.raises(ValueError, match="no 'answer' field"):
        score_file("exact", ans, nokey)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question_id": 1}\n{oops\n')
    with pytest.raises(ValueError, match="line 2"):
        score_file("exact", str(bad), qs)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(ValueError, match="no questions"):
        score_file("exact", ans, str(empty))
