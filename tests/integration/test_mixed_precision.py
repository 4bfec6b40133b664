"""Mixed precision on CPU (issue 20 item 3): a two-task DyMoE sequence trained in bf16, saved, reloaded with
the project's eval loader and compared with the fp32 sequence of the same seed and flags (``sequence``).

Two bf16 paths, both through upstream ``train()`` with ``--bf16 True``:

* ``zero2``: DeepSpeed ZeRO-2, one rank, as LLaVA trains: the engine casts the whole module (banks included)
  to bf16 and keeps fp32 master weights in the optimizer; the banks are saved in bf16;
* ``plain``: no DeepSpeed: HF's CPU AMP (``torch.autocast`` bf16) over the bf16 base, with the banks kept fp32
  as master weights (as peft keeps LoRA adapters fp32 next to a bf16 base); the banks are saved in fp32.

Routing must be fp32 in both (checked on every router call of the runs by ``precision_probe.py``), the save
lossless, the old banks bit-identical through task 2, and the bf16 runs within the tolerances below of fp32.

Tolerances and their basis.  bf16 keeps 8 significant bits: one rounding is a relative error of at most
u = 2^-8 ~ 0.39 %.  The last-position logits of a reloaded task-2 model pass through about 32 bf16 roundings
on any one path (2 layers x (q/k/v/o, gate/up/down GEMMs with their DyMoE banks, attention, norm, residual
adds), the projector, lm_head); rounding errors of independent ops add like a random walk, sqrt(32) u ~ 5.7 u,
so the logits may differ from fp32 by ``LOGIT_REL`` = 8 u ~ 3.1 % of the fp32 model's largest |logit|.  The
losses are fp32 cross-entropies of those logits: a log-softmax moves by at most 2 max |d logit|, which with
max |logit| < 1 (tiny model) and loss ~ ln(1000) ~ 6.9 is < 2 x 8 u / 6.9 ~ 2.3 u of the loss; ``LOSS_REL`` =
3 u ~ 1.2 %.  Greedy answers must agree wherever the fp32 top-2 margin exceeds twice the logit bound.
Measured (docs/mixed-precision.md): losses within 1.6e-4 (relative), logits within 1.0-1.6 u of the scale.

ZeRO-2 (LLaVA's own path: bf16 banks, exact reload) is in the default suite; the plain AMP path, whose two
layer bugs (``compute_dtype``, ``routing.full_precision``) the core tests reproduce in isolation, runs
end to end in the slow suite (suite time: two more training processes and their reloads), as does the direct
DeepSpeed fp16 engine check; the one-line fp16 refusal is in the default suite.
"""
import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO, STEPS
from llava_dymoe.integration import checkpoint as ckpt
from llava_dymoe.integration.eval_loader import load_dymoe_for_eval
from llava_dymoe.integration.llava_args import dymoe_flags, llava_train_argv, single_rank_env

HERE = os.path.dirname(os.path.abspath(__file__))
PROBE = os.path.join(HERE, "precision_probe.py")
U_BF16 = 2.0 ** -8
LOSS_REL = 3 * U_BF16
LOGIT_REL = 8 * U_BF16


def _train(tiny, data, out, task_id, prev, deepspeed):
    argv = llava_train_argv(tiny.llm, tiny.clip, data.train_json, data.image_folder, str(out), lora=False,
                            max_steps=STEPS, deepspeed=deepspeed and os.path.join(REPO, "scripts", f"{deepspeed}.json"),
                            overrides={"bf16": True},
                            extra=dymoe_flags("dymoe", task_id, prev and str(prev), lora_dropout=0))
    env = dict(os.environ, PYTHONUNBUFFERED="1", PRECISION_PROBE_DIR=str(out) + ".probe",
               **(single_rank_env() if deepspeed else {}))
    with open(str(out) + ".log", "w") as f:
        proc = subprocess.run([sys.executable, PROBE, *argv], env=env, stdout=f, stderr=subprocess.STDOUT, timeout=600)
    assert proc.returncode == 0, open(str(out) + ".log").read()[-3000:]
    return str(out)


@pytest.fixture(scope="module", params=["zero2", pytest.param("plain", marks=pytest.mark.slow)])
def bf16_run(request, tiny, smoke_data, tmp_path_factory):
    """``(path, task-1 dir, task-2 dir)`` of a bf16 sequence; each dir has its probe results in ``<dir>.probe``."""
    path = request.param
    root = tmp_path_factory.mktemp(f"bf16_{path}")
    deepspeed = "zero2" if path == "zero2" else None
    t1 = _train(tiny, smoke_data, root / "1_task_llava_dymoe", 1, None, deepspeed)
    t2 = _train(tiny, smoke_data, root / "2_task_llava_dymoe", 2, t1, deepspeed)
    return path, t1, t2


