"""The ucit profile's file-level rules and caption scoring (pycocoevalcap 1.2, Java).

Caption cases: 30+ per caption task, each with the tokens Stanford's PTBTokenizer must give under
both profiles (written by hand) and the per-image BLEU-1 and ROUGE-L computed from those tokens by
a naive implementation here; the library's per-image scores must agree.  One default test runs
the whole metric set (METEOR's Java start costs seconds); heavier checks are marked slow.
"""
import json
import math
import shutil
from collections import Counter

import pytest

from llava_dymoe.eval import coco_caption
from llava_dymoe.eval.scorers import get, score_file
from llava_dymoe.eval.ucit_scorers import clean_caption

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="caption scoring needs Java")


def _jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


# ------------------------------------------------------------------ ucit_exact: file-level bookkeeping
def test_answer_lines_are_the_denominator_duplicates_count_missing_do_not(tmp_path):
    refs, ans = tmp_path / "refs.jsonl", tmp_path / "answers.jsonl"
    _jsonl(refs, [{"question_id": i, "answer": a} for i, a in enumerate(["3", "4", "cat", "A"])])
    # q0 right twice, q1 wrong, q2 and q3 never answered: the authors' total is 3 lines, 2 right
    _jsonl(ans, [{"question_id": 0, "text": "3"}, {"question_id": 1, "text": "5"}, {"question_id": 0, "text": "3"}])
    got = score_file("ucit_exact", str(ans), str(refs))
    assert got["score"] == pytest.approx(200 / 3) and got["n"] == 3 and got["n_answered"] == 2
    assert got["missing"] == ["2", "3"] and got["duplicates"] == ["0"]


def test_answer_lines_unknown_id_empty_file_and_non_string_answer_are_one_line_errors(tmp_path):
    refs, ans = tmp_path / "refs.jsonl", tmp_path / "answers.jsonl"
    _jsonl(refs, [{"question_id": 1, "answer": "3"}, {"question_id": 2, "answer": 4}])
    _jsonl(ans, [{"question_id": 9, "text": "3"}])
    with pytest.raises(ValueError, match="question_id '9' is not in"):
        score_file("ucit_exact", str(ans), str(refs))
    ans.write_text("")
    with pytest.raises(ValueError, match="no answer lines"):
        score_file("ucit_exact", str(ans), str(refs))
    _jsonl(ans, [{"question_id": 2, "text": "4"}])
    with pytest.raises(ValueError, match="answer string"):
        score_file("ucit_exact", str(ans), str(refs))


# ------------------------------------------------------------------ Java refusal
def test_without_java_caption_scoring_is_refused_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(coco_caption.shutil, "which", lambda name: None)
    with pytest.raises(coco_caption.CaptionScoringUnavailable) as e:
        get("ucit_caption")(["a dog"], [["a dog runs"]])
    assert "needs Java" in str(e.value) and "\n" not in str(e.value)
    refs, ans = tmp_path / "refs.jsonl", tmp_path / "answers.jsonl"
    _jsonl(refs, [{"question_id": "q1", "image_id": 1, "answer": ["a dog runs"]}])
    _jsonl(ans, [{"question_id": "q1", "text": "a dog"}])
    for scorer in ("ucit_caption", "caption_coco"):
        with pytest.raises(ValueError, match="needs Java"):
            score_file(scorer, str(ans), str(refs))


