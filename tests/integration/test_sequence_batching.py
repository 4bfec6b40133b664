"""The sequence bank through the real tiny LLaVA, loaded for eval (``dymoe_seqbank`` of ``variant_sequences``):

* a batch of prompts of different lengths, padded left or right, decides and answers as each prompt alone (the eval
  loader attaches a context filled with the post-splice attention mask, ``integration/context_hooks.py``);
* a sequence with its answer (labels after the splice), as in training and in key fitting, decides as its prompt
  alone (the decision pools the prompt tokens only).

Both failed on the code before the fix (de022fe): padding entered the mean, and so did the answers."""
import os

import pytest
import torch

from llava_dymoe.core import RoutingStats, attach_stats

QUESTIONS = ["What colour is it?", "Describe the shape of the main object in the picture, in as much detail as you can.",
             "Count."]


@pytest.fixture(scope="module")
def seqbank(tiny, smoke_data, variant_sequences):
    from PIL import Image
    from llava.mm_utils import process_images
    from llava_dymoe.integration.eval_loader import load_dymoe_for_eval
    from llava_dymoe.integration.tiny_model import vicuna_prompt_ids

    tok, model, proc, _ = load_dymoe_for_eval(variant_sequences["dymoe_seqbank"][1], tiny.llm, "x", device="cpu",
                                              device_map="cpu", torch_dtype=torch.float32)
    model = model.float().eval()
    names = sorted(f for f in os.listdir(smoke_data.image_folder) if f.endswith((".png", ".jpg")))[:3]
    images = process_images([Image.open(os.path.join(smoke_data.image_folder, n)).convert("RGB") for n in names],
                            proc, model.config).float()
    prompts = [vicuna_prompt_ids(tok, q)[0] for q in QUESTIONS]
    assert len({p.shape[0] for p in prompts}) == 3
    return tok, model, images, prompts


def _decisions(model, run):
    """``{projection: [bank of each sequence]}`` of the one forward ``run()`` (the banks its gates use)."""
    seen = {}

    class Spy(RoutingStats):
        def record(self, name, logits, g, ept, *a, **k):
            seen[name] = g.detach().view(g.shape[0], -1, ept).sum(2).argmax(1)

    attach_stats(model, Spy())
    try:
        out = run()
    finally:
        attach_stats(model, None)
    return seen, out


def _per_sequence(banks, batch):
    """One bank per sequence from per-token banks ``[B * S]`` (every token of a sequence shares it)."""
    b = banks.view(batch, -1)
    assert bool((b == b[:, :1]).all())
    return b[:, 0].tolist()


@pytest.mark.parametrize("side", ["right", "left"])
def test_a_padded_batch_decides_and_answers_as_each_prompt_alone(seqbank, side):
    tok, model, images, prompts = seqbank
    model.config.tokenizer_padding_side = side  # LLaVA's splice re-pads the spliced batch on this side
    longest = max(p.shape[0] for p in prompts)
    ids = torch.zeros(3, longest, dtype=torch.long)
    mask = torch.zeros(3, longest, dtype=torch.bool)
    for i, p in enumerate(prompts):
        sl = slice(0, p.shape[0]) if side == "right" else slice(longest - p.shape[0], longest)
        ids[i, sl], mask[i, sl] = p, True
    alone, last = [], []
    for i, p in enumerate(prompts):
        with torch.no_grad():
            d, out = _decisions(model, lambda: model(input_ids=p[None], images=images[i:i + 1]))
        alone.append({k: int(v[-1]) for k, v in d.items()})
        last.append((out.logits.shape[1], out.logits[0, -1]))
    with torch.no_grad():
        d, out = _decisions(model, lambda: model(input_ids=ids, attention_mask=mask, images=images))
    changed = [(k, i) for k, v in d.items() for i, b in enumerate(_per_sequence(v, 3)) if b != alone[i][k]]
    assert not changed, f"{len(changed)} of {3 * len(d)} (projection, sequence) decisions differ from each prompt alone"
    for i, (n, logits) in enumerate(last):  # the next-token logits of each prompt's last (spliced) position
        torch.testing.assert_close(out.logits[i, n - 1 if side == "right" else -1], logits, rtol=1e-4, atol=1e-4)
    if side == "left":  # generating after right padding would continue from a pad position, whatever the routing
        gen = dict(do_sample=False, max_new_tokens=4, min_new_tokens=4, pad_token_id=0)
        with torch.no_grad():
            batched = model.generate(ids, attention_mask=mask, images=images, **gen)
            single = [model.generate(p[None], images=images[i:i + 1], **gen)[0] for i, p in enumerate(prompts)]
        assert [row.tolist() for row in batched] == [s.tolist() for s in single]
    model.config.tokenizer_padding_side = "right"


@pytest.mark.parametrize("training", [False, True])
def test_a_sequence_with_its_answer_decides_as_its_prompt_alone(seqbank, training):
    """Eval mode with labels is key fitting's forward (``trainer/router_init.py``); training mode is training's."""
    tok, model, images, prompts = seqbank
    answer = torch.tensor(tok("a red circle with a thin blue border on grey", add_special_tokens=False).input_ids
                          + [tok.eos_token_id])
    full = torch.cat([prompts[1], answer])[None]
    labels = torch.cat([torch.full_like(prompts[1], -100), answer])[None]
    model.train(training)
    try:
        with torch.no_grad():
            d_full, _ = _decisions(model, lambda: model(input_ids=full, labels=labels, images=images[1:2]))
            d_prompt, _ = _decisions(model, lambda: model(input_ids=prompts[1][None], images=images[1:2]))
    finally:
        model.eval()
    changed = [k for k in d_full if int(d_full[k][0]) != int(d_prompt[k][0])]
    assert not changed, f"{len(changed)} of {len(d_full)} projections decide otherwise with the answer"


def test_past_length_reads_every_cache_form():
    from transformers.cache_utils import DynamicCache
    from llava_dymoe.integration.context_hooks import past_length

    kv = (torch.zeros(1, 2, 5, 4), torch.zeros(1, 2, 5, 4))
    cache = DynamicCache()
    cache.update(*kv, layer_idx=0)
    assert (past_length(None), past_length((kv, kv)), past_length(()), past_length(cache)) == (0, 5, 0, 5)


def test_the_eval_model_carries_its_context(seqbank):
    from llava_dymoe.integration.context_hooks import context_of

    tok, model, images, prompts = seqbank
    ctx = context_of(model)
    with torch.no_grad():
        out = model(input_ids=prompts[0][None], attention_mask=torch.ones(1, prompts[0].shape[0], dtype=torch.bool),
                    images=images[:1], use_cache=True)
        assert ctx.past_len == 0 and ctx.supervised is None and ctx.valid_mask.shape == out.logits.shape[:2]
        model(input_ids=prompts[0][None, :1], past_key_values=out.past_key_values,
              attention_mask=torch.ones(1, out.logits.shape[1] + 1, dtype=torch.bool))
    assert ctx.past_len == out.logits.shape[1] and ctx.valid_mask.shape == (1, 1)
