"""The task-selector baselines ``oracle_bank`` (an upper bound) and ``hide_selector`` through upstream ``train()``.

Two synthetic tasks (``read`` then ``classify``: other images, other questions), each method trained on both with
the same seed, 3 steps per task:

* features and anchors: the prompt-text mask, and the saved anchors against a naive per-sample recomputation;
* both methods train their banks identically (bit for bit), task 1's banks and anchors are carried into task 2;
* a checkpoint round trip: the loaded banks and anchors are the saved ones, the eval hook gives the naive weights,
  and a decoding step keeps its prompt's weights;
* ``oracle_bank`` with ``DYMOE_EVAL_TASK_ID=i`` answers as the model with bank i alone, refuses without it (and
  refuses another rule through ``DYMOE_EVAL_ASSIGN_RULE``);
* ``hide_selector``'s weights favour each task's own bank on its test prompts;
* ``key_selector`` (dymoe_plus's key decision over the same banks) trains the same banks too, fits each task's keys
  after its training on the prompt tokens, and keeps a prompt's decision while decoding;
* ``prism_selector`` (Prism's port of HiDe's selector) trains hide_selector's banks and anchors bit for bit and
  answers as ``oracle_bank`` told the task its anchors are most similar to;
* ``anchored_keys`` (candidate 2: the anchors shortlist, the keys choose) trains key_selector's banks and keys and
  hide_selector's anchors bit for bit; its shortlist of 2 of 2 banks answers as key_selector, of 1 as prism_selector.
"""
import json
import os
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO, train_task  # module level: a lazy import finds another folder's conftest
from llava_dymoe.integration import checkpoint as ckpt
from llava_dymoe.integration.selector import ANCHORS, TASK_ID_ENV, read_anchors
from llava_dymoe.integration.task_features import IGNORE_INDEX, IMAGE_TOKEN_INDEX, prompt_text_mask

STEPS = 3
TASKS = ("read", "classify")
METHODS = ("oracle_bank", "hide_selector", "key_selector", "prism_selector", "anchored_keys")


@pytest.fixture(scope="module")
def selector_suite(tmp_path_factory):
    from llava_dymoe.synthetic.generate import generate_suite

    return generate_suite(str(tmp_path_factory.mktemp("selector_suite")), seed=0, n_train=12, n_test=6,
                          image_size=32, tasks=list(TASKS))


@pytest.fixture(scope="module")
def two_tasks(selector_suite):
    suite = selector_suite
    return {name: SimpleNamespace(train_json=suite.path(suite.tasks[name].train_json),
                                  question_file=suite.path(suite.tasks[name].question_file),
                                  image_folder=suite.image_folder) for name in TASKS}


@pytest.fixture(scope="module")
def selector_runs(tiny, two_tasks, tmp_path_factory):
    """``{method: (task-1 dir, task-2 dir)}``, both methods on the same two tasks with the same seed."""
    out = {}
    for method in METHODS:
        root = tmp_path_factory.mktemp(f"seq_{method}")
        t1, t2 = root / f"1_read_llava_{method}", root / f"2_classify_llava_{method}"
        train_task(tiny, two_tasks["read"], t1, 1, method=method, steps=STEPS)
        train_task(tiny, two_tasks["classify"], t2, 2, prev=t1, method=method, steps=STEPS)
        out[method] = (str(t1), str(t2))
    return out


def _data(tiny, task):
    """The tiny model's tokenizer, image processor and LLaVA dataset of ``task`` (as LLaVA's train() builds it)."""
    from transformers import AutoTokenizer
    import llava.train.train as lt
    from llava.model.multimodal_encoder.builder import build_vision_tower

    tok = AutoTokenizer.from_pretrained(tiny.llm, use_fast=False, model_max_length=256, padding_side="right")
    tok.pad_token = tok.unk_token
    lt.conversation_lib.default_conversation = lt.conversation_lib.conv_templates["vicuna_v1"]
    tower = build_vision_tower(SimpleNamespace(mm_vision_tower=tiny.clip, mm_vision_select_layer=-2,
                                               mm_vision_select_feature="patch"))
    args = lt.DataArguments(data_path=task.train_json, lazy_preprocess=True, is_multimodal=True,
                            image_folder=task.image_folder, image_aspect_ratio="pad")
    args.image_processor, args.mm_use_im_start_end = tower.image_processor, False
    return lt.make_supervised_data_module(tokenizer=tok, data_args=args)


