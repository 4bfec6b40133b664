"""The HF-native hosts (transformers 5.x): ``LlavaForConditionalGeneration`` (``hf-llava``) and
``Qwen2_5_VLForConditionalGeneration`` (``qwen2_5_vl``), each a tiny model built from configs (docs/hosts.md).

* the data path: LLaVA JSON through the processor's chat template, prompt tokens masked (checked against the
  tokenizer's own encoding of the answer);
* two DyMoE tasks through ``python -m llava_dymoe.train_hf`` (HF ``Trainer`` + our trainer mixin): task 1's
  banks bit-identical in task 2's checkpoint, task 2's bank trained, the host recorded;
* the checkpoint round trip: the trained model and ``load_hf_checkpoint`` give identical logits and answers;
* a checkpoint of another host is refused in one line.
"""
import json
import os

import pytest

transformers = pytest.importorskip("transformers", minversion="5.0")

import torch  # noqa: E402
from hf_helpers import run_train_hf, train_args  # noqa: E402

HOSTS = ["hf-llava", "qwen2_5_vl"]
on_hosts = pytest.mark.parametrize("host_model", HOSTS, indirect=True)


@pytest.fixture(scope="module")
def sequences(tmp_path_factory):
    return {}


@pytest.fixture
def sequence(host_model, hf_tasks, sequences, tmp_path_factory):
    """Task 1 through ``llava-dymoe train --host HOST`` (a subprocess), task 2 in this process (``--host`` read
    from the model's config; its trained model is kept).  Once per host."""
    from llava_dymoe.train_hf import parse, train

    host, model = host_model
    if host not in sequences:
        root = tmp_path_factory.mktemp(f"seq_{host}")
        first, second = hf_tasks
        proc = run_train_hf(["train", *train_args(model, first, root / "t1", 1, extra=["--host", host])],
                            module="llava_dymoe.console")
        assert proc.returncode == 0, proc.stderr[-3000:]
        torch.manual_seed(0)
        trainer = train(*parse(train_args(model, second, root / "t2", 2, prev=root / "t1",
                                          extra=["--dymoe_log_routing", "True"])))
        sequences[host] = (root / "t1", root / "t2", trainer)
    return sequences[host]


def _processor(host_model):
    from llava_dymoe.hosts import get_host

    return get_host(host_model[0]).load_processor(host_model[1])


@on_hosts
def test_labels_are_the_answer_tokens_only(host_model, hf_tasks):
    from llava_dymoe.hosts.hf_data import LlavaJsonDataset, PadCollator

    proc = _processor(host_model)
    ds = LlavaJsonDataset(hf_tasks[0].train_json, proc, hf_tasks[0].image_folder, 256)
    sample = ds.samples[0]
    enc = ds[0]
    answer = sample["conversations"][1]["value"]
    want = proc.tokenizer(" " + answer + "</s>", add_special_tokens=False)["input_ids"]
    supervised = enc["labels"][enc["labels"] != -100].tolist()
    assert supervised == want  # the answer (and the turn's </s>), nothing of the prompt
    n = len(want)
    assert enc["labels"][-n:].tolist() == enc["input_ids"][-n:].tolist()
    assert (enc["labels"][:-n] == -100).all()
    if host_model[0] == "hf-llava":
        image_id, n_image = proc.tokenizer.convert_tokens_to_ids("<image>"), 16  # (32 / 8)^2 patches, CLS dropped
    else:  # one token per 2x2 merged patch of the image's grid
        image_id, n_image = proc.tokenizer.convert_tokens_to_ids("<|image_pad|>"), int(enc["image_grid_thw"].prod()) // 4
        assert n_image >= 4 and enc["pixel_values"].shape[0] == int(enc["image_grid_thw"].prod())
    assert int((enc["input_ids"] == image_id).sum()) == n_image
    batch = PadCollator(proc.tokenizer.pad_token_id)([ds[0], ds[1], ds[2]])
    images = batch["image_grid_thw"] if "image_grid_thw" in batch else batch["pixel_values"]
    assert images.shape[0] == 3 and batch["labels"].shape == batch["input_ids"].shape
    for i in range(3):
        row = ds[i]
        L = row["input_ids"].shape[0]
        assert torch.equal(batch["input_ids"][i, :L], row["input_ids"])
        assert (batch["attention_mask"][i, L:] == 0).all() and (batch["labels"][i, L:] == -100).all()


@on_hosts
def test_two_tasks_keep_task_one_banks_bit_identical(sequence, host_model):
    from safetensors.torch import load_file

    from llava_dymoe.hosts import get_host

    t1, t2, trainer = sequence
    first, second = load_file(str(t1 / "dymoe_experts.safetensors")), load_file(str(t2 / "dymoe_experts.safetensors"))
    old = {k: v for k, v in second.items() if k.endswith(".t0")}
    assert set(old) == set(first) and len(first) == 3 * 14  # A, B, router of 7 projections x 2 layers
    assert all(k.startswith("model.language_model.layers.") for k in first)
    for k, v in first.items():
        assert torch.equal(old[k], v), k
    new_b = [v for k, v in second.items() if ".dymoe_B." in k and k.endswith(".t1")]
    # B starts at 0, so a non-zero B was trained; in 3 steps TAG may send all of one projection's tokens to the
    # old bank (no gradient reaches the new one there), so not every projection must have moved
    assert len(new_b) == 14 and sum(bool(v.abs().sum() > 0) for v in new_b) >= 12
    for path, task in ((t1, 1), (t2, 2)):
        with open(path / "config.json") as f:
            block = json.load(f)["dymoe"]
        assert block["host"] == host_model[0] and block["task_id"] == task and block["config"]["num_tasks"] == task
    assert (t2 / "routing_stats.json").is_file()
    non_lora = torch.load(t2 / "non_lora_trainables.bin", weights_only=True)
    projector = get_host(host_model[0]).projector(trainer.model)
    assert sorted(non_lora) == sorted(n for n, p in trainer.model.named_parameters()
                                      if any(p is q for q in projector.parameters()))


