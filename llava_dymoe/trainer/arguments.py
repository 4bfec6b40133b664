"""``--dymoe_*`` training flags, added to LLaVA's ``TrainingArguments`` by patch T1.

``DyMoEArguments`` is a plain dataclass (no LLaVA import); ``make_training_arguments(base)`` builds
``DyMoETrainingArguments(DyMoEArguments, base)`` at patch time, so ``HfArgumentParser`` inside
LLaVA's ``train()`` accepts the flags.  Every ``DyMoEConfig`` field has a flag
``--dymoe_<field>`` whose default ``None`` means "the method recipe's value" (which, unless the
recipe says otherwise, is method.md's default); ``--dymoe_target_modules`` takes a comma list.

No ``from __future__ import annotations`` here: transformers' ``HfArgumentParser`` resolves the
field types with ``typing.get_type_hints``.
"""
import dataclasses
from dataclasses import dataclass, field, make_dataclass
from typing import Any, Dict, Optional

from ..config import DyMoEConfig

#: DyMoEConfig fields that are not user flags (derived from the checkpoint / bookkeeping).
_NOT_FLAGS = ("num_tasks", "format_version")

def method_help(training_flag: bool = True) -> str:
    """The ``--dymoe_method`` help (``training_flag``; ``cli run --method`` otherwise): every recipe, and what
    ``dymoe_plus`` (beyond the paper) sets."""
    from ..methods import METHODS, PLUS, SEQBANK, TASK_BASELINES, VARIANTS

    former = ("key_selector",)
    others = [n for n in METHODS.names()
              if n not in VARIANTS and n not in ("dymoe", PLUS, SEQBANK, *former, *TASK_BASELINES)]
    text = (f"Method recipe (llava_dymoe.methods): dymoe (the paper{', default' if training_flag else ''}); "
            f"baselines and ablations: {', '.join(others)}; beyond the paper (opt-in): dymoe_plus = {PLUS} (one "
            "bank per task, trained on its task alone; at inference HiDe-LLaVA's anchors shortlist each prompt's two "
            "most similar tasks and keys fitted after each task choose one bank among them, per sequence and "
            "projection; no task id; adopted on the CoIN-shaped suite by issue 26's pre-registered rule: "
            f"docs/beyond-the-paper.md section 8), {', '.join(former)} (dymoe_plus before that: the keys choose "
            f"among every bank), {SEQBANK} (dymoe_plus until key_selector's adoption: the cascade, "
            "warm-started fixed router rows, fitted keys, one bank per sequence) and the earlier variants "
            f"{', '.join(VARIANTS)}; task-identity baselines for dymoe_plus (its banks, other choosers): "
            "oracle_bank (an UPPER BOUND: told the true task at evaluation), hide_selector (HiDe-LLaVA's selector: "
            "image and text anchors per task, a softmax over the banks) and prism_selector (Prism's port of it: the "
            "most similar task's bank alone)")
    return text + ("; 'none' trains as upstream LLaVA" if training_flag else "")


_FIXED = [
    ("dymoe_method", str, field(default="dymoe", metadata={"help": method_help()})),
    ("dymoe_task_id", int, field(default=1, metadata={
        "help": "1-based index of the task this run trains (CoIN script numbering); task t needs "
                "--dymoe_prev_ckpt pointing at task t-1's output_dir"})),
    ("dymoe_prev_ckpt", Optional[str], field(default=None, metadata={
        "help": "Finished output_dir of the previous task (read only); its banks are loaded and frozen"})),
    ("dymoe_train_projector", bool, field(default=True, metadata={
        "help": "Train the mm_projector together with the new experts (LLaVA/CoIN recipes do; "
                "method.md §1.1 [?] for DyMoE). --freeze_mm_mlp_adapter True also freezes it"})),
    ("dymoe_load_prev_projector", Optional[bool], field(default=None, metadata={
        "help": "Load the previous task's projector (non_lora_trainables.bin). Default: yes, unless "
                "--pretrain_mm_mlp_adapter is passed explicitly"})),
    ("dymoe_allow_base_mismatch", bool, field(default=False, metadata={
        "help": "Continue the sequence although --model_name_or_path is not the base model --dymoe_prev_ckpt "
                "was trained on (its recorded config hash or weight fingerprint differs); refused otherwise"})),
    ("dymoe_use_reentrant", bool, field(default=True, metadata={
        "help": "use_reentrant for gradient checkpointing (reentrant works with ZeRO-3 and frozen "
                "parameters; llava-integration.md §2)"})),
    ("dymoe_log_routing", bool, field(default=False, metadata={
        "help": "Log routing statistics: per logged step dymoe/frac_new, frac_old, frac_ambiguous, g_new "
                "(means over layers, rank 0's batches) and a per-layer routing_stats.json in the task's "
                "checkpoint directory. Off by default (no cost)"})),
]


