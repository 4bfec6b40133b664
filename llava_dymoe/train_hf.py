"""``python -m llava_dymoe.train_hf``: one DyMoE task on an HF-native host, through HF ``Trainer`` (docs/hosts.md).

The same ``--dymoe_*`` flags, trainer logic (``trainer/trainer.py``: model preparation, RSR schedule, routing
logs, ``checkpoint-N``, resume), bank checkpoint layout and sequence rules (``--dymoe_task_id``,
``--dymoe_prev_ckpt``) as ``python -m llava_dymoe.train`` on upstream LLaVA; the model, the processor and the
data path are the host's:

* ``--model_name_or_path``: an HF folder (``LlavaForConditionalGeneration`` + its processor, e.g. the tiny one of
  ``llava_dymoe.hosts.hf_tiny``); ``--host`` (default: read from the model's config) must agree with it;
* ``--data_path`` / ``--image_folder``: LLaVA's JSON format, rendered with the processor's chat template, prompt
  tokens masked from the loss (``hosts/hf_data.py``);
* ``--attn_implementation`` (default ``sdpa``) goes to ``from_pretrained``; ``--deepspeed scripts/zero2.json``
  as with upstream (the same JSON files).

Runs in ``.venv-hf`` (transformers 5.x, ``make setup-hf``). No ``from __future__ import annotations``:
``HfArgumentParser`` reads the field types.
"""
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import List, Optional

log = logging.getLogger("llava_dymoe.train_hf")


@dataclass
class HostArguments:
    model_name_or_path: str = field(default="", metadata={"help": "HF model folder (model + processor)"})
    host: Optional[str] = field(default=None, metadata={
        "help": "Host adapter (llava_dymoe/hosts: hf-llava); default: read from the model's config"})
    attn_implementation: str = field(default="sdpa", metadata={
        "help": "Passed to from_pretrained: sdpa (CPU), eager, flash_attention_2 (a GPU that has it)"})
    data_path: str = field(default="", metadata={"help": "LLaVA-format JSON training file"})
    image_folder: Optional[str] = field(default=None, metadata={"help": "Folder the samples' images are in"})
    model_max_length: int = field(default=2048, metadata={"help": "Samples are truncated to this many tokens"})


#: model types of the HF-native hosts (``llava_dymoe/hosts``), for reading the host from a model's config.json
HF_MODEL_TYPES = ("llava", "qwen2_5_vl")
UPSTREAM_HOSTS = ("llava", "upstream")


def _flag(argv: List[str], name: str) -> Optional[str]:
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def wants_hf_host(argv: List[str]) -> bool:
    """Whether ``llava-dymoe train ARGV`` is for an HF-native host: ``--host`` names one, or (no ``--host``)
    ``--model_name_or_path`` is a folder whose config.json is an HF multimodal config (``text_config`` and a model
    type of the HF hosts; upstream LLaVA trains from an LLM, or a LLaVA config with ``mm_vision_tower``)."""
    import json

    host = _flag(argv, "--host")
    if host is not None:
        return host.strip().lower() not in UPSTREAM_HOSTS
    path = _flag(argv, "--model_name_or_path") or ""
    try:
        with open(os.path.join(path, "config.json")) as f:
            cfg = json.load(f)
    except (OSError, ValueError):
        return False
    return cfg.get("model_type") in HF_MODEL_TYPES and "text_config" in cfg and "mm_vision_tower" not in cfg


def drop_upstream_host(argv: List[str]) -> List[str]:
    """``--host llava`` is the upstream entry's default: remove it before LLaVA's parser (which lacks it)."""
    out, skip = [], False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        if arg == "--host":
            skip = True
            continue
        if not arg.startswith("--host="):
            out.append(arg)
    return out


def parse(argv: Optional[List[str]] = None):
    import transformers

    from .trainer.arguments import make_training_arguments

    parser = transformers.HfArgumentParser((HostArguments, make_training_arguments(transformers.TrainingArguments)))
    host_args, train_args = parser.parse_args_into_dataclasses(args=argv)
    if train_args.deepspeed:
        _deepspeed_world(train_args)
    return host_args, train_args


def _deepspeed_world(train_args) -> None:
    """Two fixes for DeepSpeed with several ranks on CPU (transformers 5.25 + accelerate 1.16, checked 2026-12-06):

    * accelerate's ``PartialState`` under the DeepSpeed launcher on CPU reports one process (index 0 on every
      rank) although torch.distributed runs the launcher's world; its counts are set from torch.distributed;
    * ``TrainingArguments.__post_init__`` fills DeepSpeed's ``"auto"`` batch sizes before the devices are set up,
      i.e. for a world of one, and DeepSpeed then refuses the batch ("train_batch_size is not equal to
      micro_batch_per_gpu * gradient_acc_step * world_size"); the config is filled again for the real world.
    """
    import torch.distributed as dist
    from accelerate.utils import DeepSpeedPlugin
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    state = train_args.distributed_state if train_args.device is not None else None  # sets the devices up
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == train_args.world_size:
        return
    state.num_processes, state.process_index = dist.get_world_size(), dist.get_rank()
    state.local_process_index = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
    train_args.hf_deepspeed_config = HfTrainerDeepSpeedConfig(train_args.deepspeed)
    train_args.hf_deepspeed_config.trainer_config_process(train_args)
    train_args.deepspeed_plugin = DeepSpeedPlugin(hf_ds_config=train_args.hf_deepspeed_config)


