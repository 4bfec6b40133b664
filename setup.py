"""llava-dymoe: DyMoE continual instruction tuning as a plugin for upstream LLaVA.

``llava-torch`` is deliberately absent from ``install_requires``: its wheel metadata pins
torch==2.0.1 (and gradio, bitsandbytes, ...), so a resolver would replace the user's torch
with a multi-GB CUDA build.  Install it separately with ``pip install --no-deps
llava-torch==1.2.2.post1`` (the Makefile does this); ``llava_dymoe`` checks its version at
run time and says how to fix a mismatch.
"""
from setuptools import find_packages, setup

setup(
    name="llava-dymoe",
    version="0.1.0",
    description="LLaVA-DyMoE: dynamic MoE-LoRA with drift-aware token assignment for "
    "continual instruction tuning of LLaVA (plugin for llava-torch 1.2.2.post1)",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["llava_dymoe", "llava_dymoe.*"]),
    python_requires=">=3.10",
    install_requires=[
        # torch itself is installed first by the Makefile (TORCH_SPEC) so a user's CUDA build is kept.
        "torch>=2.1",
        "transformers==4.37.2",
        "tokenizers==0.15.1",
        "sentencepiece",
        "protobuf",
        "accelerate>=0.30,<1.0",
        "peft>=0.10,<0.14",
        "deepspeed>=0.16",
        "safetensors",
        "pillow",
        "numpy",
        "pyyaml",
        "tqdm",
        "shortuuid",
    ],
    extras_require={
        # pycocoevalcap: UCIT's caption metrics (needs Java at run time); in "test" so `make test` gets it
        "test": ["pytest>=7", "pytest-timeout", "pycocoevalcap==1.2"],
        "plots": ["matplotlib"],
        "captions": ["pycocoevalcap==1.2"],
    },
    entry_points={"console_scripts": ["llava-dymoe = llava_dymoe.console:main"]},
    package_data={"llava_dymoe": ["py.typed"]},
    include_package_data=True,
)