def _load(path, tiny, monkeypatch, task_id=None, max_tasks=None):
    from llava_dymoe.integration.eval_loader import MAX_TASKS_ENV, load_dymoe_for_eval

    for var, value in ((TASK_ID_ENV, task_id), (MAX_TASKS_ENV, max_tasks)):
        if value is None:
            monkeypatch.delenv(var, raising=False)
        else:
            monkeypatch.setenv(var, str(value))
    _, model, _, _ = load_dymoe_for_eval(path, tiny.llm, "x", device="cpu", device_map="cpu",
                                         torch_dtype=torch.float32)
    model.get_vision_tower().to(torch.float32)
    return model


def _prompt(batch, i):
    """Sample ``i`` of a collated batch cut before its answer: the prompt an eval script would send."""
    end = int((batch["labels"][i] != IGNORE_INDEX).nonzero()[0])
    return batch["input_ids"][i:i + 1, :end], batch["images"][i:i + 1]


def test_prompt_text_mask_keeps_the_question_after_the_image():
    ids = torch.tensor([[1, 5, 6, IMAGE_TOKEN_INDEX, 7, 8, 9, 10, 0],
                        [1, 5, 7, 8, 9, 10, 11, 0, 0]])
    labels = torch.tensor([[IGNORE_INDEX] * 7 + [10, IGNORE_INDEX], [IGNORE_INDEX] * 5 + [10, 11, -100, -100]])
    mask = torch.tensor([[1] * 8 + [0], [1] * 7 + [0, 0]])
    got = prompt_text_mask(ids, labels, mask)
    assert got[0].tolist() == [False] * 4 + [True, True, True, False, False]  # after <image>, before the answer
    assert got[1].tolist() == [True] * 5 + [False] * 4  # no image: every prompt token


def _naive_anchor(tiny, task):
    """Per sample, the vision tower's patch mean and the mean input embedding of the question tokens (found one
    by one), averaged over the task's training samples."""
    from llava_dymoe.integration.tiny_model import build_llava_model

    model = build_llava_model(tiny.llm, tiny.clip)
    model.get_vision_tower().to(torch.float16)  # as LLaVA's train() runs the tower without --bf16
    data = _data(tiny, task)
    images, texts = [], []
    with torch.no_grad():
        for i in range(len(data["train_dataset"])):
            item = data["data_collator"]([data["train_dataset"][i]])
            images.append(model.get_vision_tower()(item["images"])[0].float().mean(dim=0))
            ids, labels = item["input_ids"][0].tolist(), item["labels"][0].tolist()
            start = ids.index(IMAGE_TOKEN_INDEX) + 1
            keep = [t for t, lab in zip(ids[start:], labels[start:]) if lab == IGNORE_INDEX]
            texts.append(model.get_model().embed_tokens(torch.tensor(keep)).float().mean(dim=0))
    return torch.stack(images).mean(dim=0), torch.stack(texts).mean(dim=0), len(images)