# ------------------------------------------------------------------ caption joins (no Java needed to fail)
def test_position_join_refuses_what_the_authors_code_cannot_score(tmp_path):
    refs, ans = tmp_path / "refs.jsonl", tmp_path / "answers.jsonl"
    _jsonl(refs, [{"question_id": "q1", "image_id": 1, "answer": ["a dog"]},
                  {"question_id": "q2", "image_id": 2, "answer": ["a cat"]}])
    _jsonl(ans, [{"question_id": "q1", "text": "a dog"}])  # a lost answer: pycocoevalcap asserts
    with pytest.raises(ValueError, match="not exactly 1..1"):
        score_file("ucit_caption", str(ans), str(refs))
    _jsonl(ans, [{"question_id": "q2", "text": "a cat"}, {"question_id": "q1", "text": "a dog"}])
    with pytest.raises(ValueError, match="not in the test file's order"):
        score_file("ucit_caption", str(ans), str(refs))
    coco = tmp_path / "coco.json"
    coco.write_text(json.dumps({"images": [{"id": 1}, {"id": 2}], "annotations": [{"image_id": 1, "caption": "x"}]}))
    with pytest.raises(ValueError, match="image 2 has no reference caption"):
        score_file("ucit_caption", str(ans), str(coco))
    with pytest.raises(ValueError, match="joins answers by question_id"):
        score_file("caption_coco", str(ans), str(coco))


# ------------------------------------------------------------------ naive BLEU / ROUGE-L
def ngrams(tokens, n):
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def closest_ref_len(hyp_len, refs):
    return min((abs(len(r) - hyp_len), len(r)) for r in refs)[1]


def naive_bleu(pairs, n):
    """Corpus BLEU-n: clipped n-gram precisions pooled over the set, brevity penalty on the closest ref lengths."""
    logs, hyp_len, ref_len = 0.0, 0, 0
    for k in range(1, n + 1):
        correct = guess = 0
        for hyp, refs in pairs:
            counts = ngrams(hyp, k)
            best = Counter()
            for r in refs:
                best |= ngrams(r, k)
            correct += sum(min(c, best[g]) for g, c in counts.items())
            guess += max(len(hyp) - k + 1, 0)
        if correct == 0:
            return 0.0
        logs += math.log(correct / guess)
    for hyp, refs in pairs:
        hyp_len += len(hyp)
        ref_len += closest_ref_len(len(hyp), refs)
    bp = 1.0 if hyp_len >= ref_len else math.exp(1 - ref_len / hyp_len)
    return bp * math.exp(logs / n)


def lcs(a, b):
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            table[i + 1][j + 1] = table[i][j] + 1 if x == y else max(table[i][j + 1], table[i + 1][j])
    return table[-1][-1]


def naive_rouge_l(hyp, refs, beta=1.2):
    if not hyp:
        return 0.0
    p = max(lcs(hyp, r) / len(hyp) for r in refs)
    r = max(lcs(hyp, ref) / len(ref) for ref in refs)
    return 0.0 if p == 0 or r == 0 else (1 + beta ** 2) * p * r / (r + beta ** 2 * p)


