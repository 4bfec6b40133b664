"""``python precision_probe.py <llava_dymoe.train argv>``: the DyMoE training entry with two probes, for the
mixed-precision tests (a helper, not a test module).  Results go to the folder ``$PRECISION_PROBE_DIR``:

* ``routing.json``: every router call of the run recomputed outside autocast in fp32 from the same inputs;
  ``calls``, ``unequal`` (calls whose logits differ from that recomputation by any bit), the dtypes seen and
  whether autocast was on (``autocast_calls``), and the banks' and base weights' dtypes in the layers;
* ``in_memory.pt`` (written when training ends, before LLaVA's save): the trained model's last-position
  logits, in eval mode, for one fixed question and image (``QUESTION``, ``IMAGE``), and its bank state.
"""
import json
import os

import torch
import transformers
from transformers import TrainerCallback

import llava_dymoe.core.layer as layer_mod

QUESTION = "What color is the square in the image?"
IMAGE = ((40, 32), (220, 30, 30))  # size, RGB colour

_seen = {"calls": 0, "unequal": 0, "autocast_calls": 0, "logit_dtypes": [], "input_dtypes": [],
         "bank_dtypes": [], "base_dtypes": []}
_real_logits = layer_mod.cosine_logits_parts


def _add(key, value):
    if value not in _seen[key]:
        _seen[key].append(value)


def _checked_logits(x, weights, scale=1.0):
    z = _real_logits(x, weights, scale)
    with torch.no_grad(), torch.autocast(device_type=x.device.type, enabled=False):
        ref = _real_logits(x.detach().float(), [w.detach().float() for w in weights], scale)
    _seen["calls"] += 1
    _seen["unequal"] += int(not torch.equal(z.detach(), ref))
    _seen["autocast_calls"] += int(torch.is_autocast_enabled(x.device.type))
    _add("logit_dtypes", str(z.dtype))
    _add("input_dtypes", str(x.dtype))
    return z


def fixed_inputs(tokenizer, model):
    """(input_ids, images) of the probe question; the images in the vision tower's dtype."""
    from PIL import Image
    from llava.mm_utils import process_images
    from llava_dymoe.integration.tiny_model import vicuna_prompt_ids

    size, colour = IMAGE
    pixels = process_images([Image.new("RGB", size, colour)], model.get_vision_tower().image_processor, model.config)
    return vicuna_prompt_ids(tokenizer, QUESTION), pixels.to(model.get_vision_tower().dtype)


def last_logits(model, tokenizer):
    ids, pixels = fixed_inputs(tokenizer, model)
    with torch.inference_mode():
        return model(input_ids=ids, images=pixels, use_cache=False).logits[0, -1].detach().clone()


class _Probe(TrainerCallback):
    def on_train_end(self, args, state, control, model=None, tokenizer=None, **kwargs):
        from llava_dymoe.integration.inject import bank_state

        out = os.environ["PRECISION_PROBE_DIR"]
        for _, layer in layer_mod.dymoe_layers(model):
            for p in layer.dymoe_parameters():
                _add("bank_dtypes", str(p.dtype))
            _add("base_dtypes", str(layer.weight.dtype))
        was_training = model.training
        model.eval()
        try:
            logits = last_logits(model, tokenizer)
        finally:
            model.train(was_training)
        if args.process_index == 0:
            os.makedirs(out, exist_ok=True)
            torch.save({"logits": logits, "banks": bank_state(model)}, os.path.join(out, "in_memory.pt"))
            with open(os.path.join(out, "routing.json"), "w") as f:
                json.dump(_seen, f, indent=1)


def install() -> None:
    """Wrap the layers' router and add the callback to every Trainer (in the training process only: importing
    this module for ``last_logits`` patches nothing)."""
    layer_mod.cosine_logits_parts = _checked_logits
    init = transformers.Trainer.__init__

    def init_with_probe(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.add_callback(_Probe())

    transformers.Trainer.__init__ = init_with_probe


if __name__ == "__main__":
    from llava_dymoe.errors import run_refusing
    from llava_dymoe.train import main

    install()
    run_refusing(main)