@on_hosts
def test_checkpoint_round_trip_gives_identical_logits_and_answers(sequence, host_model, hf_tasks):
    from llava_dymoe.hosts.hf_data import LlavaJsonDataset, PadCollator
    from llava_dymoe.hosts.loader import load_hf_checkpoint

    _, t2, trainer = sequence
    trained = trainer.model.eval()
    loaded, proc = load_hf_checkpoint(str(t2), host_model[1], attn_implementation="sdpa")
    ds = LlavaJsonDataset(hf_tasks[1].train_json, proc, hf_tasks[1].image_folder, 256)
    batch = PadCollator(proc.tokenizer.pad_token_id)([ds[0], ds[1]])
    batch.pop("labels")
    with torch.no_grad():
        a, b = trained(**batch).logits, loaded(**batch).logits
    assert torch.equal(a, b)
    prompt = PadCollator(proc.tokenizer.pad_token_id)([ds[0]])  # one prompt, no padding
    prompt.pop("labels")
    cut = int(prompt["attention_mask"][0].sum()) - 3
    prompt = {k: (v[:, :cut] if k in ("input_ids", "attention_mask") else v) for k, v in prompt.items()}
    with torch.no_grad():
        ga = trained.generate(**prompt, max_new_tokens=6, do_sample=False)
        gb = loaded.generate(**prompt, max_new_tokens=6, do_sample=False)
    assert torch.equal(ga, gb) and ga.shape[1] > cut


@on_hosts
def test_checkpoint_of_upstream_llava_is_refused(sequence, host_model, hf_tasks, tmp_path):
    """The same files recorded as host 'llava': the HF loader and a task 2 on the HF host refuse in one line."""
    from safetensors.torch import load_file

    from llava_dymoe.config import DyMoEConfig
    from llava_dymoe.hosts import HostError
    from llava_dymoe.hosts.loader import load_hf_checkpoint
    from llava_dymoe.integration.checkpoint import write_task_checkpoint

    t1, _, _ = sequence
    cfg = transformers.AutoConfig.from_pretrained(str(t1))
    block = cfg.dymoe
    fake = tmp_path / "upstream_t1"
    write_task_checkpoint(str(fake), model_config=cfg, dymoe_cfg=DyMoEConfig.from_dict(block["config"]),
                          method=block["method"], task_id=1, experts=load_file(str(t1 / "dymoe_experts.safetensors")),
                          non_lora=torch.load(t1 / "non_lora_trainables.bin", weights_only=True), run_args={},
                          host="llava")
    with pytest.raises(HostError, match="trained on host 'llava'"):
        load_hf_checkpoint(str(fake), host_model[1])
    proc = run_train_hf(train_args(host_model[1], hf_tasks[1], tmp_path / "t2", 2, prev=fake))
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "trained on host 'llava'" in last and f"host '{host_model[0]}'" in last
    assert not os.path.exists(tmp_path / "t2" / "dymoe_task.json")


@on_hosts
def test_eval_answers_a_question_file_like_model_vqa_loader(sequence, host_model, hf_tasks, tmp_path):
    """``python -m llava_dymoe.eval_hf`` (the checkpoint loaded from disk) writes, per question, what the trained
    model in memory answers; the answers file is LLaVA's format, read by the shared scorers; never overwritten."""
    from llava_dymoe.errors import ConfigError
    from llava_dymoe.eval.scorers import score_file
    from llava_dymoe.eval_hf import answer, main

    _, t2, trainer = sequence
    data = hf_tasks[1]
    out = tmp_path / "answers.jsonl"
    argv = ["--model-path", str(t2), "--model-base", host_model[1], "--question-file", data.questions,
            "--image-folder", data.image_folder, "--answers-file", str(out), "--max-new-tokens", "5"]
    assert main(argv) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    with open(data.questions) as f:
        questions = [json.loads(line) for line in f]
    assert [r["question_id"] for r in rows] == [q["question_id"] for q in questions]
    proc = _processor(host_model)
    for row, q in zip(rows, questions):
        assert row["text"] == answer(trainer.model.eval(), proc, q, data.image_folder, 5)
        assert row["prompt"] == q["text"] and row["model_id"] == "t2"
    result = score_file("contains", str(out), data.references)
    assert result["n"] == len(questions)
    before = out.read_bytes()
    with pytest.raises(ConfigError, match="never overwritten"):
        main(argv)
    assert out.read_bytes() == before


@pytest.mark.parametrize("host_model", ["qwen2_5_vl"], indirect=True)
def test_qwen_processor_reads_a_processor_level_chat_template(host_model, tmp_path):
    """Released Qwen2.5-VL folders keep the chat template in the processor's chat_template.json."""
    import shutil

    from llava_dymoe.hosts.qwen2_5_vl import ImageTextProcessor

    folder = tmp_path / "qwen"
    shutil.copytree(host_model[1], folder)
    template = (folder / "chat_template.jinja").read_text()
    (folder / "chat_template.jinja").unlink()
    (folder / "chat_template.json").write_text(json.dumps({"chat_template": template}))
    proc = ImageTextProcessor.from_pretrained(str(folder))
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi?"}]}]
    assert proc.apply_chat_template(messages, add_generation_prompt=True).endswith(
        "USER: <|vision_start|><|image_pad|><|vision_end|>\nHi? ASSISTANT:")
