# llava-dymoe: two commands on a fresh machine.
#   make test   - create .venv if missing, install in the verified order, run the test suite
#   make demo   - same setup, then run the main job on the embedded default (tiny LLaVA, CPU)
#   make setup-llava11 / make test-llava11 - the second supported upstream line (llava-torch 1.1.1,
#                 transformers 4.31.0, the line the continual-tuning forks use) in .venv-llava11
#   make setup-hf / make test-hf - the HF-native hosts (LlavaForConditionalGeneration, Qwen2.5-VL) on
#                 transformers 5.x in .venv-hf (docs/hosts.md)
#   make results - (not in CI) the full study behind docs/results.md
#   make results-harder - (not in CI) the harder suite's study behind docs/results-harder.md (issue 26)
#
# Install order (shared/docs/stack.md): torch first, then llava-torch WITHOUT its dependencies
# (its metadata pins torch==2.0.1 and would pull a CUDA build), then this package.
#
# Variables:
#   TORCH_SPEC  what to install as torch (default torch==2.13.0, the CPU build on these machines).
#               Bring your own CUDA torch: install it in the venv first and run with TORCH_SPEC=
#               (empty) so the torch step is skipped and your build is kept.
#   VENV        virtual environment to create/use (default .venv); point it at an existing env to reuse it.
#   PYTHON      interpreter used to create the venv (default python3).
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
LLAVA_SPEC ?= llava-torch==1.2.2.post1
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.llava_dymoe_installed
PYTEST_ARGS ?=
# The 1.1 line (docs/upstream-lines.md): its own venv; pins and why in requirements/llava-torch-1.1.1.txt.
VENV11 ?= .venv-llava11
LLAVA11_SPEC ?= llava-torch==1.1.1
REQ11 := requirements/llava-torch-1.1.1.txt
PY11 := $(VENV11)/bin/python
PIP11 := $(PY11) -m pip
STAMP11 := $(VENV11)/.llava_dymoe_installed
# The HF-native hosts (docs/hosts.md): their own venv, no llava-torch; pins and why in requirements/hf.txt.
VENVHF ?= .venv-hf
REQHF := requirements/hf.txt
PYHF := $(VENVHF)/bin/python
PIPHF := $(PYHF) -m pip
STAMPHF := $(VENVHF)/.llava_dymoe_installed

.PHONY: setup test test-slow demo results results-harder bench clean setup-llava11 test-llava11 setup-hf test-hf

setup: $(STAMP)

$(STAMP): setup.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@if [ -n "$(TORCH_SPEC)" ]; then $(PIP) install -q "$(TORCH_SPEC)"; \
	 else echo "TORCH_SPEC is empty: keeping the torch already in $(VENV)"; $(PY) -c "import torch"; fi
	$(PIP) install -q --no-deps "$(LLAVA_SPEC)"
	$(PIP) install -q -e ".[test,plots]"
	@touch $@

test: $(STAMP)
	$(PY) -m pytest -m "not slow" -q $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(PY) -m pytest -m slow -q $(PYTEST_ARGS)

# llava_dymoe goes in with --no-deps: its install_requires pin the 1.2 line (transformers 4.37.2);
# the 1.1 line's stack comes from $(REQ11).
setup-llava11: $(STAMP11)

$(STAMP11): setup.py $(REQ11)
	@test -x $(PY11) || $(PYTHON) -m venv $(VENV11)
	@if [ -n "$(TORCH_SPEC)" ]; then $(PIP11) install -q "$(TORCH_SPEC)"; \
	 else echo "TORCH_SPEC is empty: keeping the torch already in $(VENV11)"; $(PY11) -c "import torch"; fi
	$(PIP11) install -q --no-deps "$(LLAVA11_SPEC)"
	$(PIP11) install -q -r $(REQ11)
	$(PIP11) install -q --no-deps -e .
	@touch $@

# Every test marked `llava11` (tests that touch upstream code and hold on both lines, plus the 1.1 line's
# own tests/lines/); tests of 1.2-only features skip there with the reason.
test-llava11: $(STAMP11)
	$(PY11) -m pytest -m "llava11 and not slow" -q $(PYTEST_ARGS)

# The HF hosts: torch first (TORCH_SPEC), then $(REQHF), then llava_dymoe with --no-deps (its
# install_requires pin the 1.2 line's transformers 4.37.2). No llava-torch here.
setup-hf: $(STAMPHF)

$(STAMPHF): setup.py $(REQHF)
	@test -x $(PYHF) || $(PYTHON) -m venv $(VENVHF)
	@if [ -n "$(TORCH_SPEC)" ]; then $(PIPHF) install -q "$(TORCH_SPEC)"; \
	 else echo "TORCH_SPEC is empty: keeping the torch already in $(VENVHF)"; $(PYHF) -c "import torch"; fi
	$(PIPHF) install -q -r $(REQHF)
	$(PIPHF) install -q --no-deps -e .
	@touch $@

# tests/hf (they skip in the other two venvs) and the host-layer tests; the rest of the suite needs upstream llava.
test-hf: $(STAMPHF)
	$(PYHF) -m pytest tests/hf tests/test_hosts.py -m "not slow" -q $(PYTEST_ARGS)

demo: $(STAMP)
	$(PY) -m llava_dymoe.demo

# Not in CI: every method, the ablation ladder, the tau sweep and the width study over 3 seeds
# (hours on 2 CPU cores; resumable). RESULTS_ARGS e.g. "--groups methods --jobs 2".
results: $(STAMP)
	$(PY) -m llava_dymoe.study --output-dir results_out --doc docs/results.md $(RESULTS_ARGS)

# Not in CI: the harder suite (coin_shaped, issue 26): eight methods x two task orders x 3 seeds, then the candidate
# changes to dymoe_plus (anchored_keys since 2026-12-07) in CoIN's order (docs/study.md says how long; resumable). Its base model and suite live
# beside the default's under results_out.
results-harder: $(STAMP)
	$(PY) -m llava_dymoe.study --groups harder harder_candidates --output-dir results_out --doc docs/results-harder.md $(RESULTS_ARGS)

bench: $(STAMP)
	$(PY) benchmarks/bench_layer.py

clean:
	rm -rf $(VENV) $(VENV11) $(VENVHF) demo_out results_out .pytest_cache
