"""``core/task_selector.py``: anchors, cosine similarities and bank weights against naive loops."""
import math

import pytest
import torch

from llava_dymoe.core.task_selector import (TaskAnchors, argmax_weights, cosine_to_anchors, mean_feature,
                                            one_hot_weights, selector_weights, shortlist_weights, task_similarity)


def _naive_cos(a, b):
    dot = sum(float(x) * float(y) for x, y in zip(a, b))
    na = math.sqrt(sum(float(x) ** 2 for x in a))
    nb = math.sqrt(sum(float(y) ** 2 for y in b))
    return dot / (na * nb)


def _naive_weights(feats, anchors, temperature):
    """HiDe's rule written out: per sequence, the mean over modalities of the cosine to each task's anchor,
    then exp(s / T) / sum exp(s / T)."""
    out = []
    n_seq = feats["text"].shape[0]
    n_tasks = next(iter(anchors.values())).shape[0]
    for b in range(n_seq):
        sims = []
        for t in range(n_tasks):
            cos = [_naive_cos(feats[m][b], anchors[m][t]) for m in ("image", "text") if feats.get(m) is not None]
            sims.append(sum(cos) / len(cos))
        exps = [math.exp(s / temperature) for s in sims]
        out.append([e / sum(exps) for e in exps])
    return torch.tensor(out)


def test_weights_match_the_naive_cosine_softmax():
    g = torch.Generator().manual_seed(0)
    anchors = {"image": torch.randn(3, 5, generator=g), "text": torch.randn(3, 7, generator=g)}
    feats = {"image": torch.randn(4, 5, generator=g), "text": torch.randn(4, 7, generator=g)}
    sa = TaskAnchors(anchors, torch.tensor([10, 20, 30]))
    for temperature in (0.1, 1.0):
        got = sa.weights(feats, temperature)
        assert got.shape == (4, 3) and got.dtype == torch.float32
        torch.testing.assert_close(got, _naive_weights(feats, anchors, temperature), rtol=1e-5, atol=1e-6)
    # an input without an image: the text cosine alone
    only_text = {"image": None, "text": feats["text"]}
    torch.testing.assert_close(sa.weights(only_text, 0.1), _naive_weights(only_text, anchors, 0.1), rtol=1e-5,
                               atol=1e-6)


def test_prism_choice_is_the_naive_argmax_one_hot():
    """Prism's port: the bank of the most similar task alone (the first one on a tie)."""
    g = torch.Generator().manual_seed(1)
    anchors = {"image": torch.randn(4, 5, generator=g), "text": torch.randn(4, 7, generator=g)}
    feats = {"image": torch.randn(6, 5, generator=g), "text": torch.randn(6, 7, generator=g)}
    got = TaskAnchors(anchors, torch.tensor([1, 1, 1, 1])).choice(feats)
    soft = _naive_weights(feats, anchors, 1.0)  # softmax is monotone: its largest entry is the most similar task
    want = torch.zeros(6, 4)
    for b in range(6):
        row = soft[b].tolist()
        want[b, row.index(max(row))] = 1.0
    assert got.dtype == torch.float32 and torch.equal(got, want)
    assert len({int(i) for i in got.argmax(dim=1)}) > 1  # the draw exercises more than one bank
    tie = torch.tensor([[0.5, 0.9, 0.9, 0.1], [0.2, 0.2, 0.2, 0.2]])
    assert argmax_weights(tie).tolist() == [[0.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]]


def test_shortlist_is_the_naive_k_most_similar_tasks():
    """anchored_keys' shortlist: weight 1 on the k most similar tasks (earlier first on a tie), 0 elsewhere."""
    g = torch.Generator().manual_seed(2)
    anchors = {"image": torch.randn(5, 5, generator=g), "text": torch.randn(5, 7, generator=g)}
    feats = {"image": torch.randn(6, 5, generator=g), "text": torch.randn(6, 7, generator=g)}
    soft = _naive_weights(feats, anchors, 1.0)  # monotone in the similarity
    for k in (1, 2, 5, 9):
        got = TaskAnchors(anchors, torch.ones(5, dtype=torch.long)).shortlist(feats, k)
        want = torch.zeros(6, 5)
        for b in range(6):
            row = soft[b].tolist()
            for t in sorted(range(5), key=lambda t: -row[t])[:min(k, 5)]:
                want[b, t] = 1.0
        assert got.dtype == torch.float32 and torch.equal(got, want), k
    tie = torch.tensor([[0.5, 0.9, 0.9, 0.9], [0.2, 0.2, 0.2, 0.2]])
    assert shortlist_weights(tie, 2).tolist() == [[0.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]]
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="shortlist size"):
            shortlist_weights(tie, bad)