# ------------------------------------------------------------------ caption hand cases
# (prediction, references, tokens under ucit, tokens under clean); the references tokenise as written
# in lower case without punctuation.  A "\r" case sits last in each list: the Java tokenizer reads it as
# a line break, which under the ucit profile moves the rest of that caption off the end of the set.
VIZWIZ = [
    ("A bottle of water.", ["a bottle of water on a table", "a plastic bottle"], "a bottle of water", None),
    ("a bottle of water", ["a bottle of water on a table"], "a bottle of water", None),
    ("A BOTTLE OF WATER", ["a bottle of water on a table"], "a bottle of water", None),
    ("  a bottle of water  ", ["a bottle of water on a table"], "a bottle of water", None),
    ("a bottle, of water!", ["a bottle of water on a table"], "a bottle of water", None),
    ("a can of soup", ["a can of tomato soup", "soup can"], "a can of soup", None),
    ("A can of soup. It is red.", ["a can of tomato soup"], "a can of soup it is red", None),
    ("a can of soup\nit is red", ["a can of tomato soup"], "a can of soup it is red", None),
    ("a can\tof soup", ["a can of tomato soup"], "a can of soup", None),
    ("", ["a can of tomato soup"], "", None),
    ("...", ["a can of tomato soup"], "", None),
    ("two cans of soup", ["a can of tomato soup"], "two cans of soup", None),
    ("2 cans of soup", ["two cans of soup"], "2 cans of soup", None),
    ("a 12-ounce can", ["a 12 ounce can of soup"], "a 12-ounce can", None),
    ("a 12 oz can", ["a 12 ounce can of soup"], "a 12 oz can", None),
    # -lowerCase turns the bracket tokens into -lrb- / -rrb-, which the punctuation filter ("-LRB-") misses
    ("a can (soup)", ["a can of soup"], "a can -lrb- soup -rrb-", None),
    ("a can; soup", ["a can of soup"], "a can soup", None),
    ("a can: soup", ["a can of soup"], "a can soup", None),
    ("a can -- soup", ["a can of soup"], "a can soup", None),
    ("the man's hat", ["a man 's hat", "a hat"], "the man 's hat", None),
    ("it's a hat", ["a hat on a chair"], "it 's a hat", None),
    ("don't know", ["i do n't know"], "do n't know", None),
    ("a \"red\" hat", ["a red hat"], "a red hat", None),
    ("a 'red' hat", ["a red hat"], "a red hat", None),
    ("a hat?", ["a hat"], "a hat", None),
    ("quality issues are too severe to recognize visual content.",
     ["quality issues are too severe to recognize visual content"],
     "quality issues are too severe to recognize visual content", None),
    ("a blurry photo of a keyboard", ["a blurry image of a computer keyboard"], "a blurry photo of a keyboard", None),
    ("a phone screen showing 3:45", ["a phone screen showing the time 3:45"], "a phone screen showing 3:45", None),
    ("a $5 bill", ["a five dollar bill"], "a $ 5 bill", None),
    ("a 5% discount", ["a sign with a discount"], "a 5 % discount", None),
    ("a box of tea\rlemon flavour", ["a box of lemon tea"], "a box of tea", "a box of tea lemon flavour"),
]

FLICKR = [
    ("A dog runs on the grass.", ["a dog is running on grass", "a brown dog runs in a field"], "a dog runs on the grass",
     None),
    ("Two men play soccer.", ["two men are playing soccer", "men playing football"], "two men play soccer", None),
    ("2 men play soccer", ["two men are playing soccer"], "2 men play soccer", None),
    ("two men play soccer", ["2 men are playing soccer"], "two men play soccer", None),
    ("A woman in a red dress.", ["a woman wearing a red dress"], "a woman in a red dress", None),
    ("A woman in a red dress. She smiles.", ["a woman wearing a red dress smiles"],
     "a woman in a red dress she smiles", None),
    ("A woman. A dress. A smile.", ["a woman wearing a red dress smiles"], "a woman a dress a smile", None),
    ("a child jumps", ["a child jumps into a pool", "a kid jumping"], "a child jumps", None),
    ("a child, jumping!", ["a child jumps into a pool"], "a child jumping", None),
    ("a child\njumps", ["a child jumps into a pool"], "a child jumps", None),
    ("a child\t jumps", ["a child jumps into a pool"], "a child jumps", None),
    ("", ["a child jumps into a pool"], "", None),
    ("!!!", ["a child jumps into a pool"], "!!!", None),  # one token, not the "!" the filter drops
    ("A CHILD JUMPS", ["a child jumps into a pool"], "a child jumps", None),
    ("a man rides a bike down a hill", ["a man rides a bike down a hill"], "a man rides a bike down a hill", None),
    ("a man rides a bike down a hill.", ["a man rides a bike down a hill"], "a man rides a bike down a hill", None),
    ("a man rides a bike down the hill", ["a man rides a bike down a hill"], "a man rides a bike down the hill", None),
    ("a man on a bike", ["a man rides a bike down a hill"], "a man on a bike", None),
    ("a man-on-a-bike", ["a man rides a bike down a hill"], "a man-on-a-bike", None),
    ("a man (on a bike)", ["a man rides a bike"], "a man -lrb- on a bike -rrb-", None),
    ("a man's bike", ["a man 's bike"], "a man 's bike", None),
    ("the dogs' toys", ["the toys of the dogs"], "the dogs toys", None),
    ("a 10 year old boy", ["a ten year old boy"], "a 10 year old boy", None),
    ("a ten-year-old boy", ["a ten year old boy"], "a ten-year-old boy", None),
    ("people walk at 5 p.m.", ["people walking in the evening"], "people walk at 5 p.m.", None),
    ("a crowd watches a concert", ["a crowd watching a rock concert", "people at a concert"],
     "a crowd watches a concert", None),
    ("a crowd; a concert", ["a crowd watching a concert"], "a crowd a concert", None),
    ("a crowd ... a concert", ["a crowd watching a concert"], "a crowd a concert", None),
    ("a cat sits on a mat", ["the cat sat on the mat"], "a cat sits on a mat", None),
    ("the cat sat on the mat", ["the cat sat on the mat"], "the cat sat on the mat", None),
    ("a boat on a lake\rat sunset", ["a boat on a lake at sunset"], "a boat on a lake", "a boat on a lake at sunset"),
]


