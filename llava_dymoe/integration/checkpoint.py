"""Per-task DyMoE checkpoint directories: write once, read many.

A finished task's directory is self-contained (llava-integration.md §6.3 item 7, style.md §6.9):

* ``config.json``: the LLaVA config plus a ``"dymoe"`` block (``DyMoEConfig`` with ``num_tasks``,
  the method, the task id, the ``llava_dymoe`` version, the host: docs/hosts.md);
* ``dymoe_experts.safetensors``: every task bank (folded state, ``<module>.<bank>.t<k>`` keys);
* ``non_lora_trainables.bin``: the projector and any other trained non-expert weights, in
  upstream key style (``model.mm_projector.0.weight``), so ``--pretrain_mm_mlp_adapter`` and
  upstream loaders accept it;
* ``dymoe_args.json``: this run's ``--dymoe_*`` arguments;
* optional extra files (``routing_stats.json`` with ``--dymoe_log_routing True``);
* ``dymoe_task.json``: the completion marker, written last, with a SHA-256 of every file above.

A directory with a completion marker is never written again (``assert_writable``); later tasks
only read it.  No ``mm_projector.bin`` is written at the top level: with a name containing
"llava" and a ``--model-base``, unpatched upstream loaders would take their projector-only branch
and silently evaluate a model without experts (style.md §6.9).
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Callable, Dict, Mapping, Optional, Union

import torch
from torch import Tensor, nn

from .. import __version__
from ..config import DyMoEConfig
from ..errors import DyMoEError

CONFIG = "config.json"
EXPERTS = "dymoe_experts.safetensors"
NON_LORA = "non_lora_trainables.bin"
ARGS = "dymoe_args.json"
MARKER = "dymoe_task.json"
CHECKPOINT_FILES = (CONFIG, EXPERTS, NON_LORA, ARGS)


class CheckpointError(DyMoEError):
    """A DyMoE checkpoint is missing, incomplete or does not fit the requested run."""


def sha256_file(path: str) -> str:
    """Hex SHA-256 of a file's bytes (streamed)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_config_json(path: str) -> Dict[str, Any]:
    with open(os.path.join(path, CONFIG)) as f:
        return json.load(f)


def is_dymoe_checkpoint(model_path: str) -> bool:
    """True when ``model_path/config.json`` carries a ``"dymoe"`` block (detection by content, not name)."""
    try:
        return isinstance(read_config_json(model_path).get("dymoe"), dict)
    except (OSError, ValueError):
        return False


def is_finished(path: str) -> bool:
    return os.path.isfile(os.path.join(path, MARKER))


def verify(path: str) -> Dict[str, Any]:
    """Check a finished checkpoint: marker present and every file's hash matches. Returns the marker."""
    marker_path = os.path.join(path, MARKER)
    if not os.path.isfile(marker_path):
        raise CheckpointError(f"{path} is not a finished DyMoE task checkpoint (no {MARKER}): the task did "
                              "not finish, or this is not a DyMoE output directory. Re-run that task.")
    try:
        with open(marker_path) as f:
            marker = json.load(f)
        if not isinstance(marker, dict) or not isinstance(marker.get("sha256", {}), dict):
            raise ValueError("not a JSON object with a 'sha256' table")
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(f"{path}: its {MARKER} is corrupt ({e}); the checkpoint cannot be trusted: copy it "
                              "again from where it was trained, or train that task again") from None
    for name, digest in marker.get("sha256", {}).items():
        fp = os.path.join(path, name)
        if not os.path.isfile(fp) or sha256_file(fp) != digest:
            raise CheckpointError(f"{fp} is missing or was modified after the task finished; the checkpoint "
                                  "cannot be trusted. Restore it or re-run that task into a new --output_dir.")
    return marker


def assert_writable(output_dir: str, prev_ckpt: Optional[str] = None) -> None:
    """Refuse to train into a finished task's directory (or into the previous task's)."""
    if prev_ckpt and os.path.realpath(output_dir) == os.path.realpath(prev_ckpt):
        raise CheckpointError(f"--output_dir and --dymoe_prev_ckpt are the same directory ({output_dir}); each "
                              "task needs its own output directory and the previous one is read-only")
    if is_finished(output_dir):
        raise CheckpointError(f"--output_dir {output_dir} already holds a finished DyMoE task checkpoint "
                              f"({MARKER}); it is never overwritten. Choose a new --output_dir.")


def load_task_state(path: str) -> Dict[str, Any]:
    """Read a finished checkpoint: ``{"config", "dymoe", "experts", "non_lora", "marker"}``."""
    from safetensors.torch import load_file

    marker = verify(path)
    cfg_json = read_config_json(path)
    block = cfg_json.get("dymoe")
    if not isinstance(block, dict):
        raise CheckpointError(f"{path}/{CONFIG} has no 'dymoe' block")
    non_lora = torch.load(os.path.join(path, NON_LORA), map_location="cpu", weights_only=True)
    return {"config": DyMoEConfig.from_dict(block["config"]), "dymoe": block,
            "experts": load_file(os.path.join(path, EXPERTS)), "non_lora": non_lora, "marker": marker}


