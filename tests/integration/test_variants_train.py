"""The beyond-the-paper recipes through upstream ``train()`` and back through the eval loader.

* two variants that between them set every variant field (``variant_recipes.TRAINED_VARIANTS``): two tasks, old banks
  bit-identical, the checkpoint records the fields (every recipe's layer: tests/core/test_variants.py);
* ``router_init="centroids"``: in process, the new rows are a k-means fixed point of the task's inputs, their
  norms are kept, nothing but those rows changes, and the training data order is untouched;
* round trip: a variant model saved and reloaded through ``load_dymoe_for_eval`` gives the same logits and
  answers as the in-memory model, and routes with the recorded rule (not the paper's);
* ``DYMOE_EVAL_ASSIGN_RULE`` overrides the rule at load time.
"""
import json
import os
import sys

import pytest
import torch
from safetensors.torch import load_file

from llava_dymoe.core import DyMoELinear, dymoe_layers
from llava_dymoe.core.centroids import spherical_kmeans
from llava_dymoe.integration import checkpoint as ckpt
from llava_dymoe.methods import VARIANTS, get_method

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "core"))
import naive_ref as ref  # noqa: E402
from variant_recipes import TRAINED_VARIANTS  # noqa: E402


def test_the_trained_variants_set_every_variant_field():
    fields = {f: {get_method(m).build_config().__dict__[f] for m in TRAINED_VARIANTS}
              for f in ("assign_rule", "spe_target", "router_init", "tag_gap", "router_train", "bank_keys", "bank_scope")}
    default = get_method("dymoe").build_config()
    assert all(any(v != getattr(default, f) for v in vals) for f, vals in fields.items())
    assert set(TRAINED_VARIANTS) <= set(VARIANTS) | {"dymoe_seqbank"}


@pytest.mark.parametrize("method", TRAINED_VARIANTS)
def test_variant_trains_two_tasks_keeps_old_banks_and_records_its_fields(variant_sequences, method):
    t1, t2 = variant_sequences[method]
    a, b = load_file(os.path.join(t1, ckpt.EXPERTS)), load_file(os.path.join(t2, ckpt.EXPERTS))
    assert a and set(a) < set(b)
    for k in a:
        assert torch.equal(a[k], b[k]), f"{method}: {k} of task 1 changed in task 2"
    stats = json.load(open(os.path.join(t2, "routing_stats.json")))
    # TAG gates the new experts: a projection where no token was called new has a new B that never moved
    # (B starts at 0); both tasks train on the same smoke data, so the warm-started rows match the old ones
    # and some projections see no new token at all
    trained = {name: bool(b[f"{name}.dymoe_B.t1"].abs().sum() > 0) for name in stats["layers"]}
    want = get_method(method).build_config()
    if want.bank_scope == "token":  # frac_new is TAG's per-token test: the token-level cascade's new-bank decision
        assert all(not trained[n] for n, row in stats["layers"].items() if row["frac_new"] == 0.0)
    assert sum(trained.values()) >= len(trained) // 2
    block = ckpt.load_task_state(t2)["dymoe"]
    assert block["method"] == method
    for field in ("assign_rule", "spe_target", "router_init"):
        assert block["config"][field] == getattr(want, field)
    assert set(stats["phases"]) == {"start", "middle", "end"}
    assert set(stats["by_kind"]) == {"image", "instruction", "answer"}
    assert ("router_init" in stats) == (want.router_init == "centroids")
    if want.bank_keys == "fitted":  # keys fitted through the model that trains, before the first step and at the end
        assert 0.0 < stats["router_init"]["keys"]["mean_fit"] <= 1.0
        assert 0.0 <= stats["router_refresh"]["keys"]["moved"] <= 1.0
        assert block["config"]["bank_scope"] == "sequence" and block["config"]["router_train"] is False
        assert any(k.endswith(".dymoe_key.t1") for k in b)


def _args(out, **kw):
    from llava.train.train import TrainingArguments
    from llava_dymoe.trainer.arguments import make_training_arguments

    base = dict(output_dir=str(out), report_to="none", gradient_accumulation_steps=1, dymoe_lora_dropout=0.0,
                per_device_train_batch_size=4, seed=3)
    base.update(kw)
    return make_training_arguments(TrainingArguments)(**base)