def resolve_host(host_args: HostArguments):
    """The host named by ``--host``, checked against the model folder's ``config.json`` model type."""
    import json

    from .errors import ConfigError
    from .hosts import HOSTS, get_host

    with open(os.path.join(host_args.model_name_or_path, "config.json")) as f:
        model_type = json.load(f).get("model_type")
    found = [HOSTS.get(n) for n in HOSTS.names() if getattr(HOSTS.get(n), "model_type", None) == model_type]
    if not found:
        raise ConfigError(f"{host_args.model_name_or_path} is a {model_type!r} model; no HF host adapter takes it "
                          f"(hosts: {', '.join(HOSTS.names())}); upstream LLaVA trains with python -m llava_dymoe.train")
    if host_args.host and get_host(host_args.host) is not found[0]:
        raise ConfigError(f"--host {host_args.host} but {host_args.model_name_or_path} is a {model_type!r} model "
                          f"(host {found[0].name!r}); pass --host {found[0].name} or another model")
    return found[0]


def refuse_anchor_selectors(train_args, host_name: str) -> None:
    """The task selectors that fit per-task anchors (``hide_selector``, ``prism_selector``, ``anchored_keys`` =
    ``dymoe_plus``) read LLaVA's vision tower and input embeddings (``integration/task_features.py``), which are not
    ported to the HF-native hosts yet: refuse them before any model is loaded, naming what runs here instead."""
    from .config import FITS_ANCHORS
    from .errors import ConfigError
    from .trainer.arguments import NO_METHOD
    from .trainer.prepare import resolve_config

    method = getattr(train_args, "dymoe_method", NO_METHOD)
    if method == NO_METHOD:
        return
    cfg = resolve_config(train_args, None)  # the recipe and its flags, as prepare_model builds them
    if cfg.task_selector in FITS_ANCHORS:
        raise ConfigError(f"--dymoe_method {method} (task_selector={cfg.task_selector!r}) fits per-task image and text "
                         f"anchors from LLaVA's vision tower and input embeddings, which the HF-native host "
                         f"{host_name!r} does not provide yet (integration/task_features.py reads upstream LLaVA's "
                         "model only). On this host use --dymoe_method key_selector (the fitted keys alone choose the "
                         "bank; dymoe_plus before anchored_keys) or train with upstream LLaVA (cli run --host llava, or "
                         "python -m llava_dymoe.train)")


def train(host_args: HostArguments, train_args):
    """Train one task and write its checkpoint into ``--output_dir``; returns the trainer (its model trained)."""
    import transformers

    from .trainer.saving import save_dymoe_task
    from .trainer.trainer import make_dymoe_trainer

    host = resolve_host(host_args)
    refuse_anchor_selectors(train_args, getattr(host, "name", None) or host_args.host)
    train_args.remove_unused_columns = False
    model = host.load_model(host_args.model_name_or_path, attn_implementation=host_args.attn_implementation)
    processor = host.load_processor(host_args.model_name_or_path)
    dataset = host.dataset(host_args.data_path, processor, host_args.image_folder, host_args.model_max_length)
    trainer_cls = make_dymoe_trainer(transformers.Trainer)
    trainer = trainer_cls(model=model, args=train_args, train_dataset=dataset,
                          data_collator=host.collator(processor), processing_class=processor)
    trainer.train(resume_from_checkpoint=train_args.resume_from_checkpoint)
    if trainer.is_deepspeed_enabled:
        log.info("trained under DeepSpeed ZeRO stage %d on %d rank(s)",
                 trainer.model_wrapped.zero_optimization_stage(), train_args.world_size)
    if trainer.dymoe is None:  # --dymoe_method none: plain HF fine-tuning
        trainer.save_model(train_args.output_dir)
    else:
        save_dymoe_task(trainer, train_args.output_dir, host.gather())
    return trainer


def main(argv: Optional[List[str]] = None) -> int:
    from llava_dymoe.integration.process_hygiene import die_with_parent_if_asked

    die_with_parent_if_asked()  # started by `cli run`: end with it
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    host_args, train_args = parse(argv)
    train(host_args, train_args)
    log.info("task checkpoint: %s", train_args.output_dir)
    return 0


if __name__ == "__main__":
    from llava_dymoe.errors import run_refusing

    raise SystemExit(run_refusing(main))
