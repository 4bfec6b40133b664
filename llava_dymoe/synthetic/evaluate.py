"""Answer and score synthetic tasks in-process, the way ``llava.eval.model_vqa_loader`` does.

The sequence runner evaluates through the eval shim (``python -m llava_dymoe.eval
llava.eval.model_vqa_loader ...``), one process per task.  The base stage and quick checks
evaluate several tasks with one model, so this module loads the model once with upstream
``load_pretrained_model`` (under the eval patches, so DyMoE checkpoints load too) and, per
question, builds the prompt exactly as ``model_vqa_loader`` does (``<image>\\n`` + text, the
``vicuna_v1`` template, ``process_images``, greedy ``generate``, ``batch_decode(...).strip()``).
Two differences: the weights (loaded as fp16 by upstream) are computed in fp32, and questions
are answered in order with batch size 1, as upstream does.  Answers are written in LLaVA's
answer format and scored with :func:`llava_dymoe.eval.scorers.score_file`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence


@dataclass(frozen=True)
class EvalTask:
    """One task to answer: its question and reference files, scorer and token budget."""

    name: str
    question_file: str
    reference_file: str
    scorer: str
    max_new_tokens: int


def load_model(model_path: str, model_base: Optional[str] = None):
    """``(tokenizer, model, image_processor)`` on CPU in fp32, through upstream's loader."""
    from llava.mm_utils import get_model_name_from_path
    from llava.model import builder

    from llava_dymoe.patches.eval import eval_patches

    with eval_patches(remap_cpu=True):  # look the loader up inside: the patch replaces the module attribute
        tok, model, processor, _ = builder.load_pretrained_model(model_path, model_base,
                                                         get_model_name_from_path(model_path),
                                                         device="cpu", device_map="cpu")
    return tok, model.float().eval(), processor


def answer(tok, model, processor, questions: Sequence[dict], image_folder: str, max_new_tokens: int,
           conv_mode: str = "vicuna_v1", model_id: str = "model") -> List[dict]:
    """Greedy answers to ``{question_id, image, text}`` records, as LLaVA answer records."""
    import torch
    from PIL import Image
    from llava.constants import DEFAULT_IMAGE_TOKEN
    from llava.conversation import conv_templates
    from llava.mm_utils import process_images, tokenizer_image_token

    out = []
    for q in questions:
        conv = conv_templates[conv_mode].copy()
        conv.append_message(conv.roles[0], DEFAULT_IMAGE_TOKEN + "\n" + q["text"])
        conv.append_message(conv.roles[1], None)
        ids = tokenizer_image_token(conv.get_prompt(), tok, return_tensors="pt").unsqueeze(0)
        image = Image.open(os.path.join(image_folder, q["image"])).convert("RGB")
        pixels = process_images([image], processor, model.config).to(torch.float32)
        with torch.inference_mode():
            gen = model.generate(ids, images=pixels, image_sizes=[image.size], do_sample=False,
                                 num_beams=1, max_new_tokens=max_new_tokens, use_cache=True,
                                 pad_token_id=tok.unk_token_id)
        text = tok.batch_decode(gen, skip_special_tokens=True)[0].strip()
        out.append({"question_id": q["question_id"], "prompt": q["text"], "text": text,
                    "answer_id": f"{q['question_id']}-0", "model_id": model_id, "metadata": {}})
    return out


def evaluate(model_path: str, model_base: Optional[str], tasks: Sequence[EvalTask], image_folder: str,
             answers_dir: Optional[str] = None, limit: Optional[int] = None,
             loaded=None, threads: Optional[int] = 1) -> Dict[str, dict]:
    """Score each task: ``{task: {"score": percent, "n": ..., ...}}``; answers go to ``answers_dir``.

    ``limit`` answers only the first questions of each task (scored over those);
    ``loaded`` reuses a ``load_model`` result.  ``threads`` sets torch's intra-op threads while
    answering (restored afterwards; ``None`` keeps them): one thread avoids the large slowdown
    of oversubscribed OpenMP threads on a shared 2-core machine.
    """
    import torch

    saved_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _evaluate(model_path, model_base, tasks, image_folder, answers_dir, limit, loaded)
    finally:
        torch.set_num_threads(saved_threads)


def _evaluate(model_path, model_base, tasks, image_folder, answers_dir, limit, loaded) -> Dict[str, dict]:
    from llava_dymoe.eval.io import read_records, write_jsonl
    from llava_dymoe.eval.scorers import score_file

    tok, model, processor = loaded or load_model(model_path, model_base)
    results = {}
    for task in tasks:
        questions = read_records(task.question_file)[:limit]
        records = answer(tok, model, processor, questions, image_folder, task.max_new_tokens,
                         model_id=os.path.basename(os.path.normpath(model_path)))
        folder = answers_dir or os.path.join(model_path, "eval")
        ans_path = write_jsonl(os.path.join(folder, f"{task.name}.jsonl"), records)
        refs = task.reference_file
        if limit is not None:
            keep = {q["question_id"] for q in questions}
            refs = write_jsonl(os.path.join(folder, f"{task.name}.references.jsonl"),
                               [r for r in read_records(task.reference_file) if r["question_id"] in keep])
        res = score_file(task.scorer, ans_path, refs)
        ref_by_id = {r["question_id"]: r["answer"] for r in read_records(refs)}
        results[task.name] = {"score": res["score"], "n": res["n"], "n_answered": res["n_answered"],
                              "examples": [[r["text"], ref_by_id[r["question_id"]]] for r in records[:3]]}
    return results
