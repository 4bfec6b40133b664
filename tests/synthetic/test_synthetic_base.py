"""The base-model stage in a reduced mode: files, export, cache, and a DyMoE task trained and evaluated on top."""
import json
import os

import pytest
import torch
from safetensors.torch import load_file

from llava_dymoe.integration import checkpoint as ckpt
from llava_dymoe.integration.llava_args import DYMOE_TRAIN_MODULE, dymoe_flags, llava_train_argv, run_python
from llava_dymoe.synthetic.base import MIX_WEIGHTS, BaseConfig, build_base_model, default_sizes

CONFIG = BaseConfig(seed=0, steps=2, batch_size=2, n_train=4, n_test=1)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    sizes = default_sizes(64, hidden_size=32, intermediate_size=64, num_attention_heads=2)
    return build_base_model(str(tmp_path_factory.mktemp("base")), CONFIG, sizes, evaluate=True, log=lambda m: None,
                            data_workers=1)  # the option works (upstream --dataloader_num_workers)


def test_files_and_record(base):
    for path in (base.llm, base.clip, base.llava, base.data):
        assert os.path.isdir(path), path
    assert {"config.json", "model.safetensors", "tokenizer.model", "tokenizer_config.json"} <= set(os.listdir(base.llm))
    assert json.load(open(os.path.join(base.llm, "config.json")))["model_type"] == "llama"
    assert json.load(open(os.path.join(base.llava, "config.json")))["model_type"] == "llava_llama"
    meta = json.load(open(os.path.join(base.root, "base.json")))
    assert meta["request"]["config"]["steps"] == 2 and meta["results"]["steps"] == 2
    assert set(meta["results"]["accuracy"]) == {"describe", "cell", "count", "letter", "point", "letterbox"}
    assert all(0.0 <= v <= 100.0 for v in base.accuracy.values())
    mixture = json.load(open(os.path.join(base.data, "mixture.json")))
    assert len(mixture) == CONFIG.n_train * sum(MIX_WEIGHTS.values())
    args = torch.load(os.path.join(base.llava, "training_args.bin"), weights_only=False)
    assert args.dataloader_num_workers == 1 and args.max_steps == 2
    # D1 (patches/vision_check.py) was applied around upstream train() and reverted
    log = open(base.llava + ".log").read()
    assert "applied patch set 'vision-check'" in log and "reverted patch set 'vision-check'" in log


def test_export_is_the_trained_llava_split_in_two(base):
    full = load_file(os.path.join(base.llava, "model.safetensors"))
    llm = load_file(os.path.join(base.llm, "model.safetensors"))
    projector = torch.load(base.projector, map_location="cpu")
    assert sorted(projector) == ["model.mm_projector.0.bias", "model.mm_projector.0.weight",
                                 "model.mm_projector.2.bias", "model.mm_projector.2.weight"]
    assert set(llm) == {k for k in full if not k.startswith(("model.mm_projector.", "model.vision_tower."))}
    for key, value in list(llm.items()) + list(projector.items()):
        assert torch.equal(value, full[key]), key
    tiny = load_file(os.path.join(base.root, "tiny", "llm", "model.safetensors"))
    assert not torch.equal(tiny["model.layers.0.mlp.up_proj.weight"], llm["model.layers.0.mlp.up_proj.weight"])


def test_same_request_is_reused(base):
    said = []
    again = build_base_model(base.root, CONFIG, default_sizes(64, hidden_size=32, intermediate_size=64,
                                                              num_attention_heads=2), log=said.append)
    assert said and "reusing" in said[0] and again.meta == base.meta