def _tokenised(cases, clean):
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    fix = clean_caption if clean else (lambda s: s)
    tok = PTBTokenizer()
    res = tok.tokenize({k: [{"caption": fix(p)}] for k, (p, _, _, _) in enumerate(cases, start=1)})
    gts = tok.tokenize({k: [{"caption": fix(r)} for r in refs] for k, (_, refs, _, _) in enumerate(cases, start=1)})
    return gts, res


@needs_java
@pytest.mark.parametrize("name,cases", [("VizWiz-Caption", VIZWIZ), ("Flickr30k", FLICKR)])
@pytest.mark.parametrize("profile", ["ucit", "clean"])
def test_caption_hand_cases_tokens_bleu1_and_rouge_l_per_image(name, cases, profile):
    pytest.importorskip("pycocoevalcap")
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.rouge.rouge import Rouge

    assert len(cases) >= 30
    gts, res = _tokenised(cases, clean=profile == "clean")
    for k, (pred, refs, ucit_tokens, clean_tokens) in enumerate(cases, start=1):
        want = ucit_tokens if profile == "ucit" or clean_tokens is None else clean_tokens
        assert res[k] == [want], (name, profile, pred)
    _, bleu = Bleu(4).compute_score(gts, res)
    _, rouge = Rouge().compute_score(gts, res)
    for k, (pred, refs, ucit_tokens, clean_tokens) in enumerate(cases, start=1):
        hyp = res[k][0].split()
        ref_tokens = [r.split() for r in gts[k]]
        assert bleu[0][k - 1] == pytest.approx(naive_bleu([(hyp, ref_tokens)], 1), abs=1e-6), (name, pred)
        assert rouge[k - 1] == pytest.approx(naive_rouge_l(hyp, ref_tokens), abs=1e-12), (name, pred)


# ------------------------------------------------------------------ one whole set through score_file
SET = [  # (question_id, prediction, references): every BLEU order has matches, so naive BLEU-4 > 0
    ("q1", "A dog runs on the green grass.", ["a dog runs on the green grass", "a brown dog running on grass"]),
    ("q2", "two men are playing soccer in a park", ["two men are playing soccer", "men play football in a park"]),
    ("q3", "a woman in a red dress is smiling", ["a woman in a red dress smiles", "a smiling woman"]),
]


@needs_java
def test_whole_set_metrics_average_and_the_naive_bleu_rouge(tmp_path):
    pytest.importorskip("pycocoevalcap")
    refs, ans = tmp_path / "refs.jsonl", tmp_path / "answers.jsonl"
    _jsonl(refs, [{"question_id": q, "image_id": i, "answer": r} for i, (q, _, r) in enumerate(SET, start=1)])
    _jsonl(ans, [{"question_id": q, "text": p} for q, p, _ in SET])
    got = score_file("ucit_caption", str(ans), str(refs))
    m = got["metrics"]
    pairs = [(p.lower().rstrip(".").split(), [x.split() for x in r]) for _, p, r in SET]
    for n in (1, 2, 3, 4):
        assert m[f"Bleu_{n}"] == pytest.approx(100 * naive_bleu(pairs, n), rel=1e-6)
    assert m["ROUGE_L"] == pytest.approx(100 * sum(naive_rouge_l(h, r) for h, r in pairs) / len(pairs), rel=1e-9)
    assert 0 < m["METEOR"] < 100 and m["CIDEr"] > 0
    assert got["score"] == m["Average"] == pytest.approx(sum(m[k] for k in coco_caption.METRICS) / 7)
    assert got["n"] == 3 and got["missing"] == [] and got["per_question"] == {}


