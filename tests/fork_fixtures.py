"""Small LLaVA forks of our own, built in a test's tmp_path from the ``llava`` in use, one per failure class that
the forks of issue 28 showed: another entry file launched by the scripts, extra setup calls in its train(), a save
call site of another name, a builder with ``**kwargs`` and extra parameters, an optional import, a 1.1-style
``train()`` in code that needs the 1.2 line's transformers and eval scripts in a subfolder only (MCITlib's SEFE), a
builder that sets the model up with calls of its own (DISCO, HiDe)."""
import os
import shutil

from llava_dymoe.patches import lines

SCRIPT = """#!/bin/bash
deepspeed --include localhost:0 --master_port 29600 llava/train/train_mem_MOE.py \\
    --deepspeed ./scripts/zero3.json \\
    --model_name_or_path ./checkpoints/vicuna --output_dir ./checkpoints/task1
"""
ENTRY = "from llava.train.train_MOE import train\n\nif __name__ == \"__main__\":\n    train()\n"
#: what a fork's trainer adds (CoIN's LLaVATrainer.save_trained_model calls the saver of its module)
SAVE_METHOD = """
    def {name}(self, training_args):
        from llava.train.train_MOE import safe_save_model_for_hf_trainer
        safe_save_model_for_hf_trainer(trainer=self, output_dir=training_args.output_dir)
"""


def _edit(path, old, new, count=1):
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new, count))


def make_fork(tmp_path, *, setup_call=True, save_call="safe", builder_extra=True, optional_import=False,
              train_without_attn=False, eval_moved=False, builder_setup=False):
    """A checkout (returned) holding ``llava/`` and ``scripts/train_moe.sh``; its scripts run
    ``llava/train/train_mem_MOE.py``, whose ``train()`` lives in ``llava/train/train_MOE.py``.

    ``setup_call``: that train() calls ``model.set_tokenizer(tokenizer)`` (the model class gets the method);
    ``save_call``: "safe" (upstream's saver), "trained" (``trainer.save_trained_model(training_args)`` as CoIN),
    or another method name that nothing of ours sees; ``builder_extra``: ``load_pretrained_model`` gains
    ``num_task=1`` (and ``**kwargs`` on the 1.1 line); ``optional_import``: ``train_MOE.py`` imports a
    ``Linear8bitLt`` that its vendored module defines only with bitsandbytes; ``train_without_attn`` (1.2 line
    only): that train() loses its ``attn_implementation`` parameter (a local instead), while the code still
    passes ``attn_implementation=`` to ``from_pretrained`` (transformers >= 4.36), as SEFE's does; ``eval_moved``:
    every ``llava/eval/model_*.py`` moves to ``llava/eval/sub/``, ``model_vqa_loader.py`` renamed
    ``model_sub.py`` (SEFE keeps its eval scripts in ``llava/eval/CoIN/`` and has no ``model_vqa_loader``);
    ``builder_setup``: ``load_pretrained_model`` calls ``model.set_clip_tokenizer(tokenizer)`` (an attribute the
    model's ``__init__`` does not set, as DISCO's) and ``model.set_cur_task(1)`` (one it does, as OLoRA's)."""
    checkout = tmp_path / "checkout"
    llava = checkout / "llava"
    shutil.copytree(lines.llava_dir_in_use(), llava, ignore=shutil.ignore_patterns("__pycache__"))
    (checkout / "scripts").mkdir()
    (checkout / "scripts" / "train_moe.sh").write_text(SCRIPT)
    (llava / "train" / "train_mem_MOE.py").write_text(ENTRY)
    moe = llava / "train" / "train_MOE.py"
    shutil.copy(llava / "train" / "train.py", moe)
    if setup_call:
        _edit(moe, "    trainer = LLaVATrainer(", "    model.set_tokenizer(tokenizer)\n    trainer = LLaVATrainer(")
        _edit(llava / "model" / "language_model" / "llava_llama.py", "    def get_model(self):",
              "    def set_tokenizer(self, tokenizer):\n        self.fork_tokenizer_len = len(tokenizer)\n\n"
              "    def get_model(self):")
    if save_call != "safe":
        call = "trainer.save_trained_model(training_args)" if save_call == "trained" else \
            f"trainer.{save_call}(training_args)"
        _edit(moe, "        safe_save_model_for_hf_trainer(trainer=trainer,\n"
                   "                                       output_dir=training_args.output_dir)", f"        {call}")
        _edit(llava / "train" / "llava_trainer.py", "class LLaVATrainer(Trainer):\n",
              "class LLaVATrainer(Trainer):\n" + SAVE_METHOD.format(name=call.split(".")[1].split("(")[0]))
    if builder_extra:
        builder = llava / "model" / "builder.py"
        text = builder.read_text()
        old = next(line for line in text.splitlines() if line.startswith("def load_pretrained_model("))
        new = old[:-2].replace(", **kwargs", "") + ", num_task=1, **kwargs):"
        builder.write_text(text.replace(old, new))
    if optional_import:
        vendored = llava / "vendored_peft.py"
        vendored.write_text("import importlib.util\n\n\ndef is_bnb_available():\n"
                            "    return importlib.util.find_spec('bitsandbytes') is not None\n\n\n"
                            "if is_bnb_available():\n    class Linear8bitLt:\n        pass\n")
        _edit(moe, "import transformers\n", "import transformers\nfrom llava.vendored_peft import Linear8bitLt\n")
    if train_without_attn:
        _edit(moe, "def train(attn_implementation=None):\n", "def train():\n    attn_implementation = None\n")
    if builder_setup:
        _edit(llava / "model" / "builder.py", "    image_processor = None",
              "    model.set_clip_tokenizer(tokenizer)\n    model.set_cur_task(1)\n    image_processor = None")
        _edit(llava / "model" / "language_model" / "llava_llama.py", "        self.post_init()\n",
              "        self.post_init()\n        self.cur_task = 0\n")
        _edit(llava / "model" / "language_model" / "llava_llama.py", "    def get_model(self):",
              "    def set_clip_tokenizer(self, tokenizer):\n        self.clip_tokenizer = tokenizer\n\n"
              "    def set_cur_task(self, task):\n        self.cur_task = task\n\n    def get_model(self):")
    if eval_moved:
        (llava / "eval" / "sub").mkdir()
        for script in (llava / "eval").glob("model_*.py"):
            script.rename(llava / "eval" / "sub" / ("model_sub.py" if script.name == "model_vqa_loader.py" else
                                                    script.name))
    return checkout


def fork_env(checkout) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(checkout), env.get("PYTHONPATH", "")])
    return env
