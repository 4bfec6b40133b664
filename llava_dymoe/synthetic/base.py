"""The base-model stage: a tiny LLaVA that already sees, before continual tuning starts.

The analogue of LLaVA-1.5's starting point (a pretrained LLM plus a stage-1 projector): the
tiny LLaVA (:mod:`llava_dymoe.tiny`, CLIP patch = one grid cell of the image world) is FULLY
trained with upstream ``llava.train.train.train()`` (``--lora_enable False``; projector and
LLM trained, CLIP frozen as always in LLaVA) on the base mixture of
:data:`~llava_dymoe.synthetic.tasks.BASE_TASKS`: different questions over the same image world
that use every answer word of the continual suite.  The result is exported as

* ``OUT/llm``: a plain ``LlamaForCausalLM`` + tokenizer, a Vicuna-like ``--model_name_or_path``
  (also what the DyMoE eval loader takes as ``--model-base``);
* ``OUT/mm_projector.bin``: the trained projector, keys ``model.mm_projector.*``, for
  ``--pretrain_mm_mlp_adapter``;
* ``OUT/clip``: the vision tower (``--vision_tower``; the tiny CLIP with stronger position
  embeddings, see :func:`scale_clip_positions`); ``OUT/llava-base``: the full LLaVA
  checkpoint as upstream saved it (tokenizer added, loadable with ``load_pretrained_model``);
* ``OUT/base.json``: the request (seed, sizes, steps, data) and the results (held-out accuracy
  per base task, wall times).  A later call with the same request reuses the directory.

``python -m llava_dymoe.synthetic.base OUT_DIR [--seed N] [--steps N] [--hidden-size N] ...``
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import threading
import time
from dataclasses import asdict, dataclass, replace
from typing import Callable, Dict, Optional

from .tasks import MIX_WEIGHTS  # noqa: F401 (re-exported: the default base mixture's weights)
from .world import GRID
from .writer import IMAGE_ROOT, TaskFiles, write_task

FORMAT = 2  # 2: the mixture gained letterbox
META = "base.json"
#: Written when a build starts training and removed when ``base.json`` is written: the request of the
#: build that may have left ``checkpoint-*`` folders behind (only the same request resumes from them).
PARTIAL = "base.partial.json"
TOKENIZER_FILES = ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json")

# The in-process parts of a base build (tiny model, exports, held-out evaluation) touch process-wide
# state: transformers' lazily resolved names (two threads resolving CLIPImageProcessor at once failed,
# 2026-12-02) and the scoped eval patches (one build's revert would pull them from under another's
# evaluation).  Builds that run in threads (study.prepare) take turns there; only their training
# subprocesses run side by side.
_IN_PROCESS_TURN = threading.Lock()


def default_sizes(image_size: int = 64, patches: int = GRID, **overrides):
    """Tiny LLaVA sizes for a suite: d=128, 2 layers, ``patches`` CLIP patches per image side (the default
    suite: 4, one grid cell per patch; ``coin_shaped``: 16)."""
    from llava_dymoe.tiny import TinySizes

    values = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                  image_size=image_size, patch_size=image_size // patches)
    values.update(overrides)
    return TinySizes(**values)


#: Learning rate of the base stage at the default width; wider LLMs get it scaled as 1/d (``base_learning_rate``).
BASE_LR = 2e-3
BASE_LR_WIDTH = 128


def base_learning_rate(hidden_size: int) -> float:
    """Base-stage learning rate for an LLM of width ``hidden_size``: 2e-3 up to d=128, ``2e-3 * 128 / d`` above.

    Our choice for the embedded base model (the paper has no such stage: LLaVA-1.5 starts from a
    pretrained LLM).  Measured at d=256 with 2e-3 (2000 steps of batch 32): the loss stalled at 0.42
    (d=64 and d=128 reach 0.25) and the base read single letters 38 % of the time (d=128: 100 %), so
    the width study would have compared methods on a base that sees less.  The continual recipe is
    not scaled with d.
    """
    return BASE_LR * min(1.0, BASE_LR_WIDTH / hidden_size)


@dataclass(frozen=True)
class BaseConfig:
    """Everything that determines the base model (the cache key)."""

    seed: int = 0
    steps: int = 4000            # 2000 before letterbox joined the mixture (see MIX_WEIGHTS)
    batch_size: int = 32
    learning_rate: float = BASE_LR  # base_learning_rate(d) for other widths
    n_train: int = 2000          # per unit of MIX_WEIGHTS (a task of weight 4 gets 8000 samples)
    n_test: int = 50             # per base task, held out
    image_size: int = 64
    clip_position_scale: float = 8.0
    mixture: str = "synthetic"   # the suite whose base mixture and CLIP geometry to use (llava_dymoe.synthetic.suites)


@dataclass(frozen=True)
class BaseModel:
    """Paths of a built base model and its ``base.json`` record."""

    root: str
    llm: str
    projector: str
    clip: str
    llava: str
    data: str
    meta: dict

    @property
    def accuracy(self) -> Dict[str, float]:
        return {k: v["score"] for k, v in self.meta.get("results", {}).get("accuracy", {}).items()}


def write_base_mixture(root: str, seed: int, n_train: int, n_test: int, image_size: int,
                       mixture_of: str = "synthetic") -> str:
    """Write each base task of suite ``mixture_of`` (``n_train * weight`` training samples, ``n_test`` held
    out; weights: ``MIX_WEIGHTS`` for the default suite) and ``mixture.json``, the shuffled union of the
    training samples."""
    from .suites import get_suite

    spec = get_suite(mixture_of)
    mixture = []
    for task in spec.base_tasks:
        files = write_task(root, task, seed, n_train * spec.mix_weights[task.name], n_test, image_size)
        with open(os.path.join(root, files.train_json)) as f:
            mixture += json.load(f)
    random.Random(f"llava-dymoe-base-mixture/{seed}").shuffle(mixture)
    path = os.path.join(root, "mixture.json")
    with open(path, "w") as f:
        json.dump(mixture, f, indent=1)
    return path


def scale_clip_positions(src: str, dst: str, factor: float) -> None:
    """Copy the CLIP at ``src`` to ``dst`` with its position embeddings multiplied by ``factor``.

    The tiny CLIP is random and frozen.  Its position embeddings (std 0.02) are as small as one
    weight of the patch projection, so after CLIP's pre-LayerNorm only about 0.6% of the
    patch-feature variance says where a patch is (measured on the base scenes; a linear probe
    still reads it).  A pretrained CLIP's features carry position much more plainly; scaling by
    8 gives position a clearly readable share while colour, shape and glyph stay linearly
    decodable at 100%, so the base stage can learn where things are within its budget.
    """
    import torch
    from transformers import CLIPImageProcessor, CLIPVisionModel

    model = CLIPVisionModel.from_pretrained(src)
    with torch.no_grad():
        model.vision_model.embeddings.position_embedding.weight.mul_(factor)
    model.save_pretrained(dst, safe_serialization=True)
    CLIPImageProcessor.from_pretrained(src).save_pretrained(dst)


def _train_code(seed: int) -> str:
    # upstream train() builds the projector before the Trainer seeds anything: seed first
    # (D1, patches/vision_check.py: Pillow's presence checked once, not per image; a speed-up only)
    return (f"from transformers import set_seed; set_seed({seed}); from llava.train.train import train; "
            "from llava_dymoe.patches.vision_check import vision_check_cache; import logging; "
            "logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')\n"
            "with vision_check_cache(): train()")


def export_base(llava_dir: str, tiny_llm_dir: str, llm_dir: str, projector_path: str) -> None:
    """Split upstream's full LLaVA checkpoint into a plain Llama dir and ``mm_projector.bin``."""
    import torch
    from safetensors.torch import load_file
    from transformers import LlamaConfig, LlamaForCausalLM

    state = load_file(os.path.join(llava_dir, "model.safetensors"))
    projector = {k: v for k, v in state.items() if k.startswith("model.mm_projector.")}
    llm_state = {k: v for k, v in state.items()
                 if not k.startswith(("model.mm_projector.", "model.vision_tower."))}
    if not projector:
        raise RuntimeError(f"{llava_dir}: no model.mm_projector.* weights in the checkpoint")
    llama_cfg = LlamaConfig.from_pretrained(tiny_llm_dir)  # the tiny LLM: train() adds no tokens here
    model = LlamaForCausalLM(llama_cfg)
    model.load_state_dict(llm_state, strict=True)
    model.save_pretrained(llm_dir, safe_serialization=True)
    for name in TOKENIZER_FILES:
        shutil.copy(os.path.join(tiny_llm_dir, name), os.path.join(llm_dir, name))
    torch.save(projector, projector_path)