@pytest.mark.slow
@needs_java
def test_clean_profile_joins_by_id_and_equals_the_position_join_on_clean_ordered_answers(tmp_path):
    pytest.importorskip("pycocoevalcap")
    refs, ans, shuffled = tmp_path / "refs.jsonl", tmp_path / "answers.jsonl", tmp_path / "shuffled.jsonl"
    _jsonl(refs, [{"question_id": q, "image_id": i, "answer": r} for i, (q, _, r) in enumerate(SET, start=1)])
    _jsonl(ans, [{"question_id": q, "text": p} for q, p, _ in SET])
    _jsonl(shuffled, [{"question_id": q, "text": p} for q, p, _ in reversed(SET)])
    assert score_file("caption_coco", str(shuffled), str(refs))["metrics"] == \
        score_file("ucit_caption", str(ans), str(refs))["metrics"]
    _jsonl(shuffled, [{"question_id": q, "text": p} for q, p, _ in SET[:2]])
    missing = score_file("caption_coco", str(shuffled), str(refs))
    assert missing["missing"] == ["q3"] and missing["n"] == 3


@pytest.mark.slow
@needs_java
def test_caption_metrics_equal_the_authors_pipeline_through_pycocotools(tmp_path, monkeypatch):
    """The authors' path: COCO(file), loadRes(answers numbered by position), COCOEvalCap.evaluate() with SPICE
    dropped (their eval.py comments it out; here a stub scores 0 and is left out).  Images listed out of
    order, a "\\r" caption, brackets and an empty caption: every metric must be equal, not close."""
    pytest.importorskip("pycocoevalcap")
    from pycocoevalcap import eval as coco_eval_module
    from pycocotools.coco import COCO

    class NoSpice:
        def compute_score(self, gts, res):
            return 0.0, [0.0] * len(gts)

        def method(self):
            return "SPICE"

    monkeypatch.setattr(coco_eval_module, "Spice", NoSpice)
    captions = {1: ["a dog runs on the green grass", "a brown dog running"], 2: ["two men play soccer (football)"],
                3: ["a woman in a red dress smiles", "a smiling woman", "a lady in red"], 4: ["a boat on a lake"]}
    predictions = ["A dog runs on grass.", "two men (playing) soccer", "", "a boat\ron a lake"]
    coco = {"images": [{"id": i} for i in (3, 1, 4, 2)],
            "annotations": [{"image_id": i, "id": 10 * i + j, "caption": c} for i in (2, 4, 1, 3)
                            for j, c in enumerate(captions[i])]}
    coco_path, res_path = tmp_path / "val_coco_type.json", tmp_path / "pred_coco_type.json"
    coco_path.write_text(json.dumps(coco))
    res_path.write_text(json.dumps([{"image_id": k, "caption": p} for k, p in enumerate(predictions, start=1)]))
    gt = COCO(str(coco_path))
    evaluator = coco_eval_module.COCOEvalCap(gt, gt.loadRes(str(res_path)))
    evaluator.evaluate()
    theirs = [evaluator.eval[m] * 100 for m in coco_caption.METRICS]
    answers = tmp_path / "answers.jsonl"
    _jsonl(answers, [{"question_id": f"q{k}", "text": p} for k, p in enumerate(predictions, start=1)])
    ours = score_file("ucit_caption", str(answers), str(coco_path))
    assert [ours["metrics"][m] for m in coco_caption.METRICS] == theirs
    assert ours["score"] == sum(theirs) / len(theirs)