def test_cosine_and_similarity_pieces():
    g = torch.Generator().manual_seed(1)
    f, a = torch.randn(2, 4, generator=g), torch.randn(3, 4, generator=g)
    cos = cosine_to_anchors(f, a)
    for b in range(2):
        for t in range(3):
            assert abs(float(cos[b, t]) - _naive_cos(f[b], a[t])) < 1e-6
    assert float(cosine_to_anchors(torch.zeros(1, 4), a).abs().max()) == 0.0  # a zero feature: cosine 0
    sim = task_similarity({"image": f, "text": f}, {"image": a, "text": a})
    torch.testing.assert_close(sim, cos)
    with pytest.raises(ValueError, match="no modality"):
        task_similarity({"image": None}, {"text": a})
    w = selector_weights(torch.tensor([[0.0, 0.1]]), 0.1)
    torch.testing.assert_close(w, torch.tensor([[1 / (1 + math.e), math.e / (1 + math.e)]]))
    with pytest.raises(ValueError, match="temperature"):
        selector_weights(sim, 0.0)
    assert torch.equal(mean_feature(torch.tensor([[1.0, 2.0], [3.0, 6.0]])), torch.tensor([2.0, 4.0]))


def test_one_hot_oracle():
    w = one_hot_weights(1, 3, batch=2)
    assert torch.equal(w, torch.tensor([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]]))
    with pytest.raises(ValueError, match="out of range"):
        one_hot_weights(3, 3, batch=1)


def test_anchors_append_carry_old_rows_bit_for_bit_and_round_trip():
    g = torch.Generator().manual_seed(2)
    first = TaskAnchors.first({"image": torch.randn(5, generator=g), "text": torch.randn(7, generator=g)}, 16)
    second = first.append({"image": torch.randn(5, generator=g), "text": torch.randn(7, generator=g)}, 12)
    assert second.num_tasks == 2 and second.counts.tolist() == [16, 12]
    for m in ("image", "text"):
        assert torch.equal(second.anchors[m][:1], first.anchors[m])
    back = TaskAnchors.from_tensors(second.to_tensors())
    assert all(torch.equal(back.anchors[m], second.anchors[m]) for m in ("image", "text"))
    assert torch.equal(back.head(1).anchors["text"], first.anchors["text"])
    with pytest.raises(ValueError, match="modalities"):
        second.append({"text": torch.zeros(7)}, 1)
    with pytest.raises(ValueError, match="one row per task"):
        TaskAnchors.from_tensors({"anchor.text": torch.zeros(3, 7), "count": torch.tensor([1, 2])})


def test_config_task_selector_needs_the_given_rule():
    from llava_dymoe.config import DyMoEConfig

    ok = DyMoEConfig(assign_rule="given", task_selector="hide", use_tag=False)
    assert ok.selector_temperature == 0.1 and ok.selector_samples == 512
    with pytest.raises(ValueError, match="task_selector='oracle'.*--dymoe_assign_rule given"):
        DyMoEConfig(task_selector="oracle")
    with pytest.raises(ValueError, match="task_selector must be one of"):
        DyMoEConfig(assign_rule="given", task_selector="nearest")
    with pytest.raises(ValueError, match="selector_temperature must be > 0"):
        DyMoEConfig(assign_rule="given", task_selector="hide", selector_temperature=0.0)
    with pytest.raises(ValueError, match="selector_samples must be >= 1"):
        DyMoEConfig(assign_rule="given", task_selector="hide", selector_samples=0)


def test_the_three_recipes_differ_only_in_the_selector():
    from llava_dymoe.methods import get_method

    oracle, hide, prism = (get_method(m).build_config().to_dict()
                           for m in ("oracle_bank", "hide_selector", "prism_selector"))
    assert {k for k in oracle if oracle[k] != hide[k]} == {"task_selector"}
    assert {k for k in oracle if oracle[k] != prism[k]} == {"task_selector"} and prism["task_selector"] == "prism"
    assert oracle["assign_rule"] == "given" and oracle["use_tag"] is False and oracle["c_exc"] == 0.0
    assert "UPPER BOUND" in get_method("oracle_bank").description