def _model_and_data(tiny, smoke_data):
    from transformers import AutoTokenizer
    from llava.train.train import DataArguments, make_supervised_data_module
    from llava_dymoe.integration.tiny_model import build_llava_model

    model = build_llava_model(tiny.llm, tiny.clip)
    tok = AutoTokenizer.from_pretrained(tiny.llm, use_fast=False, model_max_length=256, padding_side="right")
    tok.pad_token = tok.unk_token
    import llava.train.train as lt
    lt.conversation_lib.default_conversation = lt.conversation_lib.conv_templates["vicuna_v1"]
    data_args = DataArguments(data_path=smoke_data.train_json, lazy_preprocess=True, is_multimodal=True,
                              image_folder=smoke_data.image_folder, image_aspect_ratio="pad")
    data_args.image_processor = model.get_vision_tower().image_processor
    data_args.mm_use_im_start_end = False
    return model, make_supervised_data_module(tokenizer=tok, data_args=data_args)


def test_centroid_init_is_a_kmeans_fixed_point_of_the_tasks_inputs(tiny, smoke_data, sequence, tmp_path):
    from llava_dymoe.trainer.prepare import prepare_model
    from llava_dymoe.trainer.router_init import collect_inputs, init_router_from_data

    model, data = _model_and_data(tiny, smoke_data)
    args = _args(tmp_path / "t2", dymoe_task_id=2, dymoe_prev_ckpt=sequence[0], dymoe_router_init="centroids")
    run = prepare_model(model, args)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    rng = torch.get_rng_state()
    summary = init_router_from_data(model, run.task_key, data["train_dataset"], data["data_collator"],
                                    batch_size=4, n_batches=2, seed=11, ctx=run.ctx)
    assert torch.equal(torch.get_rng_state(), rng)  # the global stream (data order, dropout) is untouched
    assert summary["layers"] == 14 and summary["batches"] == 2 and 0.0 < summary["mean_fit"] <= 1.0
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == {n for n in before if n.endswith("dymoe_router.t1")}
    # the same inputs, collected independently (new bank set aside by hand), define the fixed point
    layers = dict(dymoe_layers(model))
    saved = {name: {bank: getattr(layer, bank).pop("t1") for bank in DyMoELinear.adapter_layer_names}
             for name, layer in layers.items()}
    gen = torch.Generator().manual_seed(11)
    order = torch.randperm(len(data["train_dataset"]), generator=gen).tolist()
    batches = [data["data_collator"]([data["train_dataset"][i] for i in order[s:s + 4]]) for s in (0, 4)]
    model.eval()
    inputs = collect_inputs(model, batches, run.ctx, torch.Generator().manual_seed(0), max_tokens=10 ** 9)
    for name, layer in layers.items():
        for bank, p in saved[name].items():
            getattr(layer, bank)["t1"] = p
        rows = layer.dymoe_router["t1"].detach()
        assert torch.allclose(rows.norm(dim=1), before[f"{name}.dymoe_router.t1"].norm(dim=1), rtol=1e-5)
        u = torch.nn.functional.normalize(inputs[name], dim=1)
        m = torch.nn.functional.normalize(rows, dim=1)
        assign = (u @ m.t()).argmax(dim=1)
        for j in assign.unique().tolist():  # each row points at the mean direction of the tokens it wins
            mean_dir = torch.nn.functional.normalize(u[assign == j].sum(0), dim=0)
            assert float(mean_dir @ m[j]) > 0.999, (name, j)