def test_an_interrupted_build_resumes_from_its_checkpoint(base, tmp_path, monkeypatch):
    """A build killed right after its step-1 checkpoint resumes from it (same request only) and ends with the
    weights of the uninterrupted build; the checkpoints are gone afterwards."""
    import llava_dymoe.synthetic.base as base_mod

    sizes = default_sizes(64, hidden_size=32, intermediate_size=64, num_attention_heads=2)
    train_code = base_mod._train_code
    kill = ("import os, transformers\n_save = transformers.Trainer._save_checkpoint\n"
            "def _save_then_die(self, *a, **k):\n    _save(self, *a, **k)\n    os._exit(3)\n"
            "transformers.Trainer._save_checkpoint = _save_then_die\n")
    monkeypatch.setattr(base_mod, "_train_code", lambda seed: kill + train_code(seed))
    with pytest.raises(RuntimeError, match="exit code 3"):
        build_base_model(str(tmp_path), CONFIG, sizes, evaluate=False, log=lambda m: None, checkpoint_every=1)
    monkeypatch.setattr(base_mod, "_train_code", train_code)
    request = base_mod.base_request(CONFIG, sizes, False)
    assert not (tmp_path / "base.json").exists()
    assert base_mod.resumable_checkpoint(str(tmp_path), request) == str(tmp_path / "llava-base" / "checkpoint-1")
    other = base_mod.base_request(BaseConfig(seed=1, steps=2, batch_size=2, n_train=4, n_test=1), sizes, False)
    assert base_mod.resumable_checkpoint(str(tmp_path), other) is None

    said = []
    resumed = build_base_model(str(tmp_path), CONFIG, sizes, evaluate=False, log=said.append, checkpoint_every=1)
    assert any("resuming the interrupted build from checkpoint-1" in m for m in said)
    assert resumed.meta["results"]["resumed_from"] == "checkpoint-1" and resumed.meta["results"]["steps"] == 2
    assert not [n for n in os.listdir(resumed.llava) if n.startswith("checkpoint-")]
    assert not (tmp_path / base_mod.PARTIAL).exists()
    state = json.load(open(os.path.join(resumed.llava, "trainer_state.json")))
    assert [h["step"] for h in state["log_history"] if "loss" in h] == [1, 2]
    log = open(resumed.llava + ".log").read()  # the first attempt's log is kept, the resumed one appended
    assert log.count("applied patch set 'vision-check'") == 2
    uninterrupted = load_file(os.path.join(base.llava, "model.safetensors"))
    for key, value in load_file(os.path.join(resumed.llava, "model.safetensors")).items():
        torch.testing.assert_close(value, uninterrupted[key], rtol=0, atol=1e-6, msg=key)


def test_wrong_patch_size_is_refused(tmp_path):
    with pytest.raises(ValueError, match="one grid cell per patch"):
        build_base_model(str(tmp_path), CONFIG, default_sizes(64, patch_size=8))


def test_dymoe_task_on_top_of_the_base(base, synthetic_suite, tmp_path):
    """Two DyMoE steps from BASE/llm + BASE/mm_projector.bin, then the DyMoE eval loader answers."""
    from llava_dymoe.synthetic.evaluate import EvalTask, evaluate

    files = synthetic_suite.tasks["vqa"]
    out = tmp_path / "1_task_llava_dymoe"
    argv = llava_train_argv(base.llm, base.clip, synthetic_suite.path(files.train_json), synthetic_suite.image_folder,
                            str(out), lora=False, max_steps=2,
                            overrides={"pretrain_mm_mlp_adapter": base.projector, "gradient_checkpointing": False},
                            extra=dymoe_flags("dymoe", 1, None, experts_per_task=2))
    run_python(DYMOE_TRAIN_MODULE, argv, module=True, log_path=str(out) + ".log", timeout=300)
    assert json.load(open(out / "trainer_state.json"))["global_step"] == 2
    # the projector started from BASE/mm_projector.bin: two steps at lr 2e-4 moved it only a little
    start = torch.load(base.projector, map_location="cpu")
    trained = torch.load(out / ckpt.NON_LORA, map_location="cpu")
    assert set(trained) == set(start)
    assert all((trained[k].float() - start[k]).abs().max() < 0.01 for k in start)
    task = EvalTask("vqa", synthetic_suite.path(files.question_file), synthetic_suite.path(files.reference_file),
                    "exact", 4)
    res = evaluate(str(out), base.llm, [task], synthetic_suite.image_folder, answers_dir=str(tmp_path / "ans"), limit=3)
    assert res["vqa"]["n"] == 3 and res["vqa"]["n_answered"] == 3


