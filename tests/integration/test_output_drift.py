"""Output-level drift measures (diagnostics/output_drift.py): new-bank delta norms and answer-logit KL,
checked against naive references (per-token, per-expert loops; explicit sum p log p/q)."""
import json
import math
import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from llava_dymoe.cli import main
from llava_dymoe.config import DyMoEConfig
from llava_dymoe.core import DyMoEContext, DyMoELinear, attach_context
from llava_dymoe.diagnostics.output_drift import DeltaNorms, answer_kl, bank_deltas, compare_answers, gate_for

# ------------------------------------------------------------------------------------------ naive references


def naive_gate(layer, x, kind):
    """Gate of one token x [in] by hand (float64): logits, top-k by sorting, softmax(z / T) over them."""
    cfg = layer.dymoe_config
    rows = torch.cat([layer.dymoe_router[k].detach() for k in layer.task_keys()]).double()
    n_e = rows.shape[0]
    if kind == "none":
        return [1.0] * n_e
    z = []
    for w in rows:
        if kind == "cosine" and cfg.router_scale > 0:
            z.append(cfg.router_scale * float(x @ w) / (max(float(x.norm()), 1e-6) * max(float(w.norm()), 1e-6)))
        else:
            z.append(float(x @ w))
    top = sorted(range(n_e), key=lambda e: -z[e])[:cfg.top_k]
    m = max(z[e] for e in top)
    ex = {e: math.exp((z[e] - m) / cfg.router_temperature) for e in top}
    total = sum(ex.values())
    return [ex.get(e, 0.0) / total for e in range(n_e)]


