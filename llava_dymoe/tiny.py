"""A tiny LLaVA built locally from configs: no hub, no download, a few seconds on a CPU.

``python -m llava_dymoe.tiny OUT_DIR [--seed N] [--hidden-size 64 ...]`` writes

* ``OUT_DIR/llm``: a sentencepiece ``LlamaTokenizer(legacy=False)`` trained on a built-in
  corpus plus a small random ``LlamaForCausalLM`` saved like a Vicuna base (what LLaVA
  fine-tuning starts from: ``--model_name_or_path OUT_DIR/llm``);
* ``OUT_DIR/clip``: a small random ``CLIPVisionModel`` with its ``CLIPImageProcessor``
  (what ``--vision_tower OUT_DIR/clip`` loads);
* ``OUT_DIR/tiny.json``: the sizes and seed used.

The same function (:func:`build_tiny_llava`) serves the tests, the demo and the benchmarks.
Everything is deterministic for a seed: the tokenizer corpus is generated from the seed-free
word lists below and sentencepiece is trained single-threaded.  Recipe and sizes follow
``shared/docs/stack.md`` §2 (verified to train with upstream ``llava.train.train.train()``).
"""
from __future__ import annotations

import argparse
import json
import os
import random
from dataclasses import asdict, dataclass, field
from typing import List, Optional

#: Words the synthetic suites and the smoke data use; the corpus repeats them so they get
#: whole-word pieces.  Generic English words give the tokenizer some breadth.
DOMAIN_WORDS = (
    "red green blue yellow orange purple white black gray brown pink cyan "
    "circle square triangle star cross ring diamond heart bar dot "
    "zero one two three four five six seven eight nine ten none left right top bottom middle center "
    "first last second third slot object objects shape shapes colour color colors count how many "
    "what which where is are the a an of in on at image picture photo shown there answer question "
    "option options letter choose select word words text read written box boxes region locate "
    "class category label animal fruit tool vehicle plant cat dog bird fish apple pear car boat tree "
    "yes no true false small large big tiny single short phrase using"
).split()
GENERIC_WORDS = (
    "time person year way day thing man world life hand part child eye woman place work week case "
    "point government company number group problem fact be have do say get make go know take see come "
    "think look want give use find tell ask seem feel try leave call good new old great high different "
    "important public bad same able to from up about into over after beneath under above for with by "
    "chat between curious user artificial intelligence assistant gives helpful detailed polite answers "
    "questions model learn task train test data value result accuracy score continual expert router"
).split()
TEMPLATES = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives "
    "helpful, detailed, and polite answers to the user's questions.",
    "USER: <image>\nWhat color is the {w} in the image? ASSISTANT: The {w} is {c}.</s>",
    "Answer the question using a single word or phrase.",
    "Answer with the option's letter from the given choices directly.",
    "Options: A. {c} B. {w} C. {c2} D. {w2}",
    "The answer is {L}.",
    "Please provide the bounding box coordinate of the region this sentence describes: the {c} {w}.",
    "[{n1}.{n2}{n3}, {n3}.{n1}{n2}, {n2}.{n3}{n1}, {n1}.{n1}{n3}]",
    "How many {w}s are there? {n1}",
    "What is written in the image? {w} {w2}",
)


@dataclass
class TinySizes:
    """Sizes of the tiny LLaVA (defaults: stack.md §2, about 0.2 M LLM parameters)."""

    vocab_size: int = 1000
    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    max_position_embeddings: int = 512
    clip_hidden_size: int = 32
    clip_intermediate_size: int = 64
    clip_num_hidden_layers: int = 2
    clip_num_attention_heads: int = 4
    image_size: int = 32
    patch_size: int = 8

    def __post_init__(self):
        for name, value in asdict(self).items():
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"TinySizes.{name} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError("hidden_size must be divisible by num_attention_heads "
                             f"({self.hidden_size} % {self.num_attention_heads} != 0)")
        if self.clip_hidden_size % self.clip_num_attention_heads:
            raise ValueError("clip_hidden_size must be divisible by clip_num_attention_heads")
        if self.clip_num_hidden_layers < 2:
            raise ValueError("clip_num_hidden_layers must be >= 2 (LLaVA selects layer -2)")
        if self.image_size % self.patch_size:
            raise ValueError("image_size must be a multiple of patch_size")


