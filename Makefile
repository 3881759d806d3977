# Two commands do everything on a fresh machine:
#   make train   bootstrap .venv, then the demo job (preprocess, train SoVITS and GPT, synthesize)
#   make test    bootstrap .venv, then the test suite (2 xdist workers, persistent XLA cache)
# Other targets: make lint, make bench (the tests marked bench, then step throughput), make ablation (learning-rate schedules), make clean.

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CONFIG ?= configs/tiny.yaml
WORKDIR ?= runs/demo
JOBS ?= 2

# Persistent XLA compilation cache: recompiles of an unchanged step are loaded from disk.
export JAX_COMPILATION_CACHE_DIR ?= $(CURDIR)/.cache/jax
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS ?= 0.5
export JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES ?= 0

# The first Python >= 3.12 among: $PYTHON, python3.13, python3.12, python3, then pyenv's installs.
find_python = for p in $${PYTHON:-} python3.13 python3.12 python3 $$(ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.1[2-9]*/bin/python3 2>/dev/null | sort -rV); do \
	  if [ -n "$$p" ] && "$$p" -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; then command -v "$$p" || echo "$$p"; exit 0; fi; \
	done; echo "no Python >= 3.12 found: install python3.12 or set PYTHON=/path/to/python" >&2; exit 1

.PHONY: train test lint bench ablation clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	@py=$$($(find_python)) && echo "using $$py ($$($$py --version))" && \
	  { [ -x $(PY) ] || "$$py" -m venv $(VENV); }
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

train: $(STAMP)
	$(VENV)/bin/gptsovits-jax demo --config $(CONFIG) --workdir $(WORKDIR)

test: $(STAMP)
	$(PY) -m pytest -n $(JOBS) --durations=15 tests

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Preloads jemalloc (apt-get install libjemalloc2) into each configuration's process when installed: see --allocator.
bench: $(STAMP)
	$(PY) -m pytest -n $(JOBS) -m bench tests
	$(PY) benchmarks/step_throughput.py --out benchmarks/results/step_throughput_cpu.jsonl

ablation: $(STAMP)
	$(PY) benchmarks/lr_ablation.py --sovits-seeds 1234 1235 1236 --gpt-seeds 1234 1235 1236

clean:
	rm -rf $(VENV) .cache runs cache