def _capture_builds(monkeypatch):
    """Replace build_base_model by a recorder of its (folder, config, sizes); returns the list it fills."""
    import types

    from llava_dymoe.synthetic import base as base_mod

    calls = []

    def fake(out_dir, config=None, sizes=None, **kwargs):
        calls.append((out_dir, config, sizes))
        return types.SimpleNamespace(llm="l", projector="p", clip="c", accuracy={}, meta={"results": {}})

    monkeypatch.setattr(base_mod, "build_base_model", fake)
    return calls


def test_base_learning_rate_is_scaled_as_one_over_d_above_128(monkeypatch, tmp_path):
    from llava_dymoe.synthetic.base import base_learning_rate, main

    assert [base_learning_rate(d) for d in (32, 64, 128)] == [2e-3] * 3
    assert base_learning_rate(256) == pytest.approx(1e-3) and base_learning_rate(512) == pytest.approx(5e-4)
    assert BaseConfig().learning_rate == base_learning_rate(128)
    calls = _capture_builds(monkeypatch)
    assert main([str(tmp_path / "a"), "--hidden-size", "256", "--no-eval"]) == 0
    assert main([str(tmp_path / "b"), "--hidden-size", "256", "--learning-rate", "3e-3", "--no-eval"]) == 0
    assert main([str(tmp_path / "c")]) == 0
    assert [(c[2].hidden_size, c[1].learning_rate) for c in calls] == [(256, pytest.approx(1e-3)), (256, 3e-3),
                                                                      (128, 2e-3)]
    with pytest.raises(SystemExit):
        main([str(tmp_path / "d"), "--learning-rate", "0"])
    assert len(calls) == 3  # refused before anything is built


def test_the_study_builds_each_width_with_its_learning_rate(monkeypatch, tmp_path):
    from llava_dymoe.study import execute
    from llava_dymoe.study.plan import PROFILES, build_plan

    calls = _capture_builds(monkeypatch)
    monkeypatch.setattr("llava_dymoe.synthetic.generate_suite", lambda *a, **k: "suite")
    bases, suite = execute.prepare(str(tmp_path), PROFILES["quick"], build_plan(["methods", "width"], widths=[64, 256]),
                                   log=lambda m: None)
    assert sorted(bases) == [64, 128, 256] and suite == "suite"
    got = {c[2].hidden_size: (os.path.basename(c[0]), c[1].learning_rate, c[1].steps, c[2].intermediate_size)
           for c in calls}
    assert got == {64: ("base_d64", 2e-3, 4, 128), 128: ("base", 2e-3, 4, 256),
                   256: ("base_d256", pytest.approx(1e-3), 4, 512)}


def test_the_study_builds_base_models_two_at_a_time(monkeypatch, tmp_path):
    """n_parallel=2: two builds overlap (each waits until the other has started), three widths all built."""
    import threading
    import types

    from llava_dymoe.study import execute
    from llava_dymoe.study.plan import PROFILES, build_plan
    from llava_dymoe.synthetic import base as base_mod

    started, lock, running, peak, bars = threading.Barrier(2, timeout=10), threading.Lock(), [0], [0], []

    def fake(out_dir, config=None, sizes=None, progress=True, threads=1, **kwargs):
        bars.append((progress, threads))
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        if sizes.hidden_size != 256:  # the first two builds meet: they run at the same time
            started.wait()
        with lock:
            running[0] -= 1
        return types.SimpleNamespace(width=sizes.hidden_size)

    monkeypatch.setattr(base_mod, "build_base_model", fake)
    monkeypatch.setattr("llava_dymoe.synthetic.generate_suite", lambda *a, **k: "suite")
    plan = build_plan(["methods", "width"], widths=[64, 256])
    bases, _ = execute.prepare(str(tmp_path), PROFILES["quick"], plan, log=lambda m: None, n_parallel=2)
    assert {w: b.width for w, b in bases.items()} == {64: 64, 128: 128, 256: 256}
    assert peak[0] == 2 and bars == [(False, 1)] * 3  # no bars and one thread each while builds overlap