def test_router_refresh_recentres_the_rows_on_the_trained_models_inputs(tiny, smoke_data, sequence, tmp_path):
    """``router_refresh``: after the task, the new rows are spherical k-means of the task's inputs *with the
    trained bank in place* (not set aside), started from the rows as trained (row j keeps its cluster); the norms
    are kept, nothing else changes and the global RNG stream is untouched.  Then ``bank_keys="refreshed"``: the
    keys (which start as the warm-started rows) are re-centred projection by projection, so each projection's keys
    are k-means of exactly the inputs the refreshed model gives it; the router rows do not move."""
    from llava_dymoe.trainer.prepare import prepare_model
    from llava_dymoe.trainer.router_init import (collect_inputs, init_router_from_data, refresh_keys_from_data,
                                                 refresh_router_from_data)

    model, data = _model_and_data(tiny, smoke_data)
    args = _args(tmp_path / "t2", dymoe_task_id=2, dymoe_prev_ckpt=sequence[0], dymoe_router_init="centroids",
                 dymoe_router_train=False, dymoe_router_refresh=True, dymoe_assign_rule="cascade",
                 dymoe_bank_keys="refreshed")
    run = prepare_model(model, args)
    assert run.cfg.router_refresh and not run.cfg.router_train
    kw = dict(batch_size=4, n_batches=2, seed=11, ctx=run.ctx)
    init_router_from_data(model, run.task_key, data["train_dataset"], data["data_collator"], **kw)
    assert all(torch.equal(layer.dymoe_key["t1"], layer.dymoe_router["t1"]) for _, layer in dymoe_layers(model))
    with torch.no_grad():  # stand-in for training: a non-zero new bank changes what deeper projections see
        g = torch.Generator().manual_seed(5)
        for _, layer in dymoe_layers(model):
            layer.dymoe_B["t1"].copy_(torch.randn(layer.dymoe_B["t1"].shape, generator=g) * 0.2)
    # the inputs the refresh sees: the same batches through the model as trained (collected before the rows move,
    # since deeper projections' inputs depend on the earlier rows)
    gen = torch.Generator().manual_seed(11)
    order = torch.randperm(len(data["train_dataset"]), generator=gen).tolist()
    batches = [data["data_collator"]([data["train_dataset"][i] for i in order[s:s + 4]]) for s in (0, 4)]
    model.eval()
    inputs = collect_inputs(model, batches, run.ctx, torch.Generator().manual_seed(0), max_tokens=10 ** 9)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    rng = torch.get_rng_state()
    summary = refresh_router_from_data(model, run.task_key, data["train_dataset"], data["data_collator"], **kw)
    assert torch.equal(torch.get_rng_state(), rng)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= {n for n in before if n.endswith("dymoe_router.t1")}
    assert 0.0 <= summary["moved"] <= 1.0 and summary["mean_fit"] >= summary["fit_before"] - 1e-6
    deep = 0
    for name, layer in dymoe_layers(model):
        rows = layer.dymoe_router["t1"].detach()
        old = before[f"{name}.dymoe_router.t1"]
        assert torch.allclose(rows.norm(dim=1), old.norm(dim=1), rtol=1e-5)
        # the same Lloyd iterations from the old rows, on the inputs collected independently with the bank in place
        want = spherical_kmeans(inputs[name], rows.shape[0], init=old)
        assert torch.allclose(torch.nn.functional.normalize(rows, dim=1), want, atol=1e-5), name
        deep += int(not torch.equal(rows, old))
    assert deep >= len(dict(dymoe_layers(model))) // 2  # the trained bank moved most projections' inputs

    keys_before = {n: p.detach().clone() for n, p in model.named_parameters()}
    summary = refresh_keys_from_data(model, run.task_key, data["train_dataset"], data["data_collator"], **kw)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, keys_before[n])}
    assert changed and changed <= {n for n in keys_before if n.endswith("dymoe_key.t1")}
    assert summary["mean_fit"] >= summary["fit_before"] - 1e-6
    model.eval()
    final = collect_inputs(model, batches, run.ctx, torch.Generator().manual_seed(0), max_tokens=10 ** 9)
    for name, layer in dymoe_layers(model):
        want = spherical_kmeans(final[name], layer.experts_per_task, init=keys_before[f"{name}.dymoe_key.t1"])
        assert torch.allclose(torch.nn.functional.normalize(layer.dymoe_key["t1"], dim=1), want, atol=1e-5), name


