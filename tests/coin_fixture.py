"""A fork of our own with CoIN's layout (zackschen/CoIN 4122465, read for its structure only), built in a test's
tmp_path from the ``llava`` in use: LLaVA lives in a package that is not named ``llava``, spread as CoIN spreads it:

    ETrainFx/Models/LLaVA/          llava/model (builder.py, language_model/, multimodal_encoder/ ...)
    ETrainFx/utils/LLaVA/           llava/constants.py, conversation.py, mm_utils.py, utils.py
    ETrainFx/Train/Base_trainer.py  the savers of llava/train/train.py (maybe_zero_3 ... safe_save_model_for_hf_trainer)
    ETrainFx/Train/LLaVA/train.py   llava/train/train.py without them: ``from ETrainFx.Train.Base_trainer import *``,
                                    and train() ends with ``trainer.save_trained_model(training_args)``
    ETrainFx/Train/LLaVA/llava_trainer.py   LLaVATrainer, plus ``save_trained_model`` (LoRA files or the saver)
    ETrainFx/Train/LLaVA/train_mem.py       ``from ETrainFx.Train.LLaVA.train import train``
    ETrainFx/Eval/LLaVA/CoIN/model_gqa.py   llava/eval/model_vqa_loader.py reading a JSON list of questions (as
                                            CoIN's scripts do); Eval/ has no __init__.py (namespace packages, as CoIN)
    scripts/LLaVA/Train/1_task.sh           ``deepspeed ... ETrainFx/Train/LLaVA/train_mem.py ...``
"""
import ast
import re

from llava_dymoe.patches import lines

PACKAGE = "ETrainFx"
TRAIN_MODULE = f"{PACKAGE}.Train.LLaVA.train"
TRAINER_MODULE = f"{PACKAGE}.Train.LLaVA.llava_trainer"
BUILDER_MODULE = f"{PACKAGE}.Models.LLaVA.builder"
EVAL_MODULE = f"{PACKAGE}.Eval.LLaVA.CoIN.model_gqa"
SCRIPT = f"""#!/bin/bash
deepspeed --include localhost:0 --master_port 29600 {PACKAGE}/Train/LLaVA/train_mem.py \\
    --deepspeed ./scripts/zero3_offload.json --lora_enable True \\
    --model_name_or_path ./checkpoints/vicuna --output_dir ./checkpoints/task1
"""
SAVERS = ("maybe_zero_3", "get_peft_state_maybe_zero_3", "get_peft_state_non_lora_maybe_zero_3",
          "get_mm_adapter_state_maybe_zero_3", "safe_save_model_for_hf_trainer")
SAVE_TRAINED_MODEL = """
    def save_trained_model(self, training_args):
        self.model.config.use_cache = True
        if training_args.lora_enable:
            state_dict = get_peft_state_maybe_zero_3(self.model.named_parameters(), training_args.lora_bias)
            non_lora = get_peft_state_non_lora_maybe_zero_3(self.model.named_parameters())
            if training_args.local_rank in (0, -1):
                self.model.config.save_pretrained(training_args.output_dir)
                self.model.save_pretrained(training_args.output_dir, state_dict=state_dict)
                torch.save(non_lora, os.path.join(training_args.output_dir, "non_lora_trainables.bin"))
        else:
            safe_save_model_for_hf_trainer(trainer=self, output_dir=training_args.output_dir)
"""
_RENAMES = ((r"\bfrom llava import conversation\b", f"from {PACKAGE}.utils.LLaVA import conversation"),
            (r"\bllava\.model\b", f"{PACKAGE}.Models.LLaVA"),
            (r"\bllava\.train\b", f"{PACKAGE}.Train.LLaVA"),
            (r"\bllava\.eval\b", f"{PACKAGE}.Eval.LLaVA.CoIN"),
            (r"\bllava\.(constants|conversation|mm_utils|utils)\b", rf"{PACKAGE}.utils.LLaVA.\1"),
            (r"\bfrom llava import\b", f"from {PACKAGE}.Models.LLaVA import"))