def naive_norms(layer, xs, n_before, kind):
    """Mean over tokens of ||delta_new||, ||delta_old||, ||W0 x|| with a loop over tokens and experts."""
    ept, r = layer.experts_per_task, layer.expert_rank
    sums = [0.0, 0.0, 0.0]
    for x in xs:
        x = x.double()
        g = naive_gate(layer, x, kind)
        new = torch.zeros(layer.out_features, dtype=torch.float64)
        old = torch.zeros_like(new)
        for e in range(len(g)):
            k = layer.task_keys()[e // ept]
            rows = slice((e % ept) * r, (e % ept + 1) * r)
            a = layer.dymoe_A[k].detach().double()[rows]         # [r, in]
            b = layer.dymoe_B[k].detach().double()[:, rows]      # [out, r]
            contrib = g[e] * layer.scaling * (b @ (a @ x))
            if e // ept < n_before:
                old += contrib
            else:
                new += contrib
        base = layer.weight.detach().double() @ x
        sums[0] += float(new.norm())
        sums[1] += float(old.norm())
        sums[2] += float(base.norm())
    return [s / len(xs) for s in sums]


def _layer(router, router_scale=1.0, seed=0):
    torch.manual_seed(seed)
    extra = dict(use_tag=False, c_exc=0.0, c_spe=0.0) if router == "none" else {}
    cfg = DyMoEConfig(experts_per_task=3, expert_rank=2, top_k=4, lora_dropout=0.0, router=router,
                      router_scale=router_scale, router_temperature=0.5, **extra)
    layer = DyMoELinear(nn.Linear(8, 5, bias=True), cfg)
    for _ in range(3):
        layer.add_task()
    with torch.no_grad():
        for k in layer.task_keys():
            layer.dymoe_B[k].normal_()
    return layer.eval()


# ------------------------------------------------------------------------------------------ delta norms


@pytest.mark.parametrize("router,scale", [("cosine", 1.0), ("cosine", 0.0), ("linear", 1.0), ("none", 1.0)])
def test_delta_norms_match_a_per_token_per_expert_loop(router, scale):
    layer = _layer(router, scale)
    model = nn.ModuleDict({"proj": layer})
    ctx = DyMoEContext()
    ctx.valid_mask = torch.tensor([[1, 1, 0, 1, 1, 1], [1, 0, 1, 1, 0, 0]], dtype=torch.bool)
    attach_context(model, ctx)
    x = torch.randn(2, 6, 8)
    kind = "linear" if router == "cosine" and scale <= 0 else router
    for n_before in (1, 2, 3):
        norms = DeltaNorms(n_before)
        with torch.no_grad(), norms.attached(model):
            y = model["proj"](x)
        assert not layer._forward_hooks  # detached after the block
        row = norms.summary()["proj"]
        assert row["n_tokens"] == int(ctx.valid_mask.sum())
        new, old, base = naive_norms(layer, x[ctx.valid_mask], n_before, kind)
        assert row["new_delta_norm"] == pytest.approx(new, rel=1e-5, abs=1e-9)
        assert row["old_delta_norm"] == pytest.approx(old, rel=1e-5)
        assert row["base_norm"] == pytest.approx(base, rel=1e-5)
        assert row["new_over_base"] == pytest.approx(new / base, rel=1e-5, abs=1e-9)
        assert row["new_over_old"] == pytest.approx(new / old, rel=1e-5, abs=1e-9)
        if n_before == 3:  # no bank beyond A's: exactly zero
            assert row["new_delta_norm"] == 0.0 and row["new_over_base"] == 0.0 and row["new_over_old"] == 0.0
        base_t, old_t, new_t = bank_deltas(layer, x, n_before)  # every router kind: the layer's own output
        assert torch.allclose(base_t + layer.bias + old_t + new_t, y.reshape(-1, 5), atol=1e-5)
    g = gate_for(layer, x)
    assert g.shape == (12, 9) and torch.allclose(g.sum(1), torch.full((12,), 9.0 if router == "none" else 1.0))


def test_delta_norms_refuse_fewer_banks_than_before():
    layer = _layer("cosine")
    model = nn.ModuleDict({"proj": layer})
    with pytest.raises(ValueError, match="training order"), torch.no_grad(), DeltaNorms(4).attached(model):
        layer(torch.randn(3, 8))
    assert not layer._forward_hooks


# ------------------------------------------------------------------------------------------ answer KL


def test_answer_kl_matches_an_explicit_sum():
    torch.manual_seed(1)
    la, lb = torch.randn(7, 50) * 3, torch.randn(7, 50) * 3
    p = torch.softmax(la.double(), -1)
    q = torch.softmax(lb.double(), -1)
    explicit = (p * (p / q).log()).sum(-1)
    assert torch.allclose(answer_kl(la, lb), explicit, rtol=1e-10, atol=1e-12)
    via_kl_div = F.kl_div(torch.log_softmax(lb.double(), -1), p, reduction="none").sum(-1)
    assert torch.allclose(answer_kl(la, lb), via_kl_div, rtol=1e-10, atol=1e-12)
    assert torch.equal(answer_kl(la, la.clone()), torch.zeros(7, dtype=torch.float64))
    # pooled over questions: token-weighted mean, argmax change and token accuracy
    target = la.argmax(-1)
    before = [{"logits": la[:3], "target": target[:3]}, {"logits": la[3:], "target": target[3:]}]
    after = [{"logits": lb[:3], "target": target[:3]}, {"logits": lb[3:], "target": target[3:]}]
    out = compare_answers(before, after)
    assert out["n_answer_tokens"] == 7 and out["answer_kl"] == pytest.approx(float(explicit.mean()), rel=1e-10)
    assert out["argmax_changed"] == pytest.approx(float((la.argmax(-1) != lb.argmax(-1)).double().mean()))
    assert out["token_acc_before"] == 1.0
    assert out["token_acc_after"] == pytest.approx(float((lb.argmax(-1) == target).double().mean()))
    same = compare_answers(before, before)
    assert same["answer_kl"] == 0.0 and same["argmax_changed"] == 0.0


# ------------------------------------------------------------------------------------------ cli drift


def _run_drift(tiny, smoke_data, out, before, after, n_questions=2):
    assert main(["drift", "--before", before, "--after", after, "--questions", smoke_data.questions,
                 "--image-folder", smoke_data.image_folder, "--model-base", tiny.llm, "--output-dir", str(out),
                 "--references", smoke_data.references, "--max-questions", str(n_questions),
                 "--max-new-tokens", "2"]) == 0
    assert {"drift.json", "drift.md", "drift_heatmap.png", "delta_norm_heatmap.png"} <= set(os.listdir(out))
    return json.load(open(out / "drift.json"))


def test_output_drift_is_zero_for_the_same_checkpoint(sequence, tiny, smoke_data, tmp_path):
    report = _run_drift(tiny, smoke_data, tmp_path, sequence[1], sequence[1])
    (s,) = report["stages"]
    kl = s["answer_logits"]
    assert kl["answer_kl"] == 0.0 and kl["argmax_changed"] == 0.0 and kl["n_answer_tokens"] > 0
    assert kl["token_acc_before"] == kl["token_acc_after"]
    for m in s["modules"].values():
        assert m["new_delta_norm"] == 0.0 and m["new_over_base"] == 0.0 and m["new_over_old"] == 0.0
        assert m["old_delta_norm"] > 0.0 and m["base_norm"] > 0.0
    assert s["mean_new_delta_norm"] == 0.0 and s["median_new_over_base"] == 0.0
    assert all(v == 0.0 for row in s["new_delta_norm_matrix"] for v in row)


def _captured_inputs(model, names):
    seen = {n: [] for n in names}
    modules = dict(model.named_modules())
    handles = [modules[n].register_forward_hook(lambda mod, args, out, n=n: seen[n].append(args[0].detach()))
               for n in names]
    return seen, handles


def test_output_drift_over_a_sequence_matches_naive_references(sequence, tiny, smoke_data, tmp_path):
    from llava.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
    from llava.conversation import conv_templates

    from llava_dymoe.diagnostics.probe import Probe, read_questions

    t1, t2 = sequence
    report = _run_drift(tiny, smoke_data, tmp_path, t1, t2)
    (s,) = report["stages"]
    assert report["num_tasks_before"] == 1 and s["num_tasks"] == 2
    md = open(tmp_path / "drift.md").read()
    assert "answer KL" in md and "new-bank delta" in md and "answer logits (teacher forced" in md

    rows = read_questions(smoke_data.questions, 2)
    refs = {json.loads(line)["question_id"]: json.loads(line)["answer"] for line in open(smoke_data.references)}
    names = ["model.layers.0.self_attn.q_proj", "model.layers.1.mlp.down_proj"]
    logits = {}
    for key, path in (("a", t1), ("b", t2)):
        probe = Probe(path, tiny.llm)
        if key == "b":  # delta norms: capture the module inputs of the drift prompts, recompute by hand
            seen, handles = _captured_inputs(probe.model, names)
            with torch.inference_mode():
                for row in rows:
                    pixels, _ = probe.image(smoke_data.image_folder, row["image"])
                    probe.model(input_ids=probe.question_ids(row["text"]), images=pixels)
            for h in handles:
                h.remove()
            for n in names:
                layer = dict(probe.model.named_modules())[n]
                xs = torch.cat([x.reshape(-1, layer.in_features) for x in seen[n]])
                assert xs.shape[0] == report["n_tokens"]
                new, old, base = naive_norms(layer, xs, 1, "cosine")
                m = s["modules"][n]
                assert new > 0.0
                assert m["new_delta_norm"] == pytest.approx(new, rel=1e-4)
                assert m["old_delta_norm"] == pytest.approx(old, rel=1e-4)
                assert m["base_norm"] == pytest.approx(base, rel=1e-4)
        # answer logits: the training-format prompt, answer positions found by hand after the image splice
        per_q = []
        for row in rows:
            conv_in = [{"from": "human", "value": "<image>\n" + row["text"]},
                       {"from": "gpt", "value": refs[row["question_id"]]}]
            ids, labels = probe.conversation_ids(conv_in)
            conv = conv_templates["vicuna_v1"].copy()
            conv.append_message(conv.roles[0], "<image>\n" + row["text"])
            conv.append_message(conv.roles[1], refs[row["question_id"]])
            text = probe.tokenizer.decode([t for t in ids[0].tolist() if t != IMAGE_TOKEN_INDEX])
            expected = probe.tokenizer.bos_token + conv.get_prompt().replace("<image>", "")
            assert text.replace(" ", "") == expected.replace(" ", "")
            answer_ids = labels[0][labels[0] != IGNORE_INDEX].tolist()
            expected = refs[row["question_id"]] + "</s>"
            assert probe.tokenizer.decode(answer_ids).replace(" ", "") == expected.replace(" ", "")
            pixels, _ = probe.image(smoke_data.image_folder, row["image"])
            with torch.inference_mode():
                out = probe.model(input_ids=ids, images=pixels).logits[0]
            img = int((ids[0] == IMAGE_TOKEN_INDEX).nonzero())
            picked = []
            for j in range(ids.shape[1]):
                if labels[0, j] != IGNORE_INDEX:
                    post = j + (probe.n_patches - 1 if j > img else 0)
                    picked.append(out[post - 1])
            per_q.append(torch.stack(picked).double())
        logits[key] = per_q
        del probe
    kl_sum, changed, n = 0.0, 0, 0
    for la, lb in zip(logits["a"], logits["b"]):
        p, q = torch.softmax(la, -1), torch.softmax(lb, -1)
        kl_sum += float((p * (p.log() - q.log())).sum())
        changed += int((la.argmax(-1) != lb.argmax(-1)).sum())
        n += la.shape[0]
    kl = s["answer_logits"]
    assert kl["n_answer_tokens"] == n
    assert kl["answer_kl"] > 0.0 and kl["answer_kl"] == pytest.approx(kl_sum / n, rel=1e-6)
    assert kl["argmax_changed"] == changed / n