def test_sequence_scope_keys_are_fitted_on_prompt_tokens_only(tiny, smoke_data, sequence, tmp_path, monkeypatch):
    """``bank_scope="sequence"`` pools the prompt's tokens to decide a bank, so its keys are fitted on those tokens
    (valid, no label): k-means of exactly the prompt inputs, not of every valid token (answers included)."""
    from llava_dymoe.trainer import router_init, trainer as trainer_mod
    from llava_dymoe.trainer.prepare import prepare_model

    model, data = _model_and_data(tiny, smoke_data)
    args = _args(tmp_path / "t2", dymoe_task_id=2, dymoe_prev_ckpt=sequence[0], dymoe_router_init="centroids",
                 dymoe_assign_rule="cascade", dymoe_bank_scope="sequence", dymoe_bank_keys="refreshed")
    run = prepare_model(model, args)
    kw = dict(batch_size=4, n_batches=2, seed=11, ctx=run.ctx)
    router_init.init_router_from_data(model, run.task_key, data["train_dataset"], data["data_collator"], **kw)
    gen = torch.Generator().manual_seed(11)
    order = torch.randperm(len(data["train_dataset"]), generator=gen).tolist()
    batches = [data["data_collator"]([data["train_dataset"][i] for i in order[s:s + 4]]) for s in (0, 4)]
    # every projection's inputs and the prompt mask, recorded by a hook of the test's own
    seen, layers = {}, dict(dymoe_layers(model))

    def record(name):
        def hook(module, inputs):
            x = inputs[0].reshape(-1, module.in_features).detach()
            seen.setdefault(name, []).append((x, run.ctx.token_valid(x.shape[0], x.device).clone(),
                                              run.ctx.token_prompt(x.shape[0], x.device).clone()))
        return hook
    handles = [layer.register_forward_pre_hook(record(n)) for n, layer in layers.items()]
    model.eval()
    with torch.no_grad():
        for batch in batches:
            model(**batch)
    for h in handles:
        h.remove()
    keys_before = {n: layer.dymoe_key["t1"].detach().clone() for n, layer in layers.items()}
    router_init.refresh_keys_from_data(model, run.task_key, data["train_dataset"], data["data_collator"],
                                       prompt_only=True, **kw)
    differs = 0
    for name, layer in layers.items():
        x = torch.cat([p[0] for p in seen[name]])
        valid, prompt = torch.cat([p[1] for p in seen[name]]), torch.cat([p[2] for p in seen[name]])
        assert prompt.sum() < valid.sum() and not (prompt & ~valid).any()  # the answers are left out
        want = spherical_kmeans(x[prompt], layer.experts_per_task, init=keys_before[name])
        got = torch.nn.functional.normalize(layer.dymoe_key["t1"], dim=1)
        assert torch.allclose(got, want, atol=1e-5), name
        every = spherical_kmeans(x[valid], layer.experts_per_task, init=keys_before[name])
        differs += int(not torch.allclose(got, every, atol=1e-4))
    assert differs >= len(layers) // 2
    # the trainer asks for prompt tokens exactly when the scope is the sequence
    asked = []
    monkeypatch.setattr(router_init, "refresh_keys_from_data", lambda *a, **k: asked.append(k.get("prompt_only")))
    fake_data = {"train_dataset": data["train_dataset"], "data_collator": data["data_collator"]}
    trainer_mod._centroid_init(model, args, run, fake_data, refresh="dymoe_key")
    run.cfg = type(run.cfg)(**{**run.cfg.__dict__, "bank_scope": "token"})
    trainer_mod._centroid_init(model, args, run, fake_data, refresh="dymoe_key")
    assert asked == [True, False]


def test_centroid_init_under_zero3_is_refused_with_the_alternative(monkeypatch):
    import llava_dymoe.trainer.prepare as prep
    from llava_dymoe.trainer.trainer import _centroid_init

    monkeypatch.setattr(prep, "zero3_enabled", lambda: True)
    with pytest.raises(ValueError, match="zero2.json"):
        _centroid_init(None, None, None, {})