def test_anchors_match_a_naive_recomputation_and_are_carried(selector_runs, tiny, two_tasks):
    t1, t2 = selector_runs["hide_selector"]
    first, second = read_anchors(t1), read_anchors(t2)
    assert first.num_tasks == 1 and second.num_tasks == 2
    for m in ("image", "text"):  # task 1's row is carried bit for bit
        assert torch.equal(second.anchors[m][:1], first.anchors[m])
    for row, task in enumerate(TASKS):
        image, text, n = _naive_anchor(tiny, two_tasks[task])
        assert int(second.counts[row]) == n
        torch.testing.assert_close(second.anchors["image"][row], image, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(second.anchors["text"][row], text, rtol=1e-5, atol=1e-6)
    assert ANCHORS in ckpt.verify(t2)["sha256"]  # hashed in the completion marker
    assert read_anchors(selector_runs["oracle_bank"][1]) is None


def test_both_methods_train_identical_banks_and_keep_task_one(selector_runs):
    (o1, o2), (h1, h2) = selector_runs["oracle_bank"], selector_runs["hide_selector"]
    k1, k2 = selector_runs["key_selector"]
    p1, p2 = selector_runs["prism_selector"]
    for a, b in ((o1, h1), (o2, h2), (o1, k1), (o2, k2), (h1, p1), (h2, p2)):
        ea, eb = load_file(os.path.join(a, ckpt.EXPERTS)), load_file(os.path.join(b, ckpt.EXPERTS))
        eb = {k: v for k, v in eb.items() if ".dymoe_key." not in k}  # key_selector's keys: the other test
        assert set(ea) == set(eb) and all(torch.equal(ea[k], eb[k]) for k in ea)
    first, second = load_file(os.path.join(h1, ckpt.EXPERTS)), load_file(os.path.join(h2, ckpt.EXPERTS))
    assert first and set(first) < set(second) and all(torch.equal(first[k], second[k]) for k in first)
    assert any(k.endswith("dymoe_B.t1") and second[k].abs().sum() > 0 for k in second)  # task 2 trained its bank
    for method, (_, t2) in selector_runs.items():
        block = ckpt.load_task_state(t2)["dymoe"]
        assert block["method"] == method and block["config"]["assign_rule"] == "given"
        assert block["config"]["task_selector"] == {"oracle_bank": "oracle", "hide_selector": "hide",
                                                    "key_selector": "none", "prism_selector": "prism",
                                                    "anchored_keys": "shortlist"}[method]
    a1, a2 = selector_runs["anchored_keys"]
    for h, p in ((h1, p1), (h2, p2), (h1, a1), (h2, a2)):  # the same anchors, byte for byte
        assert open(os.path.join(h, ANCHORS), "rb").read() == open(os.path.join(p, ANCHORS), "rb").read()
    for k, a in ((k1, a1), (k2, a2)):  # anchored_keys: key_selector's banks and keys, bit for bit
        ek, ea = load_file(os.path.join(k, ckpt.EXPERTS)), load_file(os.path.join(a, ckpt.EXPERTS))
        assert set(ek) == set(ea) and all(torch.equal(ek[n], ea[n]) for n in ek)


def test_anchored_keys_answer_as_key_selector_with_every_bank_and_as_prism_with_one(selector_runs, tiny, two_tasks,
                                                                                   monkeypatch):
    """The shortlist (the anchors' k most similar tasks) restricts the keys' choice: k = 2 of 2 banks leaves it
    free (key_selector's logits), k = 1 leaves the anchors' argmax alone (prism_selector's logits), bit for bit."""
    data = _data(tiny, two_tasks["read"])
    batch = data["data_collator"]([data["train_dataset"][i] for i in range(3)])
    anchored = _load(selector_runs["anchored_keys"][1], tiny, monkeypatch)
    assert anchored._dymoe_task_selector.kind == "shortlist" and anchored._dymoe_task_selector.shortlist == 2
    with torch.no_grad():
        got = anchored(**batch).logits
        assert torch.equal(got, _load(selector_runs["key_selector"][1], tiny, monkeypatch)(**batch).logits)
        anchored._dymoe_task_selector.shortlist = 1
        one = anchored(**batch).logits
        assert torch.equal(one, _load(selector_runs["prism_selector"][1], tiny, monkeypatch)(**batch).logits)
    assert not torch.equal(got, one)  # the keys and the anchors disagree on some projection: the test can fail


def test_key_selector_fits_each_tasks_keys_after_training_and_carries_them(selector_runs):
    """Task 1's keys are carried into task 2 bit for bit; each task's keys were fitted (they are no longer the
    bank's router rows they start as), and only key_selector's checkpoints have keys."""
    t1, t2 = selector_runs["key_selector"]
    first, second = load_file(os.path.join(t1, ckpt.EXPERTS)), load_file(os.path.join(t2, ckpt.EXPERTS))
    keys1 = {k: v for k, v in first.items() if ".dymoe_key." in k}
    keys2 = {k: v for k, v in second.items() if ".dymoe_key." in k}
    assert keys1 and all(k.endswith(".t0") for k in keys1) and set(keys1) < set(keys2)
    assert all(torch.equal(keys1[k], keys2[k]) for k in keys1)
    for key, rows in keys2.items():
        assert not torch.allclose(rows, second[key.replace(".dymoe_key.", ".dymoe_router.")]), key
    assert not any(".dymoe_key." in k for k in load_file(os.path.join(selector_runs["oracle_bank"][1], ckpt.EXPERTS)))


def test_key_selector_round_trip_keeps_the_prompts_banks_while_decoding(selector_runs, tiny, two_tasks, monkeypatch):
    """Loaded with no task id: every projection decides one bank per prompt, keeps it for the decoding steps, and
    a second load generates the same answer."""
    from llava_dymoe.core import dymoe_layers

    path = selector_runs["key_selector"][1]
    model = _load(path, tiny, monkeypatch)
    layers = dict(dymoe_layers(model))
    seen = {name: [] for name in layers}
    hooks = [layer.register_forward_hook(lambda m, a, o, name=name: seen[name].append(m._dymoe_seq_bank.clone()))
             for name, layer in layers.items()]
    data = _data(tiny, two_tasks["classify"])
    ids, images = _prompt(data["data_collator"]([data["train_dataset"][0]]), 0)
    with torch.no_grad():
        out = model.generate(ids, images=images, do_sample=False, max_new_tokens=4, min_new_tokens=4,
                             pad_token_id=0)
    for h in hooks:
        h.remove()
    assert all(len(v) == 4 and all(torch.equal(b, v[0]) for b in v) for v in seen.values())
    again = _load(path, tiny, monkeypatch)
    with torch.no_grad():
        assert torch.equal(again.generate(ids, images=images, do_sample=False, max_new_tokens=4, min_new_tokens=4,
                                          pad_token_id=0), out)


def test_round_trip_hide_weights_are_the_naive_selector_and_kept_while_decoding(selector_runs, tiny, two_tasks,
                                                                               monkeypatch):
    from llava_dymoe.core import dymoe_layers
    from llava_dymoe.core.task_selector import selector_weights, task_similarity
    from llava_dymoe.integration.task_features import batch_features

    path = selector_runs["hide_selector"][1]
    model = _load(path, tiny, monkeypatch)
    saved = load_file(os.path.join(path, ckpt.EXPERTS))
    for name, layer in dymoe_layers(model):
        for k in layer.task_keys():
            assert torch.equal(layer.dymoe_B[k], saved[f"{name}.dymoe_B.{k}"])
    anchors = read_anchors(path)
    data = _data(tiny, two_tasks["classify"])
    batch = data["data_collator"]([data["train_dataset"][i] for i in range(2)])
    ids, images = _prompt(batch, 0)
    ctx = next(layer for _, layer in dymoe_layers(model))._dymoe_ctx
    seen = []
    layer = dict(dymoe_layers(model))["model.layers.1.mlp.down_proj"]
    hook = layer.register_forward_pre_hook(lambda m, a: seen.append(ctx.bank_weights.clone()))
    with torch.no_grad():
        out = model.generate(ids, images=images, do_sample=False, max_new_tokens=4, min_new_tokens=4,
                             pad_token_id=0)
    hook.remove()
    feats = batch_features(model, {"input_ids": ids, "images": images})
    want = selector_weights(task_similarity(feats, anchors.anchors), 0.1)
    assert len(seen) == 4 and all(torch.equal(w, seen[0]) for w in seen)  # the prompt and 3 decoding steps
    torch.testing.assert_close(seen[0], want)
    again = _load(path, tiny, monkeypatch)
    with torch.no_grad():
        assert torch.equal(again.generate(ids, images=images, do_sample=False, max_new_tokens=4,
                                          min_new_tokens=4, pad_token_id=0), out)


def test_prism_answers_as_the_oracle_told_the_most_similar_task(selector_runs, tiny, two_tasks, monkeypatch):
    """Prism's one-hot argmax over hide_selector's anchors (naive recomputation), kept while decoding; with the
    banks bit-identical, its answer is oracle_bank's when told that task."""
    from llava_dymoe.core import dymoe_layers
    from llava_dymoe.core.task_selector import task_similarity
    from llava_dymoe.integration.task_features import batch_features

    path = selector_runs["prism_selector"][1]
    model = _load(path, tiny, monkeypatch)
    anchors = read_anchors(path)
    ctx = next(layer for _, layer in dymoe_layers(model))._dymoe_ctx
    layer = dict(dymoe_layers(model))["model.layers.1.mlp.down_proj"]
    picked = set()
    for task in TASKS:
        data = _data(tiny, two_tasks[task])
        batch = data["data_collator"]([data["train_dataset"][i] for i in range(2)])
        ids, images = _prompt(batch, 0)
        seen = []
        hook = layer.register_forward_pre_hook(lambda m, a: seen.append(ctx.bank_weights.clone()))
        gen = dict(images=images, do_sample=False, max_new_tokens=4, min_new_tokens=4, pad_token_id=0)
        with torch.no_grad():
            out = model.generate(ids, **gen)
        hook.remove()
        sims = task_similarity(batch_features(model, {"input_ids": ids, "images": images}), anchors.anchors)[0]
        best = max(range(2), key=lambda t: float(sims[t]))
        want = torch.zeros(1, 2)
        want[0, best] = 1.0
        assert len(seen) == 4 and all(torch.equal(w, want) for w in seen)  # the prompt and 3 decoding steps
        oracle = _load(selector_runs["oracle_bank"][1], tiny, monkeypatch, task_id=best + 1)
        with torch.no_grad():
            assert torch.equal(oracle.generate(ids, **gen), out)
        picked.add(best)
    assert picked == {0, 1}  # each task's prompt picked its own bank here


def test_hide_checkpoint_answered_with_prism_is_prism_selectors_model(selector_runs, tiny, two_tasks, monkeypatch):
    """``DYMOE_EVAL_TASK_SELECTOR=prism`` on hide_selector's checkpoint gives prism_selector's logits bit for bit (the
    same banks and anchors); only the anchor selectors swap, and the reeval front refuses anything else."""
    from llava_dymoe.integration.checkpoint import CheckpointError
    from llava_dymoe.integration.selector import TASK_SELECTOR_ENV
    from llava_dymoe.protocol.reeval import _override

    data = _data(tiny, two_tasks["read"])
    batch = data["data_collator"]([data["train_dataset"][i] for i in range(3)])
    prism = _load(selector_runs["prism_selector"][1], tiny, monkeypatch)
    hide = _load(selector_runs["hide_selector"][1], tiny, monkeypatch)
    monkeypatch.setenv(TASK_SELECTOR_ENV, "prism")
    swapped = _load(selector_runs["hide_selector"][1], tiny, monkeypatch)
    assert swapped._dymoe_task_selector.kind == "prism" and hide._dymoe_task_selector.kind == "hide"
    with torch.no_grad():
        got, want, soft = (m(**batch).logits for m in (swapped, prism, hide))
    assert torch.equal(got, want) and not torch.allclose(got, soft)
    with pytest.raises(CheckpointError, match="only the anchor selectors"):
        _load(selector_runs["oracle_bank"][1], tiny, monkeypatch, task_id=1)
    monkeypatch.setenv(TASK_SELECTOR_ENV, "oracle")
    with pytest.raises(CheckpointError, match="only the anchor selectors"):
        _load(selector_runs["hide_selector"][1], tiny, monkeypatch)
    monkeypatch.delenv(TASK_SELECTOR_ENV)
    assert _override({"method": "hide_selector"}, None, "prism") == ({TASK_SELECTOR_ENV: "prism"}, "selector-prism")
    for record, rule, kind, message in (({"method": "key_selector"}, None, "prism", "task_selector='none'"),
                                        ({"method": "hide_selector"}, None, "oracle", "can be answered with"),
                                        ({"method": "hide_selector"}, None, None, "exactly one of"),
                                        ({"method": "hide_selector"}, "cascade", "prism", "exactly one of")):
        with pytest.raises(ValueError, match=message):
            _override(record, rule, kind)


def test_oracle_picks_exactly_the_named_bank_and_refuses_without_it(selector_runs, tiny, two_tasks, monkeypatch):
    from llava_dymoe.integration.checkpoint import CheckpointError

    path = selector_runs["oracle_bank"][1]
    with pytest.raises(CheckpointError, match=TASK_ID_ENV):
        _load(path, tiny, monkeypatch)
    with pytest.raises(CheckpointError, match="1..2"):
        _load(path, tiny, monkeypatch, task_id=3)
    monkeypatch.setenv("DYMOE_EVAL_ASSIGN_RULE", "paper")
    with pytest.raises(CheckpointError, match="cannot be swapped"):
        _load(path, tiny, monkeypatch, task_id=1)
    monkeypatch.delenv("DYMOE_EVAL_ASSIGN_RULE")
    data = _data(tiny, two_tasks["read"])
    batch = data["data_collator"]([data["train_dataset"][i] for i in range(3)])
    oracle = _load(path, tiny, monkeypatch, task_id=1)
    alone = _load(path, tiny, monkeypatch, task_id=1, max_tasks=1)  # bank t0 is the only bank
    second = _load(path, tiny, monkeypatch, task_id=2)
    with torch.no_grad():
        got, want, other = (m(**batch).logits for m in (oracle, alone, second))
    assert torch.equal(got, want)  # the other bank adds exact zeros
    assert not torch.allclose(got, other)
    ids, images = _prompt(batch, 0)
    gen = dict(images=images, do_sample=False, max_new_tokens=4, pad_token_id=0)
    with torch.no_grad():
        assert torch.equal(oracle.generate(ids, **gen), alone.generate(ids, **gen))


def test_hide_weights_favour_each_tasks_own_bank(selector_runs, tiny, two_tasks, monkeypatch):
    model = _load(selector_runs["hide_selector"][1], tiny, monkeypatch)
    selector = model._dymoe_task_selector
    for bank, task in enumerate(TASKS):
        data = _data(tiny, two_tasks[task])
        batch = data["data_collator"]([data["train_dataset"][i] for i in range(6)])
        rows = [selector(model, *_prompt(batch, i)) for i in range(6)]
        w = torch.cat(rows)
        assert w.shape == (6, 2)
        assert bool((w.argmax(dim=1) == bank).all()), f"{task}: weights {w.tolist()}"
        # the padded training batch at once (answers and padding masked out): one row per sequence, the same rows
        together = selector(model, batch["input_ids"], batch["images"], batch["attention_mask"], batch["labels"])
        torch.testing.assert_close(together, w, rtol=1e-5, atol=1e-6)


def test_bank_choice_reports_the_selectors_weights(selector_runs, tiny, two_tasks, monkeypatch):
    """``cli bank-choice``'s own-bank share: for hide_selector the token-weighted mean weight its selector gives
    the task's bank (recomputed prompt by prompt), for oracle_bank 1 (it is told each task in turn)."""
    from llava_dymoe.diagnostics.bank_choice import run_bank_choice
    from llava_dymoe.diagnostics.probe import Probe, read_questions

    monkeypatch.delenv(TASK_ID_ENV, raising=False)
    tasks = [(name, two_tasks[name].question_file) for name in TASKS]
    folder = two_tasks["read"].image_folder
    hide = selector_runs["hide_selector"][1]
    report = run_bank_choice(hide, tiny.llm, tasks, folder, conditions=("as_asked",), max_questions=3)
    probe = Probe(hide, tiny.llm)
    for bank, (name, path) in enumerate(tasks):
        mass, tokens = 0.0, 0
        for _, ids, pixels, _ in probe.questions(read_questions(path, 3), folder):
            n = ids.shape[1] - 1 + probe.n_patches  # the prompt's tokens after the image splice
            mass += float(probe.model._dymoe_task_selector(probe.model, ids, pixels)[0, bank]) * n
            tokens += n
        assert report["conditions"]["as_asked"][name]["own"] == pytest.approx(mass / tokens, abs=1e-5)
        assert report["conditions"]["as_asked"][name]["own"] > 0.5
    oracle = run_bank_choice(selector_runs["oracle_bank"][1], tiny.llm, tasks, folder, conditions=("as_asked",),
                             max_questions=2)
    assert all(row["own"] == pytest.approx(1.0) for row in oracle["conditions"]["as_asked"].values())
    assert TASK_ID_ENV not in os.environ


@pytest.mark.slow  # about 35 s on 2 cores: two DeepSpeed trainings
def test_anchors_under_zero2_and_zero3(selector_runs, tiny, two_tasks, tmp_path):
    """Task 1 of hide_selector under DeepSpeed (one rank, CPU): the anchors only read the frozen towers, so they
    equal the plain run's (which trained more steps): bit for bit under ZeRO-2, the text anchor bit for bit and
    the image anchor within 1e-2 relative under ZeRO-3 (its vision tower runs in another dtype there; measured
    0.0009 absolute)."""

    plain = read_anchors(selector_runs["hide_selector"][0])
    for stage in ("zero2", "zero3"):
        out = tmp_path / stage / "1_read_llava_hide_selector"
        train_task(tiny, two_tasks["read"], out, 1, method="hide_selector", steps=2,
                   deepspeed=os.path.join(REPO, "scripts", f"{stage}.json"))
        got = read_anchors(str(out))
        assert torch.equal(got.anchors["text"], plain.anchors["text"]) and torch.equal(got.counts, plain.counts)
        if stage == "zero2":
            assert torch.equal(got.anchors["image"], plain.anchors["image"])
        else:
            torch.testing.assert_close(got.anchors["image"], plain.anchors["image"], rtol=1e-2, atol=1e-2)


@pytest.mark.slow  # about 50 s on 2 cores: two stages through cli run, with --oracle-routing
def test_oracle_bank_through_the_runner(selector_suite, tiny, tmp_path):
    """``cli run --method oracle_bank``: every eval job is told its task (commands.log), the run finishes, and
    its report names it an upper bound."""
    from llava_dymoe.cli import main as cli

    out = tmp_path / "run"
    argv = ["run", "--suite", selector_suite.suite_yaml, "--data-root", selector_suite.root, "--method",
            "oracle_bank", "--output-dir", str(out), "--base", tiny.llm, "--vision-tower", tiny.clip, "--threads", "1",
            "--train-arg", "max_steps=2", "--train-arg", "per_device_train_batch_size=4", "--oracle-routing",
            "--no-plot"]
    assert cli(argv) == 0
    log = (out / "commands.log").read_text().splitlines()
    evals = [line for line in log if "-m llava_dymoe.eval " in line]
    assert len(evals) == 4  # stage 1: read; stage 2: read, classify, and read restricted to one bank
    read_q = selector_suite.path(selector_suite.tasks["read"].question_file)
    assert all(f"{TASK_ID_ENV}={1 if read_q in line else 2} " in line for line in evals)
    assert "oracle_bank (UPPER BOUND: told the task) on synthetic" in (out / "report.md").read_text()


@pytest.mark.slow  # about 50 s on 2 cores: two stages through cli run, with --oracle-routing
def test_key_selector_through_the_runner(selector_suite, tiny, tmp_path):
    """``cli run --method key_selector``: no eval job is told its task, the restricted (oracle-routing) evals run,
    and the run finishes with a full matrix."""
    from llava_dymoe.cli import main as cli

    out = tmp_path / "run"
    argv = ["run", "--suite", selector_suite.suite_yaml, "--data-root", selector_suite.root, "--method",
            "key_selector", "--output-dir", str(out), "--base", tiny.llm, "--vision-tower", tiny.clip, "--threads",
            "1", "--train-arg", "max_steps=2", "--train-arg", "per_device_train_batch_size=4", "--oracle-routing",
            "--no-plot"]
    assert cli(argv) == 0
    evals = [line for line in (out / "commands.log").read_text().splitlines() if "-m llava_dymoe.eval " in line]
    assert len(evals) == 4 and not any(TASK_ID_ENV in line for line in evals)
    rows = (out / "matrix.csv").read_text().splitlines()
    assert len(rows) == 3 and all(cell for cell in rows[2].split(",")[1:])
