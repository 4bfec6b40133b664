"""``python -m llava_dymoe.eval_hf``: answer a CoIN/LLaVA-style question file with a DyMoE checkpoint of an HF host.

    python -m llava_dymoe.eval_hf --model-path CKPT --model-base BASE --question-file Q.jsonl \\
        --image-folder DIR --answers-file A.jsonl [--max-new-tokens 128] [--attn-implementation sdpa]

The counterpart of LLaVA's ``llava.eval.model_vqa_loader`` for the HF-native hosts (docs/hosts.md), with the
same argument names and file formats: each question line ``{"question_id", "image", "text"}`` is rendered with
the processor's chat template (one user turn: the image, then the text; the generation prompt), answered with
greedy ``generate``, and written as ``{"question_id", "prompt", "text", "answer_id", "model_id", "metadata"}``;
``llava-dymoe score`` and the suites' scorers read that file unchanged.  The checkpoint loads with
``hosts.loader.load_hf_checkpoint`` (every bank, the projector; another host's checkpoint is refused).
"""
import argparse
import json
import os
import sys
from typing import List, Optional


def parse(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m llava_dymoe.eval_hf", description=__doc__.split("\n")[0])
    p.add_argument("--model-path", required=True, help="a finished DyMoE task checkpoint of an HF host")
    p.add_argument("--model-base", required=True, help="the base model folder training started from")
    p.add_argument("--question-file", required=True, help="JSONL: question_id, image, text")
    p.add_argument("--image-folder", default="", help="folder the questions' images are in")
    p.add_argument("--answers-file", required=True, help="JSONL written here (never over an existing file)")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--attn-implementation", default="sdpa", help="sdpa (CPU), eager, flash_attention_2")
    return p.parse_args(argv)


def answer(model, processor, question, image_folder: str, max_new_tokens: int) -> str:
    import torch
    from PIL import Image

    from .hosts.hf_data import to_messages

    sample = {"conversations": [{"from": "human", "value": ("<image>\n" if question.get("image") else "")
                                 + str(question["text"])}]}
    prompt = processor.apply_chat_template(to_messages(sample), tokenize=False, add_generation_prompt=True)
    images = [Image.open(os.path.join(image_folder, question["image"])).convert("RGB")] if question.get("image") \
        else None
    enc = {k: v for k, v in processor(text=prompt, images=images, return_tensors="pt").items()
           if k in ("input_ids", "attention_mask", "pixel_values", "image_grid_thw")}
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
    return processor.tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def main(argv: Optional[List[str]] = None) -> int:
    from .errors import ConfigError
    from .hosts.loader import load_hf_checkpoint

    from llava_dymoe.integration.process_hygiene import die_with_parent_if_asked

    die_with_parent_if_asked()  # started by `cli run`: end with it
    args = parse(argv)
    if os.path.exists(args.answers_file):
        raise ConfigError(f"--answers-file {args.answers_file} exists; it is never overwritten: choose another path")
    model, processor = load_hf_checkpoint(args.model_path, args.model_base,
                                          attn_implementation=args.attn_implementation)
    with open(args.question_file) as f:
        questions = [json.loads(line) for line in f if line.strip()]
    os.makedirs(os.path.dirname(os.path.abspath(args.answers_file)), exist_ok=True)
    model_id = os.path.basename(os.path.normpath(args.model_path))
    tmp = args.answers_file + ".tmp"
    with open(tmp, "w") as f:
        for i, q in enumerate(questions):
            text = answer(model, processor, q, args.image_folder, args.max_new_tokens)
            f.write(json.dumps({"question_id": q["question_id"], "prompt": q["text"], "text": text,
                                "answer_id": f"{model_id}-{i}", "model_id": model_id, "metadata": {}}) + "\n")
    os.replace(tmp, args.answers_file)
    return 0


if __name__ == "__main__":
    from llava_dymoe.errors import run_refusing

    sys.exit(run_refusing(main))