@pytest.mark.parametrize("method", ["dymoe_cascade_spetag", "dymoe_seqbank"])
def test_variant_round_trip_same_logits_answers_and_rule(tiny, smoke_data, variant_sequences, tmp_path, method):
    """A variant's task 2 in memory -> saved -> reloaded by the eval loader: identical logits and greedy answers.
    dymoe_cascade_spetag: the reloaded layers route with the cascade (checked against the naive reference);
    dymoe_seqbank (dymoe_plus until 2026-12-07: one bank per sequence on fitted keys): the keys come back as saved,
    and the rule."""
    from llava_dymoe.integration.eval_loader import load_dymoe_for_eval
    from llava_dymoe.integration.inject import bank_state
    from llava_dymoe.trainer.prepare import prepare_model, run_args_record
    from llava_dymoe.trainer.saving import non_expert_state

    model, data = _model_and_data(tiny, smoke_data)
    out = tmp_path / "2_task_llava_dymoe_cascade"
    seq = variant_sequences[method][0]
    args = _args(out, dymoe_task_id=2, dymoe_prev_ckpt=seq, dymoe_method=method)
    run = prepare_model(model, args)
    with torch.no_grad():  # stand-in for training: a non-zero new bank (and keys unlike the rows)
        g = torch.Generator().manual_seed(5)
        for _, layer in dymoe_layers(model):
            layer.dymoe_B["t1"].copy_(torch.randn(layer.dymoe_B["t1"].shape, generator=g) * 0.05)
            for key in layer.dymoe_key.values():
                key.add_(torch.randn(key.shape, generator=g) * 0.1)
    cfg = run.cfg
    ckpt.write_task_checkpoint(str(out), model_config=model.config, dymoe_cfg=cfg, method=run.method.name,
                               task_id=2, experts=bank_state(model), non_lora=non_expert_state(model, lambda p: p
                                                                                            .detach().cpu()),
                               run_args=run_args_record(args, run), prev_ckpt=seq)
    batch = data["data_collator"]([data["train_dataset"][i] for i in range(3)])
    _, loaded, _, _ = load_dymoe_for_eval(str(out), tiny.llm, "x", device="cpu", device_map="cpu",
                                          torch_dtype=torch.float32)
    # upstream's loader keeps the vision tower in fp16 (LLaVA's builder); give both models the same tower
    for m in (model, loaded):
        m.get_vision_tower().to(torch.float16).to(torch.float32)
    model.eval()
    with torch.no_grad():
        want = model(**batch).logits
    loaded.eval()
    with torch.no_grad():
        got = loaded(**batch).logits
    assert torch.equal(got, want)
    got_cfg = dict(dymoe_layers(loaded))["model.layers.0.self_attn.q_proj"].dymoe_config
    assert got_cfg.assign_rule == "cascade" and got_cfg.bank_scope == cfg.bank_scope
    img = batch["images"][:1]
    prompt = batch["input_ids"][:1, :int((batch["labels"][0] != -100).nonzero()[0])]
    gen = dict(images=img, do_sample=False, max_new_tokens=6, pad_token_id=0)
    with torch.no_grad():
        assert torch.equal(model.generate(prompt, **gen), loaded.generate(prompt, **gen))
    if method == "dymoe_seqbank":
        assert cfg.bank_scope == "sequence" and cfg.bank_keys == "fitted"
        saved, back = dict(dymoe_layers(model)), dict(dymoe_layers(loaded))
        assert all(torch.equal(back[n].dymoe_key[k], saved[n].dymoe_key[k]) and
                   not torch.equal(back[n].dymoe_key[k], back[n].dymoe_router[k])
                   for n in saved for k in ("t0", "t1"))
        return
    # the loaded layer's eval output is the naive per-token cascade, and differs from the paper's rule
    layer = dict(dymoe_layers(loaded))["model.layers.1.mlp.down_proj"]
    seen = []
    h = layer.register_forward_pre_hook(lambda m, a: seen.append(a[0].reshape(-1, m.in_features)))
    with torch.no_grad():
        y = loaded(**batch)
    h.remove()
    x = seen[0][:24]
    banks = [(layer.dymoe_A[k], layer.dymoe_B[k], layer.dymoe_router[k]) for k in layer.task_keys()]
    args_ref = (x, layer.weight, layer.bias, banks, layer.experts_per_task, layer.expert_rank, layer.scaling,
                cfg.top_k, cfg.router_temperature, cfg.router_scale)
    with torch.no_grad():
        out_layer = layer(x)
    ref.assert_close(out_layer, ref.layer_forward(*args_ref, cascade_tau=cfg.tau), rtol=1e-5, atol=1e-6,
                     what="cascade")
    assert not torch.allclose(out_layer, ref.layer_forward(*args_ref), rtol=1e-5, atol=1e-6)
    del y