@dataclass
class TinyLLaVA:
    """Paths of a built tiny LLaVA."""

    root: str
    llm: str
    clip: str
    seed: int
    sizes: TinySizes = field(default_factory=TinySizes)


def _corpus_lines(n_lines: int = 6000) -> List[str]:
    rng = random.Random(1234)  # the tokenizer is the same for every model seed
    words = DOMAIN_WORDS + GENERIC_WORDS
    lines = []
    for i in range(n_lines):
        if i % 3 == 0:
            t = TEMPLATES[i % len(TEMPLATES)]
            lines.append(t.format(w=rng.choice(DOMAIN_WORDS), w2=rng.choice(DOMAIN_WORDS),
                                  c=rng.choice(DOMAIN_WORDS[:12]), c2=rng.choice(DOMAIN_WORDS[:12]),
                                  L=rng.choice("ABCD"), n1=rng.randrange(10), n2=rng.randrange(10),
                                  n3=rng.randrange(10)))
        else:
            k = rng.randrange(4, 14)
            sent = " ".join(rng.choice(words) for _ in range(k))
            lines.append(sent.capitalize() + rng.choice([".", "?", "!", ",", ":"]))
    return lines


def train_tokenizer(out_dir: str, vocab_size: int = 1000):
    """Train a Llama-style BPE sentencepiece model and save a slow ``LlamaTokenizer``.

    Settings follow stack.md §2 (byte fallback, digits split, identity normalisation,
    ``unk=0, bos=1, eos=2``, no pad piece); ``legacy=False`` like vicuna-7b-v1.5.
    """
    import io

    import sentencepiece as spm
    from transformers import LlamaTokenizer

    os.makedirs(out_dir, exist_ok=True)
    model = io.BytesIO()  # in-memory: the saved proto then holds no machine-specific paths
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_corpus_lines()), model_writer=model, vocab_size=vocab_size,
        model_type="bpe", byte_fallback=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        character_coverage=1.0, add_dummy_prefix=True, remove_extra_whitespaces=False,
        split_digits=True, allow_whitespace_only_pieces=True, normalization_rule_name="identity",
        minloglevel=2, num_threads=1, shuffle_input_sentence=False,
        # "USER" as its own piece: after "</s>" the v1 template's role has no leading space, and
        # LLaVA's preprocess_v1 length bookkeeping assumes Vicuna's behaviour there (one piece
        # fewer than the standalone round), otherwise it masks every multi-turn sample.
        user_defined_symbols=["USER"],
    )
    vocab_file = os.path.join(out_dir, "_spm.model")
    with open(vocab_file, "wb") as f:
        f.write(model.getvalue())
    tok = LlamaTokenizer(vocab_file=vocab_file, legacy=False)
    tok.save_pretrained(out_dir)
    os.remove(vocab_file)
    return tok