def base_eval_tasks(data_root: str, mixture_of: str = "synthetic"):
    """The held-out base-mixture tasks as :class:`~llava_dymoe.synthetic.evaluate.EvalTask`."""
    from .evaluate import EvalTask
    from .suites import get_suite

    out = []
    for t in get_suite(mixture_of).base_tasks:
        f = TaskFiles.for_task(t.name)
        out.append(EvalTask(t.name, os.path.join(data_root, f.question_file),
                            os.path.join(data_root, f.reference_file), t.scorer, t.max_new_tokens))
    return out


def base_request(config: BaseConfig, sizes, evaluate: bool) -> dict:
    """What ``base.json`` records as the request (the cache key).  The default mixture's request has no
    ``mixture`` field, so base models built before the CoIN-shaped mixture existed are reused."""
    from .suites import get_suite

    request_config = asdict(config)
    if config.mixture == "synthetic":
        del request_config["mixture"]
    return {"format": FORMAT, "config": request_config, "sizes": asdict(sizes),
            "mix_weights": dict(get_suite(config.mixture).mix_weights), "evaluated": evaluate}


def base_paths(out_dir: str) -> Dict[str, str]:
    """The files of a base model folder (the path fields of :class:`BaseModel`)."""
    root = os.path.abspath(out_dir)
    return dict(root=root, llm=os.path.join(root, "llm"), projector=os.path.join(root, "mm_projector.bin"),
                clip=os.path.join(root, "clip"), llava=os.path.join(root, "llava-base"),
                data=os.path.join(root, "data"))