def _routing(task_dir):
    return json.load(open(task_dir + ".probe/routing.json"))


def _in_memory(task_dir):
    return torch.load(task_dir + ".probe/in_memory.pt", weights_only=True)


def _losses(task_dir):
    return [h["loss"] for h in json.load(open(os.path.join(task_dir, "trainer_state.json")))["log_history"]
            if "loss" in h]


def _experts(task_dir):
    return load_file(os.path.join(task_dir, ckpt.EXPERTS))


def test_routing_ran_in_fp32_on_every_router_call(bf16_run):
    path, *dirs = bf16_run
    for task_dir in dirs:
        seen = _routing(task_dir)
        assert seen["calls"] > 0 and seen["unequal"] == 0, (path, seen)
        assert seen["logit_dtypes"] == ["torch.float32"] and seen["input_dtypes"] == ["torch.bfloat16"]
        assert seen["base_dtypes"] == ["torch.bfloat16"], (path, seen)
        if path == "plain":  # HF's CPU AMP: every router call inside autocast, banks fp32 (master weights)
            assert seen["autocast_calls"] == seen["calls"] and seen["bank_dtypes"] == ["torch.float32"]
        else:  # DeepSpeed bf16: no autocast, the whole module (banks included) in bf16
            assert seen["autocast_calls"] == 0 and seen["bank_dtypes"] == ["torch.bfloat16"]


def test_saved_banks_dtype_lossless_and_old_banks_bit_identical(bf16_run):
    path, t1, t2 = bf16_run
    want = {"plain": torch.float32, "zero2": torch.bfloat16}[path]
    old, new = _experts(t1), _experts(t2)
    for task_dir, saved in ((t1, old), (t2, new)):
        assert {t.dtype for t in saved.values()} == {want}
        memory = _in_memory(task_dir)["banks"]  # the trained model's banks, before the save
        assert set(memory) == set(saved) and all(torch.equal(memory[k], saved[k]) for k in saved)
    assert old and set(old) < set(new)
    assert [k for k in old if not torch.equal(old[k], new[k])] == []
    assert all(new[k].abs().sum() > 0 for k in new if k.endswith("dymoe_B.t1"))
    projector = torch.load(os.path.join(t2, ckpt.NON_LORA), weights_only=True)
    assert {t.dtype for t in projector.values()} == {want}


def test_losses_within_bf16_tolerance_of_fp32(sequence, bf16_run):
    path, *dirs = bf16_run
    for fp32_dir, bf16_dir in zip(sequence, dirs):
        a, b = _losses(fp32_dir), _losses(bf16_dir)
        assert len(a) == len(b) == STEPS
        rel = max(abs(x - y) / abs(x) for x, y in zip(a, b))
        print(f"{path} {os.path.basename(bf16_dir)}: losses fp32 {a} bf16 {b}; max rel diff {rel:.2e}")
        assert rel <= LOSS_REL, (a, b)


def _reload(task_dir, tiny, dtype, training_tower=False):
    tok, model, _, _ = load_dymoe_for_eval(task_dir, tiny.llm, "x", device="cpu", device_map="cpu",
                                           torch_dtype=dtype)
    if training_tower:  # the tower as train() held it (fp32 weights cast to the training dtype), not upstream's
        from transformers import CLIPVisionModel  # eval-time fp16 copy

        tower = model.get_vision_tower()
        tower.vision_tower = CLIPVisionModel.from_pretrained(tiny.clip).to(dtype).requires_grad_(False).eval()
    return tok, model


def test_reloaded_bf16_model_gives_the_in_memory_logits(bf16_run, tiny):
    """ZeRO-2 (banks bf16 in memory): save + reload is exact.  Plain AMP: the loader casts the fp32 master banks
    to the model's dtype (as upstream's merge does LoRA adapters), and eval runs without autocast: within the
    logit tolerance."""
    import precision_probe

    path, _, t2 = bf16_run
    tok, model = _reload(t2, tiny, torch.bfloat16, training_tower=True)
    memory = _in_memory(t2)["logits"]
    logits = precision_probe.last_logits(model, tok)
    diff = (logits.float() - memory.float()).abs().max().item()
    print(f"{path}: reloaded vs in-memory bf16 logits, max |diff| {diff:.3e} (max |logit| "
          f"{memory.float().abs().max().item():.3e})")
    if path == "zero2":
        assert torch.equal(logits, memory)
    else:
        assert diff <= LOGIT_REL * memory.float().abs().max().item()