def check_compatible(saved: DyMoEConfig, requested: DyMoEConfig, where: str) -> None:
    """Architecture fields must agree between a previous task's checkpoint and this run's flags."""
    for name, flag in (("experts_per_task", "--dymoe_experts_per_task"), ("expert_rank", "--dymoe_expert_rank"),
                       ("target_modules", "--dymoe_target_modules"), ("lora_alpha", "--dymoe_lora_alpha"),
                       ("router", "--dymoe_router"), ("expand", "--dymoe_expand")):
        a, b = getattr(saved, name), getattr(requested, name)
        if a != b:
            raise CheckpointError(f"{where} was trained with {name}={a!r} but this run asks for {b!r}. Banks of "
                                  f"one model share one layout: pass {flag} {a if not isinstance(a, list) else ','.join(a)}"
                                  f" (or start a new sequence without --dymoe_prev_ckpt).")


def strip_upstream_prefixes(state: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    """Upstream loaders' key normalisation: drop ``base_model.`` then ``model.`` prefixes once."""
    out = {}
    for k, v in state.items():
        k = k[len("base_model."):] if k.startswith("base_model.") else k
        k = k[len("model."):] if k.startswith("model.") else k
        out[k] = v
    return out


def load_non_lora(model: nn.Module, state: Mapping[str, Tensor], where: str) -> None:
    """Load ``non_lora_trainables`` into ``model`` (LlavaLlamaForCausalLM); every key must land.  Keys are looked
    up in ``model.get_model()`` (the projector), then in the causal-LM itself: a fork may keep trainables there
    (MCITlib's DISCO and HiDe: ``global_text_feature.N``), which their own trainers save in the same file."""
    stripped = strip_upstream_prefixes(state)
    target = model.get_model() if hasattr(model, "get_model") else model
    own = dict(target.named_parameters())
    if target is not model:
        for k, p in model.named_parameters():
            own.setdefault(k, p)
    unknown = sorted(k for k in stripped if k not in own)
    if unknown:
        raise CheckpointError(f"{where}/{NON_LORA} has weights the model lacks: {unknown[:5]}; was it trained "
                              "with another projector type or base model?")
    params = [own[k] for k in stripped]
    ctx = _gathered(params)
    with ctx, torch.no_grad():
        for k, v in stripped.items():
            own[k].copy_(v.to(dtype=own[k].dtype, device=own[k].device))


def _gathered(params):
    """ZeRO-3: gather partitioned parameters so rank 0 may overwrite them; else a null context."""
    import contextlib

    if any(hasattr(p, "ds_id") for p in params):
        import deepspeed

        return deepspeed.zero.GatheredParameters(params, modifier_rank=0)
    return contextlib.nullcontext()


def write_task_checkpoint(output_dir: str, *, model_config, dymoe_cfg: DyMoEConfig, method: str, task_id: int,
                          experts: Mapping[str, Tensor], non_lora: Mapping[str, Tensor],
                          run_args: Mapping[str, Any], prev_ckpt: Optional[str] = None,
                          extra_files: Optional[Mapping[str, Union[str, bytes]]] = None,
                          finished: bool = True, base_model: Optional[Mapping[str, Any]] = None,
                          host: str = "llava") -> str:
    """Write one finished task's directory (rank 0 only); the marker goes last.

    ``finished=False`` writes the same files without the marker: an intermediate checkpoint
    (``checkpoint-N`` of ``--save_strategy steps``), which resumes the task but is not a finished one.
    ``base_model``: the base LLM's fingerprint (``base_model.base_fingerprint``), recorded in the block.
    ``host``: the host adapter's name (``llava_dymoe/hosts``), recorded in the block; a later task or an
    evaluation on another host is refused (``hosts.check_host``).

    ``extra_files`` maps plain file names (no directory part, none of the standard names) to text or
    bytes written next to the standard files, e.g. ``routing_stats.json``; their hashes are in the marker.
    """
    from safetensors.torch import save_file

    extra = dict(extra_files or {})
    for name in extra:
        if not name or os.path.basename(name) != name or name in (*CHECKPOINT_FILES, MARKER, MARKER + ".tmp"):
            raise CheckpointError(f"write_task_checkpoint: extra file name {name!r} must be a plain file name "
                                  f"other than {', '.join((*CHECKPOINT_FILES, MARKER))}")
    assert_writable(output_dir, prev_ckpt)
    os.makedirs(output_dir, exist_ok=True)
    block = {"config": dymoe_cfg.to_dict(), "method": method, "task_id": int(task_id),
             "prev_ckpt": os.path.abspath(prev_ckpt) if prev_ckpt else None, "llava_dymoe_version": __version__,
             "host": host}
    if base_model:
        block["base_model"] = dict(base_model)
    model_config.dymoe = block
    model_config.save_pretrained(output_dir)
    save_file({k: v.contiguous() for k, v in experts.items()}, os.path.join(output_dir, EXPERTS),
              metadata={"llava_dymoe_version": __version__, "num_tasks": str(dymoe_cfg.num_tasks),
                        "method": method})
    torch.save(dict(non_lora), os.path.join(output_dir, NON_LORA))
    with open(os.path.join(output_dir, ARGS), "w") as f:
        json.dump(dict(run_args), f, indent=2, sort_keys=True, default=str)
    for name, content in extra.items():
        with open(os.path.join(output_dir, name), "wb") as f:
            f.write(content.encode("utf-8") if isinstance(content, str) else bytes(content))
    if not finished:
        return output_dir
    marker = {"task_id": int(task_id), "method": method, "num_tasks": dymoe_cfg.num_tasks,
              "sha256": {n: sha256_file(os.path.join(output_dir, n)) for n in (*CHECKPOINT_FILES, *sorted(extra))}}
    tmp = os.path.join(output_dir, MARKER + ".tmp")
    with open(tmp, "w") as f:
        json.dump(marker, f, indent=2, sort_keys=True)
    os.replace(tmp, os.path.join(output_dir, MARKER))
    return output_dir

