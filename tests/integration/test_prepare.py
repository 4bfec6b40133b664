"""``prepare_model`` in process: what is trainable, what changes in a step, and the bad-input errors."""
import os
import shutil

import pytest
import torch

from llava_dymoe.core import DyMoELinear, dymoe_layers
from llava_dymoe.integration import checkpoint as ckpt
from llava_dymoe.trainer.prepare import prepare_model

pytestmark = pytest.mark.llava11  # holds on both upstream lines (make test-llava11)


@pytest.fixture(scope="module")
def args_cls():
    from llava.train.train import TrainingArguments
    from llava_dymoe.trainer.arguments import make_training_arguments

    return make_training_arguments(TrainingArguments)


def _args(args_cls, out, **kw):
    base = dict(output_dir=str(out), report_to="none", gradient_accumulation_steps=1, dymoe_lora_dropout=0.0)
    base.update(kw)
    return args_cls(**base)


def _model(tiny):
    from llava_dymoe.integration.tiny_model import build_llava_model

    return build_llava_model(tiny.llm, tiny.clip)


def _batch(tiny, model):
    from transformers import AutoTokenizer
    from llava.mm_utils import process_images
    from PIL import Image
    from llava_dymoe.integration.tiny_model import vicuna_prompt_ids

    tok = AutoTokenizer.from_pretrained(tiny.llm, use_fast=False)
    ids = vicuna_prompt_ids(tok, "What color is the square in the image?").repeat(2, 1)
    labels = ids.clone()
    labels[:, :-3] = -100
    pix = process_images([Image.new("RGB", (32, 32), (200, 20, 20))] * 2, model.get_vision_tower().image_processor,
                         model.config)
    return dict(input_ids=ids, labels=labels, attention_mask=torch.ones_like(ids, dtype=torch.bool), images=pix)


def test_task2_step_changes_only_the_new_bank_and_the_projector(tiny, sequence, args_cls, tmp_path):
    model = _model(tiny)
    run = prepare_model(model, _args(args_cls, tmp_path / "t2", dymoe_task_id=2, dymoe_prev_ckpt=sequence[0]))
    assert run.task_key == "t1" and run.num_modules == 2 * 7 and run.cfg.num_tasks == 2
    layers = dict(dymoe_layers(model))
    assert all(isinstance(m, DyMoELinear) and m.num_tasks == 2 for m in layers.values())
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith(".t1") or "mm_projector" in n for n in trainable)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    loss = model(**_batch(tiny, model)).loss
    loss.backward()
    for n, p in model.named_parameters():
        if not p.requires_grad:
            assert p.grad is None, n
    opt.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= trainable
    assert any("dymoe_B.t1" in n for n in changed) and any("mm_projector" in n for n in changed)
    # the loaded task-1 banks equal the checkpoint's, bit for bit
    saved = ckpt.load_task_state(sequence[0])["experts"]
    params = dict(model.named_parameters())
    assert all(torch.equal(params[k], v) for k, v in saved.items())


def _expect(exc, match, fn):
    with pytest.raises(exc, match=match):
        fn()


def test_bad_sequences_fail_with_clear_messages(tiny, sequence, args_cls, tmp_path):
    t1 = sequence[0]
    digest = ckpt.verify(t1)["sha256"]
    cases = [
        (ValueError, "pass --dymoe_prev_ckpt", dict(dymoe_task_id=2)),
        (ValueError, "takes no --dymoe_prev_ckpt", dict(dymoe_task_id=1, dymoe_prev_ckpt=t1)),
        (ValueError, "this run is task 2, not --dymoe_task_id 3", dict(dymoe_task_id=3, dymoe_prev_ckpt=t1)),
        (ValueError, "one sequence uses one method", dict(dymoe_task_id=2, dymoe_prev_ckpt=t1,
                                                          dymoe_method="incmoelora")),
        (ckpt.CheckpointError, r"experts_per_task=16 .* --dymoe_experts_per_task 16",
         dict(dymoe_task_id=2, dymoe_prev_ckpt=t1, dymoe_experts_per_task=8)),
        (ckpt.CheckpointError, "--dymoe_target_modules", dict(dymoe_task_id=2, dymoe_prev_ckpt=t1,
                                                                dymoe_target_modules="q_proj,v_proj")),
        (KeyError, "Known methods: .*dymoe, .*incmoelora", dict(dymoe_method="dymo")),
        (ValueError, "--lora_enable False", dict(lora_enable=True)),
    ]
    for exc, match, kw in cases:
        _expect(exc, match, lambda: prepare_model(_model(tiny), _args(args_cls, tmp_path / "new", **kw)))
    # a finished task's directory is never a new output_dir, nor the same as the previous one
    _expect(ckpt.CheckpointError, "never overwritten",
            lambda: prepare_model(_model(tiny), _args(args_cls, t1)))
    _expect(ckpt.CheckpointError, "same directory",
            lambda: prepare_model(_model(tiny), _args(args_cls, t1, dymoe_task_id=2, dymoe_prev_ckpt=t1)))
    assert ckpt.verify(t1)["sha256"] == digest  # untouched


def test_unfinished_or_modified_previous_checkpoints_are_refused(tiny, sequence, args_cls, tmp_path):
    broken = tmp_path / "copy"
    shutil.copytree(sequence[0], broken)
    with open(broken / ckpt.NON_LORA, "ab") as f:
        f.write(b"x")
    _expect(ckpt.CheckpointError, "modified after the task finished",
            lambda: prepare_model(_model(tiny), _args(args_cls, tmp_path / "n", dymoe_task_id=2,
                                                       dymoe_prev_ckpt=str(broken))))
    os.remove(broken / ckpt.MARKER)
    _expect(ckpt.CheckpointError, "not a finished DyMoE task checkpoint",
            lambda: prepare_model(_model(tiny), _args(args_cls, tmp_path / "n", dymoe_task_id=2,
                                                       dymoe_prev_ckpt=str(broken))))