def _answers(model, tok, data):
    """``[(first-token logits, greedy answer)]`` for the smoke questions, pixels in the model's dtype (the loader's
    fp16 tower casts them in and its features back)."""
    from PIL import Image
    from llava.mm_utils import process_images
    from llava_dymoe.integration.tiny_model import vicuna_prompt_ids

    dtype = next(model.parameters()).dtype
    out = []
    for line in open(data.questions):
        q = json.loads(line)
        image = Image.open(os.path.join(data.image_folder, q["image"])).convert("RGB")
        pixels = process_images([image], model.get_vision_tower().image_processor, model.config).to(dtype)
        ids = vicuna_prompt_ids(tok, q["text"])
        with torch.inference_mode():
            first = model(input_ids=ids, images=pixels, use_cache=False).logits[0, -1].float()
            gen = model.generate(ids, images=pixels, image_sizes=[image.size], do_sample=False, max_new_tokens=8,
                                 use_cache=True)
        out.append((first, tok.batch_decode(gen, skip_special_tokens=True)[0].strip()))
    return out


def test_reloaded_bf16_model_answers_like_fp32(sequence, bf16_run, tiny, smoke_data):
    path, _, t2 = bf16_run
    ref = _answers(*reversed(_reload(sequence[1], tiny, torch.float32)), smoke_data)
    got = _answers(*reversed(_reload(t2, tiny, torch.bfloat16)), smoke_data)
    same = 0
    for (la, text_a), (lb, text_b) in zip(ref, got):
        bound = LOGIT_REL * la.abs().max().item()
        diff = (la - lb).abs().max().item()
        top2 = la.topk(2).values
        margin = (top2[0] - top2[1]).item()
        print(f"{path}: first-token logits max |diff| {diff:.3e} (bound {bound:.3e}, fp32 top-2 margin "
              f"{margin:.3e}); fp32 {text_a!r} bf16 {text_b!r}")
        assert diff <= bound
        if margin > 2 * bound:  # a margin no bf16 error within the bound can flip
            assert la.argmax() == lb.argmax()
        same += text_a == text_b
    print(f"{path}: {same}/{len(ref)} greedy answers identical to fp32")


# ----------------------------------------------------------------------------- fp16: refused on CPU, with evidence
#: A DeepSpeed engine on the CPU accelerator with fp16 + dynamic loss scaling under ZeRO-2, one rank, and the same
#: with bf16 as the control (no LLaVA, no transformers: DeepSpeed's own answer).
_DS_FP16 = r"""
import json, torch, deepspeed
from deepspeed.accelerator import get_accelerator
out = {"deepspeed": deepspeed.__version__, "accelerator": get_accelerator().device_name(),
       "fp16_supported": bool(get_accelerator().is_fp16_supported()),
       "mkldnn_fp16": bool(torch.ops.mkldnn._is_mkldnn_fp16_supported())}
for half in ("fp16", "bf16"):
    model = torch.nn.Linear(8, 8)
    cfg = {"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1, "zero_optimization": {"stage": 2},
           half: {"enabled": True, "loss_scale": 0, "initial_scale_power": 16} if half == "fp16" else {"enabled": True}}
    try:
        engine, *_ = deepspeed.initialize(model=model, optimizer=torch.optim.AdamW(model.parameters()), config=cfg)
        loss = engine(torch.ones(1, 8, dtype=next(engine.module.parameters()).dtype)).float().pow(2).mean()
        engine.backward(loss)
        engine.step()
        out[half] = {"ok": True, "loss_scale": float(getattr(engine.optimizer, "loss_scale", 1.0))}
    except Exception as e:
        out[half] = {"ok": False, "error": f"{type(e).__name__}: {e}"}
print("RESULT " + json.dumps(out))
"""