def test_sequence_scope_through_upstream_generate_keeps_the_prompts_bank(tiny, smoke_data, variant_sequences,
                                                                        tmp_path):
    """``bank_scope="sequence"`` under upstream LLaVA's ``generate`` (KV cache): the prompt's forward decides
    one bank per projection from the mean of its tokens' bank scores (the naive reference), and every decoding
    step, a one-token forward, keeps that decision."""
    from llava_dymoe.trainer.prepare import prepare_model

    model, data = _model_and_data(tiny, smoke_data)
    seq = variant_sequences["dymoe_cascade_spetag"][0]
    args = _args(tmp_path / "2_task_sequence", dymoe_task_id=2, dymoe_prev_ckpt=seq,
                 dymoe_method="dymoe_cascade_spetag", dymoe_bank_scope="sequence")
    cfg = prepare_model(model, args).cfg
    assert cfg.bank_scope == "sequence" and cfg.assign_rule == "cascade"
    with torch.no_grad():  # stand-in for training: a non-zero new bank
        g = torch.Generator().manual_seed(6)
        for _, layer in dymoe_layers(model):
            layer.dymoe_B["t1"].copy_(torch.randn(layer.dymoe_B["t1"].shape, generator=g) * 0.05)
    model.eval()
    layer = dict(dymoe_layers(model))["model.layers.1.mlp.down_proj"]
    calls = []
    hook = layer.register_forward_hook(
        lambda m, a, out: calls.append((a[0].detach().clone(), out.detach().clone(), m._dymoe_seq_bank.clone())))
    batch = data["data_collator"]([data["train_dataset"][0]])
    prompt = batch["input_ids"][:, :int((batch["labels"][0] != -100).nonzero()[0])]
    with torch.no_grad():
        model.generate(prompt, images=batch["images"], do_sample=False, max_new_tokens=5, min_new_tokens=5,
                       pad_token_id=0)
    hook.remove()
    (x0, y0, bank0), steps = calls[0], calls[1:]
    assert x0.shape[1] > 1 and len(steps) == 4 and all(x.shape[:2] == (1, 1) for x, _, _ in steps)
    assert all(torch.equal(b, bank0) for _, _, b in steps)
    rows = torch.cat([layer.dymoe_router[k] for k in layer.task_keys()])
    want_banks = ref.sequence_banks(x0, rows, layer.experts_per_task, cfg.sequence_tau)
    assert [int(bank0[0])] == want_banks[:1]
    banks = [(layer.dymoe_A[k], layer.dymoe_B[k], layer.dymoe_router[k]) for k in layer.task_keys()]

    def naive(x, token_banks):
        return ref.layer_forward(x.reshape(-1, layer.in_features), layer.weight, layer.bias, banks,
                                 layer.experts_per_task, layer.expert_rank, layer.scaling, cfg.top_k,
                                 cfg.router_temperature, cfg.router_scale, token_banks=token_banks)
    ref.assert_close(y0.reshape(-1, layer.out_features), naive(x0, want_banks), rtol=1e-5, atol=1e-6, what="prompt")
    for x, y, _ in steps:
        ref.assert_close(y.reshape(-1, layer.out_features), naive(x, want_banks[:1]), rtol=1e-5, atol=1e-6,
                         what="decoding step")


def test_eval_assign_rule_override(tiny, sequence, monkeypatch):
    from llava_dymoe.integration.checkpoint import CheckpointError
    from llava_dymoe.integration.eval_loader import ASSIGN_RULE_ENV, load_dymoe_for_eval

    kw = dict(device="cpu", device_map="cpu", torch_dtype=torch.float32)
    monkeypatch.setenv(ASSIGN_RULE_ENV, "cascade")
    _, model, _, _ = load_dymoe_for_eval(sequence[1], tiny.llm, "x", **kw)
    cfgs = {layer.dymoe_config.assign_rule for _, layer in dymoe_layers(model)}
    assert cfgs == {"cascade"}
    assert ckpt.load_task_state(sequence[1])["config"].assign_rule == "paper"  # the checkpoint is untouched
    monkeypatch.setenv(ASSIGN_RULE_ENV, "nearest")
    with pytest.raises(CheckpointError, match="not a token-to-bank rule"):
        load_dymoe_for_eval(sequence[1], tiny.llm, "x", **kw)