def _config_flag_fields():
    for f in dataclasses.fields(DyMoEConfig):
        if f.name in _NOT_FLAGS:
            continue
        typ = Optional[str] if f.name == "target_modules" else Optional[type(f.default)]
        yield (f"dymoe_{f.name}", typ, field(default=None, metadata={
            "help": f.metadata.get("help", "") + " [flag default: the method recipe's value]"}))


DyMoEArguments = make_dataclass("DyMoEArguments", _FIXED + list(_config_flag_fields()))
DyMoEArguments.__doc__ = "The --dymoe_* flags (see module docstring)."
DyMoEArguments.__module__ = __name__


def config_overrides(args: Any) -> Dict[str, Any]:
    """``DyMoEConfig`` values the user set explicitly (flags left at ``None`` are omitted)."""
    out: Dict[str, Any] = {}
    for f in dataclasses.fields(DyMoEConfig):
        if f.name in _NOT_FLAGS:
            continue
        value = getattr(args, f"dymoe_{f.name}", None)
        if value is None:
            continue
        if f.name == "target_modules":
            value = [m.strip() for m in str(value).split(",") if m.strip()]
        out[f.name] = value
    return out


def dymoe_args_dict(args: Any) -> Dict[str, Any]:
    """Every ``dymoe_*`` attribute of ``args`` (what ``dymoe_args.json`` records)."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(DyMoEArguments)}


#: ``--dymoe_method none``: no DyMoE; the trainer and the saver behave exactly as upstream.
NO_METHOD = "none"


#: ``(base class, default method) -> DyMoETrainingArguments``: one class per pair, so that a pickled
#: instance rebuilt in this process gets the class the parser uses.
_CLASSES: Dict[Any, type] = {}


def make_training_arguments(base: type, default_method: str = "dymoe") -> type:
    """``@dataclass class DyMoETrainingArguments(DyMoEArguments, base)`` for ``HfArgumentParser``.

    ``default_method`` is the ``--dymoe_method`` default: ``"dymoe"`` for ``python -m
    llava_dymoe.train``, ``"none"`` for a patched fork (upstream behaviour unless asked).

    The class is built at patch time, so pickle cannot find it by name; its instances pickle
    through :func:`rebuild_training_arguments` (``Trainer`` writes ``training_args.bin`` into every
    checkpoint with ``torch.save``), which rebuilds the class from ``base``'s import path."""
    base = getattr(base, "_dymoe_base", base)  # never stack the flags twice
    key = (base, default_method)
    if key in _CLASSES:
        return _CLASSES[key]
    ns = {"__module__": __name__, "__doc__": base.__doc__, "_dymoe_base": base,
          "_dymoe_default_method": default_method, "__reduce__": _reduce}
    if default_method != "dymoe":  # redefine the field: same position, another default
        help_text = dataclasses.fields(DyMoEArguments)[0].metadata["help"]
        ns["__annotations__"] = {"dymoe_method": str}
        ns["dymoe_method"] = field(default=default_method, metadata={"help": help_text})
    # DyMoEArguments first in the bases = last in the field order (its fields all have defaults)
    cls = dataclass(type("DyMoETrainingArguments", (DyMoEArguments, base), ns))
    _CLASSES[key] = cls
    return cls


def _reduce(self):
    base = type(self)._dymoe_base
    return (rebuild_training_arguments,
            (base.__module__, base.__qualname__, type(self)._dymoe_default_method, dict(self.__dict__)))


def rebuild_training_arguments(base_module: str, base_name: str, default_method: str, state: Dict[str, Any]):
    """Unpickle a ``DyMoETrainingArguments``: the class is rebuilt over ``base_module.base_name`` (the
    original class when that name is patched), the attributes restored without ``__post_init__``."""
    import importlib

    base = importlib.import_module(base_module)
    for part in base_name.split("."):
        base = getattr(base, part)
    cls = make_training_arguments(base, default_method)
    obj = cls.__new__(cls)
    obj.__dict__.update(state)
    return obj