@pytest.mark.slow  # 5-10 s: DeepSpeed imported and initialised twice; the default suite keeps the refusal below
def test_deepspeed_cpu_accelerator_refuses_fp16_where_onednn_has_no_fp16(tmp_path):
    """The evidence behind the refusal below: DeepSpeed 0.19.8's CPU accelerator allows fp16 only where
    ``torch.ops.mkldnn._is_mkldnn_fp16_supported()`` (AVX512-FP16 / AMX-FP16 CPUs); elsewhere ``deepspeed.
    initialize`` raises before any step, so its fp16 loss scaler never runs on such a CPU.  bf16 under the same
    ZeRO-2 config trains (the control)."""
    from llava_dymoe.integration.llava_args import run_python
    from llava_dymoe.trainer.preflight import half_precision_device

    if half_precision_device() is not None:
        pytest.skip("a GPU is visible: DeepSpeed's fp16 runs on it, not on the CPU accelerator")
    proc = run_python(_DS_FP16, [], env={**single_rank_env(), "DS_ACCELERATOR": "cpu"}, cwd=str(tmp_path), timeout=300)
    result = json.loads(proc.stdout.split("RESULT ", 1)[1].splitlines()[0])
    print(result)
    assert result["accelerator"] == "cpu" and result["bf16"]["ok"], result
    if result["mkldnn_fp16"]:
        pytest.skip(f"this CPU's oneDNN has fp16 kernels, so DeepSpeed allows fp16 here: {result['fp16']} "
                    "(an fp16 ZeRO-2 run of train() is still refused by transformers on CPU, see the next test)")
    assert not result["fp16_supported"]
    assert result["fp16"] == {"ok": False, "error": "ValueError: Type fp16 is not supported on your device."}


def test_fp16_on_cpu_is_refused_in_one_line_naming_bf16(tiny, smoke_data, tmp_path):
    """``--fp16 True`` (here under ZeRO-2 with LLaVA's dynamic loss scaling config) on a machine without a GPU:
    transformers would refuse it in ``TrainingArguments`` after the imports (a traceback), DeepSpeed's CPU
    accelerator after that; the pre-flight refuses first, in one line that names the fix, and writes nothing."""
    from llava_dymoe.trainer.preflight import half_precision_device
    from reliability_helpers import one_line_refusal, run_module, tree_hashes

    if half_precision_device() is not None:
        pytest.skip("a GPU is visible: fp16 is allowed")
    out = tmp_path / "out"
    before = tree_hashes(tmp_path)
    argv = llava_train_argv(tiny.llm, tiny.clip, smoke_data.train_json, smoke_data.image_folder, str(out), lora=False,
                            max_steps=STEPS, deepspeed=os.path.join(REPO, "scripts", "zero2.json"),
                            overrides={"fp16": True}, extra=dymoe_flags("dymoe", 1, None, lora_dropout=0))
    res = run_module("llava_dymoe.train", *argv, env=single_rank_env())
    one_line_refusal(res, "--fp16 True needs a GPU", "--bf16 True")
    assert not out.exists() and tree_hashes(tmp_path) == before
    # and what transformers itself says on this stack (the refusal the pre-flight replaces)
    from transformers import TrainingArguments

    with pytest.raises(ValueError, match=r"FP16 Mixed precision training .* can only be used on CUDA"):
        TrainingArguments(output_dir=str(tmp_path / "hf"), fp16=True)


def test_aux_gradient_follows_the_deepspeed_fp16_loss_scale():
    """Under fp16 the injected RSR gradient must be scaled like the main loss: the trainer reads the scale from the
    DeepSpeed ZeRO optimizer (``cur_scale``/``loss_scale``, both properties in 0.19.8) or HF's AMP scaler; 1.0
    for bf16/fp32.  (The fp16 run itself needs a GPU; this checks the read on stand-in objects.)"""
    from types import SimpleNamespace

    from llava_dymoe.trainer.trainer import DyMoETrainerMixin

    zero = SimpleNamespace(cur_scale=1024.0, loss_scale=1024.0)
    trainer = SimpleNamespace(args=SimpleNamespace(fp16=True), model_wrapped=SimpleNamespace(optimizer=zero))
    assert DyMoETrainerMixin._dymoe_loss_scale(trainer) == 1024.0
    amp = SimpleNamespace(args=SimpleNamespace(fp16=True), model_wrapped=None,
                          accelerator=SimpleNamespace(scaler=SimpleNamespace(get_scale=lambda: 256.0)))
    assert DyMoETrainerMixin._dymoe_loss_scale(amp) == 256.0
    for precision in ({"bf16": True, "fp16": False}, {"fp16": False}):
        assert DyMoETrainerMixin._dymoe_loss_scale(SimpleNamespace(args=SimpleNamespace(**precision))) == 1.0