def _rename(text: str) -> str:
    for old, new in _RENAMES:
        text = re.sub(old, new, text)
    return text


def _write(path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _copy(src, dst) -> None:
    _write(dst, _rename(src.read_text()))


def _cut_functions(text: str, names) -> tuple:
    """(text without the top-level functions ``names``, their source)."""
    tree = ast.parse(text)
    spans = sorted((n.lineno - 1, n.end_lineno) for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in names)
    assert len(spans) == len(names), [n for n in names]
    src = text.splitlines(keepends=True)
    cut = "".join("".join(src[a:b]) + "\n\n" for a, b in spans)
    for a, b in reversed(spans):
        del src[a:b]
    return "".join(src), cut


def make_coin_fork(tmp_path):
    """The checkout (returned): ``ETrainFx/`` as in the module docstring, and ``scripts/LLaVA/Train/1_task.sh``."""
    import pathlib

    llava = pathlib.Path(lines.llava_dir_in_use())
    checkout = tmp_path / "coin_checkout"
    pkg = checkout / PACKAGE
    for init in ("", "Models", "utils", "utils/LLaVA", "Train", "Train/LLaVA"):
        _write(pkg / init / "__init__.py", "")
    for src in sorted((llava / "model").rglob("*.py")):
        _copy(src, pkg / "Models" / "LLaVA" / src.relative_to(llava / "model"))
    for name in ("constants", "conversation", "mm_utils", "utils"):
        _copy(llava / f"{name}.py", pkg / "utils" / "LLaVA" / f"{name}.py")

    train = _rename((llava / "train" / "train.py").read_text())
    train, savers = _cut_functions(train, SAVERS)
    tree = ast.parse(train)
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "train")
    src = train.splitlines(keepends=True)
    start = next(i for i in range(fn.lineno, fn.end_lineno) if src[i].strip() == "model.config.use_cache = True")
    src[start:fn.end_lineno] = ["    trainer.save_trained_model(training_args)\n"]
    first_def = next(min([n.lineno] + [d.lineno for d in n.decorator_list]) for n in tree.body
                     if isinstance(n, (ast.FunctionDef, ast.ClassDef)))
    src.insert(first_def - 1, f"from {PACKAGE}.Train.Base_trainer import *\n\n\n")
    _write(pkg / "Train" / "LLaVA" / "train.py", "".join(src))
    _write(pkg / "Train" / "Base_trainer.py", "import logging\nimport os\n\nimport torch\nimport transformers\n\n\n"
           + savers)
    trainer = _rename((llava / "train" / "llava_trainer.py").read_text())
    trainer = trainer.replace("class LLaVATrainer(Trainer):\n", "class LLaVATrainer(Trainer):\n" + SAVE_TRAINED_MODEL, 1)
    _write(pkg / "Train" / "LLaVA" / "llava_trainer.py",
           f"import os\n\nfrom {PACKAGE}.Train.Base_trainer import *\n" + trainer)
    _write(pkg / "Train" / "LLaVA" / "train_mem.py",
           f"from {TRAIN_MODULE} import train\n\nif __name__ == \"__main__\":\n    train()\n")

    loader = _rename((llava / "eval" / "model_vqa_loader.py").read_text())
    reads = re.search(r"questions = \[json\.loads\(q\) for q in open\(os\.path\.expanduser\(args\.question_file\)"
                      r", \"r\"\)\]", loader)
    assert reads, "upstream's model_vqa_loader reads its questions in another way"
    loader = loader.replace(reads.group(0), "questions = json.load(open(os.path.expanduser(args.question_file)))")
    _write(pkg / "Eval" / "LLaVA" / "CoIN" / "model_gqa.py", loader)
    _write(checkout / "scripts" / "LLaVA" / "Train" / "1_task.sh", SCRIPT)
    left = [str(p) for p in pkg.rglob("*.py") if re.search(r"^\s*(from|import) llava\b", p.read_text(), re.M)]
    assert not left, f"imports of llava left in the fixture: {left}"
    return checkout
