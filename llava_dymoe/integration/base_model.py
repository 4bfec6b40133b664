"""Which base LLM a DyMoE checkpoint was trained on, and refusing another one (issue 17 item 5).

A task checkpoint stores experts and a projector, not the LLM: the base comes from
``--model_name_or_path`` at training and ``--model-base`` at evaluation.  Two bases of the same
architecture load without any error, so a task 2 trained on another base than task 1, or an
evaluation with another base, would silently give wrong results.  Each checkpoint therefore records
(``config.json`` → ``"dymoe"`` → ``"base_model"``)::

    {"path": ..., "config_sha256": ..., "weights_fingerprint": ...}

* ``config_sha256``: SHA-256 of the base's ``config.json`` as canonical JSON, without
  ``_name_or_path`` and ``transformers_version`` (the same model saved elsewhere or by another
  transformers version keeps its hash);
* ``weights_fingerprint``: SHA-256 over every weight file (``*.safetensors``, ``*.bin``; name, size
  and three 1 MiB samples: start, middle, end).  Cheap (at most 3 MiB read per file, no model
  loaded), and any retraining or fine-tune of the same architecture changes it.  The same weights
  re-saved in another format or sharding also change it; ``--dymoe_allow_base_mismatch True``
  (training) or ``DYMOE_EVAL_ALLOW_BASE_MISMATCH=1`` (evaluation) accepts a mismatch the user means.

Checkpoints written before this record existed have no ``base_model``: they load, unchecked (an
info line says so).  Stdlib only (the training pre-flight imports it before torch).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Any, Dict, List, Optional

from ..errors import ConfigError

log = logging.getLogger("llava_dymoe.base_model")

#: Bytes read per sample; three samples (start, middle, end) per weight file.
SAMPLE = 1 << 20
#: config.json keys that say where or with what the config was saved, not what the model is.
_VOLATILE = ("_name_or_path", "transformers_version")
#: Environment variable that lets an evaluation use another base than the checkpoint's.
EVAL_ALLOW_ENV = "DYMOE_EVAL_ALLOW_BASE_MISMATCH"
TRAIN_ALLOW_FLAG = "--dymoe_allow_base_mismatch"


def _folder(path: str) -> Optional[str]:
    """The local folder of ``path`` (a folder, or a hub id already in the HF cache), else None."""
    if os.path.isdir(path):
        return path
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(path, "config.json")
    except Exception:  # noqa: BLE001 - no hub library or a malformed id: not resolvable offline
        return None
    return os.path.dirname(cached) if isinstance(cached, str) else None


def weight_files(folder: str) -> List[str]:
    return sorted(n for n in os.listdir(folder) if (n.endswith(".safetensors") or n.endswith(".bin"))
                  and n != "training_args.bin" and os.path.isfile(os.path.join(folder, n)))


def _weights_fingerprint(folder: str) -> Optional[str]:
    names = weight_files(folder)
    if not names:
        return None
    h = hashlib.sha256()
    for name in names:
        path = os.path.join(folder, name)
        size = os.path.getsize(path)
        h.update(f"{name}\0{size}\0".encode())
        with open(path, "rb") as f:
            for offset in sorted({0, max(0, size // 2 - SAMPLE // 2), max(0, size - SAMPLE)}):
                f.seek(offset)
                h.update(f.read(SAMPLE))
    return h.hexdigest()


def base_fingerprint(path: str) -> Optional[Dict[str, Any]]:
    """``{"path", "config_sha256", "weights_fingerprint"}`` of the base LLM at ``path``; None when its
    ``config.json`` cannot be read locally (a hub id not in the cache)."""
    folder = _folder(path)
    if folder is None:
        return None
    try:
        with open(os.path.join(folder, "config.json")) as f:
            cfg = json.load(f)
    except (OSError, ValueError):
        return None
    for key in _VOLATILE:
        cfg.pop(key, None)
    config_sha = hashlib.sha256(json.dumps(cfg, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return {"path": path, "config_sha256": config_sha, "weights_fingerprint": _weights_fingerprint(folder)}


def describe(fp: Dict[str, Any]) -> str:
    weights = fp.get("weights_fingerprint")
    return (f"config {str(fp.get('config_sha256'))[:12]}, weights {str(weights)[:12] if weights else 'unknown'} "
            f"({fp.get('path')})")


def mismatch(saved: Optional[Dict[str, Any]], current: Optional[Dict[str, Any]]) -> bool:
    """Whether two fingerprints name different bases (False when either is unknown)."""
    if not saved or not current:
        return False
    if saved.get("config_sha256") != current.get("config_sha256"):
        return True
    a, b = saved.get("weights_fingerprint"), current.get("weights_fingerprint")
    return bool(a and b and a != b)


def saved_fingerprint(checkpoint: str) -> Optional[Dict[str, Any]]:
    """The ``base_model`` record of a DyMoE checkpoint's ``config.json`` (None for older checkpoints)."""
    try:
        with open(os.path.join(checkpoint, "config.json")) as f:
            block = json.load(f).get("dymoe") or {}
    except (OSError, ValueError, AttributeError):
        return None
    record = block.get("base_model") if isinstance(block, dict) else None
    return record if isinstance(record, dict) else None


def check_same_base(checkpoint: str, base_path: str, *, allow: bool, what: str, override: str,
                    error=ConfigError) -> Optional[Dict[str, Any]]:
    """Refuse (``error``) when ``checkpoint`` records another base than ``base_path``; returns the current
    fingerprint.  ``allow`` turns the refusal into a warning; a checkpoint without a record is accepted."""
    saved = saved_fingerprint(checkpoint)
    current = base_fingerprint(base_path)
    if saved is None:
        log.info("%s records no base model (written before base fingerprints); %s is not checked", checkpoint,
                 base_path)
        return current
    if not mismatch(saved, current):
        return current
    message = (f"{what} {base_path} is not the base model {checkpoint} was trained on: checkpoint base "
               f"{describe(saved)}, given base {describe(current)}")
    if allow:
        log.warning("%s; continuing because of %s", message, override)
        return current
    raise error(f"{message}. Pass the same base, or {override} if you mean it")
