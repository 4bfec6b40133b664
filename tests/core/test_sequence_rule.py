"""The sequence bank's decision (``bank_scope="sequence"``, core/rules/sequence.py): which tokens it pools, when a
kept decision is reused, which inputs it refuses.  Each test failed on the code before the fix (de022fe)."""
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
import naive_ref as ref  # noqa: E402
import test_variants as tv  # noqa: E402 (its helpers, not its tests)

from llava_dymoe.core import DyMoEContext, attach_context  # noqa: E402

SEQ = dict(assign_rule="cascade", bank_scope="sequence")


def make_layer(seed=0, tasks=3):
    return tv.make_layer(tasks, seed, **SEQ)


def banks_of(layer, x, ctx):
    """The bank each token of ``x`` is routed to (its gate's non-zero bank), through the layer's own forward."""
    seen = {}
    from llava_dymoe.core import RoutingStats, attach_stats

    class Spy(RoutingStats):
        def record(self, name, logits, g, *a, **k):
            seen["g"] = g.detach()

    attach_stats(layer, Spy())
    attach_context(layer, ctx)
    layer(x)
    attach_stats(layer, None)
    g = seen["g"].view(-1, layer.num_tasks, layer.experts_per_task).sum(2)
    return g.argmax(1).view(x.shape[:-1])


@pytest.mark.parametrize("training", [True, False])
def test_the_decision_pools_the_prompt_only(training):
    """Training and key fitting see a sequence's answer tokens (label != IGNORE_INDEX after the splice); inference
    cannot: the decision on a sequence with its answer equals the decision on its prompt alone."""
    layer = make_layer(1).train(training)
    g = torch.Generator().manual_seed(2)
    prompt_len, seq_len = 5, 9
    x = torch.randn(8, seq_len, 5, dtype=torch.float64, generator=g)
    supervised = torch.zeros(8, seq_len, dtype=torch.bool)
    supervised[:, prompt_len:] = True  # the answer
    ctx = DyMoEContext(valid_mask=torch.ones(8, seq_len, dtype=torch.bool))
    ctx.supervised = supervised
    with_answer = banks_of(layer, x, ctx)[:, 0]
    alone = banks_of(layer.train(training), x[:, :prompt_len], DyMoEContext())[:, 0]
    rows = torch.cat(list(layer.dymoe_router.values()))
    want = ref.sequence_banks(x[:, :prompt_len], rows, 3, 0.0)[::prompt_len]
    assert alone.tolist() == want
    assert with_answer.tolist() == want
    everything = ref.sequence_banks(x, rows, 3, 0.0)[::seq_len]
    assert everything != want  # the answers would have changed some decisions


def test_a_fresh_one_token_forward_decides_anew():
    """After a prompt, a one-token forward that does not continue its KV cache (no cache: ``past_len`` 0; another
    cache length) decides on its own token; one that continues it (``past_len`` = the prompt's length) reuses."""
    layer = make_layer(9).eval()
    g = torch.Generator().manual_seed(9)
    rows = torch.cat(list(layer.dymoe_router.values()))
    prompt = torch.randn(2, 7, 5, dtype=torch.float64, generator=g)
    prompt_banks = ref.sequence_banks(prompt, rows, 3, 0.0)[::7]
    steps = torch.randn(40, 2, 1, 5, dtype=torch.float64, generator=g)
    own = [ref.sequence_banks(s, rows, 3, 0.0) for s in steps]
    i = next(i for i, o in enumerate(own) if o != prompt_banks)  # a token that decides otherwise on its own
    ctx = DyMoEContext()
    ctx.past_len = 0
    assert banks_of(layer, prompt, ctx)[:, 0].tolist() == prompt_banks
    assert banks_of(layer, steps[i], ctx)[:, 0].tolist() == own[i]  # a fresh forward (no cache)
    assert banks_of(layer, prompt, ctx)[:, 0].tolist() == prompt_banks
    ctx.past_len = 3  # a cache that is not the prompt's
    assert banks_of(layer, steps[i], ctx)[:, 0].tolist() == own[i]
    assert banks_of(layer, prompt, ctx)[:, 0].tolist() == ref.sequence_banks(prompt, rows, 3, 0.0)[::7]
    ctx.past_len = 3 + 7  # continues the prompt (whose forward started at 3)
    assert banks_of(layer, steps[i], ctx)[:, 0].tolist() == prompt_banks
    ctx.past_len = 11
    assert banks_of(layer, steps[i], ctx)[:, 0].tolist() == prompt_banks


def test_a_flattened_batch_is_refused():
    """A 2-D input would be decided as one sequence across every sequence of a packed batch."""
    layer = make_layer(3)
    for training in (True, False):
        layer.train(training)
        with pytest.raises(ValueError, match=r"must be \[batch, seq_len, features\]"):
            layer(torch.randn(12, 5, dtype=torch.float64))
    layer(torch.randn(2, 6, 5, dtype=torch.float64))
    make_layer(3, tasks=1)(torch.randn(12, 5, dtype=torch.float64))  # one bank: nothing to decide