def load_base_model(out_dir: str) -> Optional[BaseModel]:
    """The base model finished under ``out_dir`` (its ``base.json`` exists), whatever its request; else None."""
    meta_path = os.path.join(out_dir, META)
    if not os.path.isfile(meta_path):
        return None
    with open(meta_path) as f:
        return BaseModel(meta=json.load(f), **base_paths(out_dir))


def resumable_checkpoint(out_dir: str, request: dict) -> Optional[str]:
    """The last ``checkpoint-N`` folder an interrupted build of the same ``request`` left under ``out_dir``, or None."""
    paths = base_paths(out_dir)
    partial = os.path.join(paths["root"], PARTIAL)
    if not os.path.isfile(partial):
        return None
    try:
        with open(partial) as f:
            if json.load(f) != request:
                return None
    except (OSError, ValueError):
        return None
    steps = []
    for name in os.listdir(paths["llava"]) if os.path.isdir(paths["llava"]) else ():
        folder = os.path.join(paths["llava"], name)
        if name.startswith("checkpoint-") and name[11:].isdigit() and \
                os.path.isfile(os.path.join(folder, "trainer_state.json")):
            steps.append(int(name[11:]))
    return os.path.join(paths["llava"], f"checkpoint-{max(steps)}") if steps else None


def build_base_model(out_dir: str, config: Optional[BaseConfig] = None, sizes=None, evaluate: bool = True,
                     overwrite: bool = False, threads: int = 1, log: Callable[[str], None] = print,
                     progress: bool = True, data_workers: int = 0, checkpoint_every: int = 0) -> BaseModel:
    """Build (or reuse, when ``base.json`` records the same request) the base model under ``out_dir``.

    ``threads`` is the training process's ``OMP_NUM_THREADS``.  One thread is the default: the
    model is tiny, the data pipeline is single-threaded, and on a shared 2-core machine two
    OpenMP threads competing with another process made steps about 10x slower (measured).
    ``data_workers`` is upstream's ``--dataloader_num_workers`` (the images are prepared in that many
    worker processes while the model trains; the data order is the sampler's, unchanged).
    ``progress`` shows a bar that follows the training log.
    ``checkpoint_every`` > 0 saves a training checkpoint every that many steps (the last one kept), so an
    interrupted build of the same request resumes from it (upstream ``train()`` resumes when its output
    folder has a ``checkpoint-*``; the data and the tiny model are rewritten identically from the seed).
    The checkpoints are removed once the build finishes; ``overwrite`` discards them.
    """
    from llava_dymoe.integration.llava_args import llava_train_argv, run_python
    from llava_dymoe.integration.log_progress import follow_log
    from llava_dymoe.tiny import build_tiny_llava

    from .suites import get_suite

    config = config or BaseConfig()
    spec = get_suite(config.mixture)
    sizes = sizes or default_sizes(config.image_size, spec.patches)
    if sizes.image_size != config.image_size or sizes.patch_size * spec.patches != config.image_size:
        cells = " (one grid cell per patch)" if spec.patches == GRID else ""
        raise ValueError(f"suite {spec.name}: the CLIP must see {spec.patches}x{spec.patches} patches{cells}: "
                         f"image_size {config.image_size} needs TinySizes(image_size={config.image_size}, "
                         f"patch_size={config.image_size // spec.patches})")
    root = os.path.abspath(out_dir)
    paths = base_paths(root)
    request = base_request(config, sizes, evaluate)
    meta_path = os.path.join(root, META)
    existing = None if overwrite else load_base_model(root)
    if existing is not None and existing.meta.get("request") == request:
        log(f"base model: reusing {root}")
        return existing
    if os.path.exists(meta_path):
        os.remove(meta_path)
    os.makedirs(root, exist_ok=True)
    resume_from = None if overwrite else resumable_checkpoint(root, request)
    times = {}

    with _IN_PROCESS_TURN:
        t0 = time.time()
        tiny = build_tiny_llava(os.path.join(root, "tiny"), seed=config.seed, sizes=sizes, overwrite=True)
        shutil.rmtree(paths["clip"], ignore_errors=True)
        scale_clip_positions(tiny.clip, paths["clip"], config.clip_position_scale)
        shutil.rmtree(paths["data"], ignore_errors=True)
        mixture = write_base_mixture(paths["data"], config.seed, config.n_train, config.n_test, config.image_size,
                                     config.mixture)
        times["build_and_data"] = time.time() - t0

    log(f"base model: full training with upstream train(), {config.steps} steps of batch {config.batch_size} "
        f"on {config.n_train * sum(spec.mix_weights.values())} samples (log: {paths['llava']}.log)")
    t0 = time.time()
    if resume_from:
        log(f"base model: resuming the interrupted build from {os.path.basename(resume_from)}")
    else:
        shutil.rmtree(paths["llava"], ignore_errors=True)
    with open(os.path.join(root, PARTIAL), "w") as f:
        json.dump(request, f, indent=2)
    saving = {"save_strategy": "steps", "save_steps": checkpoint_every, "save_total_limit": 1} \
        if checkpoint_every > 0 else {"save_strategy": "no"}
    argv = llava_train_argv(tiny.llm, paths["clip"], mixture, os.path.join(paths["data"], IMAGE_ROOT), paths["llava"],
                            lora=False, max_steps=config.steps, overrides={
                                "learning_rate": config.learning_rate, "seed": config.seed,
                                "per_device_train_batch_size": config.batch_size, "gradient_checkpointing": False,
                                "logging_steps": max(1, config.steps // 50), **saving,
                                "dataloader_num_workers": data_workers, **spec.training})
    with follow_log(paths["llava"] + ".log", config.steps, f"base model d={sizes.hidden_size}", enabled=progress):
        # transformers 4.37 reads the checkpoint's RNG state (numpy arrays) with torch.load's default, which
        # torch >= 2.6 made weights_only=True: it fails.  The checkpoint is this build's own, so the resumed
        # process lifts that default (loads that pass weights_only keep it).
        trust = {"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"} if resume_from else {}
        run_python(_train_code(config.seed), argv, log_path=paths["llava"] + ".log", log_mode="a" if resume_from else "w",
                   env={"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), **trust})
    times["train"] = time.time() - t0
    for name in os.listdir(paths["llava"]):
        if name.startswith("checkpoint-"):
            shutil.rmtree(os.path.join(paths["llava"], name))
    for name in TOKENIZER_FILES:  # upstream saves no tokenizer for a full fine-tune; load_pretrained_model needs one
        shutil.copy(os.path.join(tiny.llm, name), os.path.join(paths["llava"], name))
    shutil.rmtree(paths["llm"], ignore_errors=True)
    with _IN_PROCESS_TURN:
        export_base(paths["llava"], tiny.llm, paths["llm"], paths["projector"])
    state = json.load(open(os.path.join(paths["llava"], "trainer_state.json")))
    losses = [h["loss"] for h in state["log_history"] if "loss" in h]
    results = {"final_loss": losses[-1] if losses else None, "steps": state["global_step"], "accuracy": {}}

    if evaluate:
        from .evaluate import evaluate as run_eval

        with _IN_PROCESS_TURN:
            t0 = time.time()
            results["accuracy"] = run_eval(paths["llava"], None, base_eval_tasks(paths["data"], config.mixture),
                                           os.path.join(paths["data"], IMAGE_ROOT),
                                           answers_dir=os.path.join(root, "eval"))
            times["eval"] = time.time() - t0
    results["wall_s"] = {k: round(v, 1) for k, v in times.items()}
    results["train_threads"] = threads
    if resume_from:
        results["resumed_from"] = os.path.basename(resume_from)
    meta = {"request": request, "results": results}
    with open(meta_path, "w") as f:  # written last: an interrupted build is never reused
        json.dump(meta, f, indent=2)
    os.remove(os.path.join(root, PARTIAL))
    return BaseModel(meta=meta, **paths)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m llava_dymoe.synthetic.base", description=__doc__.split("\n")[0])
    p.add_argument("out_dir")
    defaults = BaseConfig()
    for name, value in asdict(defaults).items():
        if name == "learning_rate":  # depends on the width: resolved after parsing
            p.add_argument("--learning-rate", type=float, default=None, dest=name,
                           help="default: base_learning_rate(hidden size), 2e-3 up to d=128, 2e-3*128/d above")
            continue
        if name == "image_size":  # depends on the mixture: resolved after parsing
            p.add_argument("--image-size", type=int, default=None, dest=name,
                           help="default: the mixture's suite's (64 for synthetic, 96 for coin_shaped)")
            continue
        if name == "mixture":
            from .suites import suite_names

            p.add_argument("--mixture", default=value, choices=suite_names(),
                           help="the suite whose base mixture and CLIP geometry to train (default synthetic)")
            continue
        p.add_argument("--" + name.replace("_", "-"), type=type(value), default=value, dest=name)
    for name in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"):
        p.add_argument("--" + name.replace("_", "-"), type=int, default=None, dest="size_" + name)
    p.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the training process (default 1)")
    p.add_argument("--data-workers", type=int, default=0,
                   help="upstream --dataloader_num_workers of the training (default 0: in the training process)")
    p.add_argument("--checkpoint-every", type=int, default=0,
                   help="save a training checkpoint every N steps so that an interrupted build resumes (default 0: none)")
    p.add_argument("--no-eval", action="store_true", help="skip the held-out accuracy of the base mixture")
    p.add_argument("--overwrite", action="store_true", help="rebuild even if OUT_DIR matches")
    a = p.parse_args(argv)
    from .suites import get_suite

    spec = get_suite(a.mixture)
    if a.image_size is None:
        a.image_size = spec.image_size
    sizes = default_sizes(a.image_size, spec.patches, **{k[5:]: v for k, v in vars(a).items()
                                            if k.startswith("size_") and v is not None})
    if a.learning_rate is None:
        a.learning_rate = base_learning_rate(sizes.hidden_size)
    elif not a.learning_rate > 0:
        p.error(f"--learning-rate must be a positive number, got {a.learning_rate!r}; omit it for "
                f"base_learning_rate(d) = {base_learning_rate(sizes.hidden_size):g} at d={sizes.hidden_size}")
    config = BaseConfig(**{k: getattr(a, k) for k in asdict(defaults)})
    base = build_base_model(a.out_dir, config, sizes, evaluate=not a.no_eval, overwrite=a.overwrite,
                            threads=a.threads, data_workers=a.data_workers, checkpoint_every=a.checkpoint_every)
    print(json.dumps({"llm": base.llm, "projector": base.projector, "clip": base.clip,
                      "accuracy": base.accuracy, **base.meta["results"].get("wall_s", {})}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