def build_tiny_llava(out_dir: str, seed: int = 0, sizes: Optional[TinySizes] = None,
                     overwrite: bool = False) -> TinyLLaVA:
    """Build (or reuse, when ``tiny.json`` matches) the tiny LLaVA under ``out_dir``.  A ``tiny.json`` that is
    not JSON is refused (:class:`~llava_dymoe.errors.ConfigError`) unless ``overwrite``."""
    from .errors import ConfigError

    sizes = sizes or TinySizes()
    out_dir = os.path.abspath(out_dir)
    llm_dir, clip_dir = os.path.join(out_dir, "llm"), os.path.join(out_dir, "clip")
    meta_path = os.path.join(out_dir, "tiny.json")
    meta = {"seed": seed, "sizes": asdict(sizes), "format": 1}
    if not overwrite and os.path.exists(meta_path):
        try:
            with open(meta_path) as f:
                saved = json.load(f)
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise ConfigError(f"{meta_path} is not readable JSON ({e}): the tiny model in {out_dir} cannot be "
                              "trusted; pass --overwrite to build it again there, or choose another folder") from None
        if saved == meta:
            return TinyLLaVA(out_dir, llm_dir, clip_dir, seed, sizes)
    if os.path.isfile(out_dir):
        raise ConfigError(f"{out_dir} is a file, not a folder; choose a folder for the tiny model")
    import torch
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel, LlamaConfig,
                              LlamaForCausalLM)

    os.makedirs(out_dir, exist_ok=True)
    tok = train_tokenizer(llm_dir, sizes.vocab_size)

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=sizes.hidden_size,
                      intermediate_size=sizes.intermediate_size,
                      num_hidden_layers=sizes.num_hidden_layers,
                      num_attention_heads=sizes.num_attention_heads,
                      num_key_value_heads=sizes.num_attention_heads,
                      max_position_embeddings=sizes.max_position_embeddings,
                      bos_token_id=1, eos_token_id=2, pad_token_id=None, tie_word_embeddings=False)
    LlamaForCausalLM(cfg).save_pretrained(llm_dir, safe_serialization=True)

    torch.manual_seed(seed + 1)
    vcfg = CLIPVisionConfig(hidden_size=sizes.clip_hidden_size,
                            intermediate_size=sizes.clip_intermediate_size,
                            num_hidden_layers=sizes.clip_num_hidden_layers,
                            num_attention_heads=sizes.clip_num_attention_heads,
                            image_size=sizes.image_size, patch_size=sizes.patch_size,
                            projection_dim=sizes.clip_hidden_size)
    CLIPVisionModel(vcfg).save_pretrained(clip_dir, safe_serialization=True)
    CLIPImageProcessor(size={"shortest_edge": sizes.image_size},
                       crop_size={"height": sizes.image_size, "width": sizes.image_size}
                       ).save_pretrained(clip_dir)
    with open(meta_path, "w") as f:
        json.dump(meta, f, indent=2)
    return TinyLLaVA(out_dir, llm_dir, clip_dir, seed, sizes)


#: Named CLIP geometries (image side, patch side) for ``--geometry``: ``coin_shaped`` is what the CoIN-shaped
#: synthetic suite needs (16x16 patches of a 96 px image: 256 image tokens, at least two thirds of every prompt).
GEOMETRIES = {"coin_shaped": (96, 6)}


def _parse(argv=None):
    p = argparse.ArgumentParser(prog="python -m llava_dymoe.tiny", description=__doc__.split("\n")[0])
    p.add_argument("out_dir")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--geometry", choices=sorted(GEOMETRIES), default=None,
                   help="a named CLIP geometry that sets --image-size and --patch-size (coin_shaped: 96 px, "
                        "patch 6, 16x16 patches); default: the sizes below")
    p.add_argument("--overwrite", action="store_true", help="rebuild even if OUT_DIR matches")
    for name, default in asdict(TinySizes()).items():
        p.add_argument("--" + name.replace("_", "-"), type=int, default=default, dest=name)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = _parse(argv)
    if args.geometry:
        args.image_size, args.patch_size = GEOMETRIES[args.geometry]
    sizes = TinySizes(**{k: getattr(args, k) for k in asdict(TinySizes())})
    tiny = build_tiny_llava(args.out_dir, seed=args.seed, sizes=sizes, overwrite=args.overwrite)
    print(json.dumps({"llm": tiny.llm, "clip": tiny.clip, "seed": tiny.seed}, indent=2))
    return 0


if __name__ == "__main__":
    from llava_dymoe.errors import run_refusing

    raise SystemExit(run_refusing(main))