def test_a_lone_base_build_uses_two_threads_unless_told(monkeypatch, tmp_path):
    """One base at a time: 2 threads on a machine with 2+ cores (1 on one core), or what base_threads says."""
    import types

    from llava_dymoe.study import execute
    from llava_dymoe.study.plan import PROFILES, build_plan
    from llava_dymoe.synthetic import base as base_mod

    seen = []
    monkeypatch.setattr(base_mod, "build_base_model",
                        lambda out_dir, config=None, sizes=None, threads=1, **k: seen.append(threads) or
                        types.SimpleNamespace(width=sizes.hidden_size))
    monkeypatch.setattr("llava_dymoe.synthetic.generate_suite", lambda *a, **k: "suite")
    plan = build_plan(["methods"])
    for cores, expected in ((2, 2), (16, 2), (1, 1), (None, 1)):
        monkeypatch.setattr(execute.os, "cpu_count", lambda c=cores: c)
        execute.prepare(str(tmp_path), PROFILES["quick"], plan, log=lambda m: None)
        assert seen.pop() == expected
    execute.prepare(str(tmp_path), PROFILES["quick"], plan, log=lambda m: None, base_threads=3)
    assert seen == [3]
    with pytest.raises(ValueError, match="base_threads"):
        execute.prepare(str(tmp_path), PROFILES["quick"], plan, log=lambda m: None, base_threads=0)


def test_threaded_base_builds_take_turns_in_process_and_train_side_by_side(monkeypatch, tmp_path):
    """Two build_base_model calls in threads: their in-process parts (tiny model, CLIP scaling, data, export,
    evaluation) never overlap, their training subprocesses do (each waits until the other is training)."""
    import threading
    import time
    import types
    from concurrent.futures import ThreadPoolExecutor

    from llava_dymoe.synthetic import base as base_mod

    lock, active, peak, training = threading.Lock(), [0], [0], threading.Barrier(2, timeout=10)

    def in_process(result=None):
        def run(*args, **kwargs):
            with lock:
                active[0] += 1
                peak[0] = max(peak[0], active[0])
            time.sleep(0.05)
            with lock:
                active[0] -= 1
            return result(*args) if result else None
        return run

    def fake_tiny(root, **kwargs):
        llm = os.path.join(root, "llm")
        os.makedirs(llm)
        for name in base_mod.TOKENIZER_FILES:
            open(os.path.join(llm, name), "w").close()
        return types.SimpleNamespace(llm=llm, clip=os.path.join(root, "clip"))

    def fake_train(code, argv, log_path, env, log_mode="w"):
        training.wait()  # both builds are training at once
        out = os.path.dirname(log_path) + "/llava-base"
        os.makedirs(out)
        with open(os.path.join(out, "trainer_state.json"), "w") as f:
            json.dump({"log_history": [{"loss": 0.5}], "global_step": 4}, f)

    monkeypatch.setattr("llava_dymoe.tiny.build_tiny_llava", in_process(fake_tiny))
    monkeypatch.setattr(base_mod, "scale_clip_positions", in_process())
    monkeypatch.setattr(base_mod, "write_base_mixture", in_process(lambda *a: "mixture.json"))
    monkeypatch.setattr(base_mod, "export_base", in_process())
    monkeypatch.setattr("llava_dymoe.synthetic.evaluate.evaluate", in_process(lambda *a: {"cell": 50.0}))
    monkeypatch.setattr("llava_dymoe.integration.llava_args.llava_train_argv", lambda *a, **k: [])
    monkeypatch.setattr("llava_dymoe.integration.llava_args.run_python", fake_train)

    def build(name):
        return base_mod.build_base_model(str(tmp_path / name), BaseConfig(steps=4), log=lambda m: None,
                                         progress=False)

    with ThreadPoolExecutor(2) as pool:
        built = list(pool.map(build, ["a", "b"]))
    assert peak[0] == 1
    assert [b.meta["results"]["accuracy"] for b in built] == [{"cell": 50.0}] * 2
    assert [b.meta["results"]["final_loss"] for b in built] == [0.5, 0.5]
