"""A fork's trainables on the causal-LM itself, outside ``get_model()`` (MCITlib's DISCO and HiDe keep
``global_text_feature``/``global_image_feature`` ParameterLists there; their ``non_lora_trainables.bin`` holds
``global_text_feature.1``).  Found by the fork matrix of issue 28: task 2 was refused ("weights the model
lacks")."""
import pytest
import torch
from torch import nn

from llava_dymoe.integration.checkpoint import CheckpointError, load_non_lora


class _Inner(nn.Module):
    def __init__(self):
        super().__init__()
        self.mm_projector = nn.Linear(3, 2)


class _ForkLM(nn.Module):
    def __init__(self):
        super().__init__()
        self.model = _Inner()
        self.global_text_feature = nn.ParameterList([nn.Parameter(torch.zeros(4)) for _ in range(3)])

    def get_model(self):
        return self.model


def test_a_forks_top_level_trainables_load_with_the_projector():
    model, src = _ForkLM(), _ForkLM()
    torch.manual_seed(0)
    for p in src.parameters():
        p.data.normal_()
    state = {"model.mm_projector.weight": src.model.mm_projector.weight.detach().clone(),
             "model.mm_projector.bias": src.model.mm_projector.bias.detach().clone(),
             "global_text_feature.1": src.global_text_feature[1].detach().clone()}
    load_non_lora(model, state, "ckpt")
    assert torch.equal(model.model.mm_projector.weight, src.model.mm_projector.weight)
    assert torch.equal(model.global_text_feature[1], src.global_text_feature[1])
    assert torch.equal(model.global_text_feature[0], torch.zeros(4))  # not in the file: untouched


def test_a_key_neither_the_model_nor_its_inner_model_has_is_still_refused():
    with pytest.raises(CheckpointError, match=r"weights the model lacks: \['global_image_feature.1'\]"):
        load_non_lora(_ForkLM(), {"global_image_feature.1": torch.zeros(4)}, "ckpt")
