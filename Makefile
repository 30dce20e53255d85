# Make targets for hybrid-posttrain. Each target uses the active virtual environment, or creates and
# uses ./.venv when none is active. CPU install path pins torch==2.13.0 (a local CPU build).
SHELL := /bin/bash
ifdef VIRTUAL_ENV
VENV := $(VIRTUAL_ENV)
else
VENV := $(CURDIR)/.venv
endif
PY := $(VENV)/bin/python
HPT := $(VENV)/bin/hpt
STAMP := $(VENV)/.hpt-installed
RECIPE ?=
SWEEP ?= teachers/sweeps/demo.yaml
RUN ?= runs/demo-sft
SUITES ?= toyworld-facts toyworld-facts-mc toyworld-programs
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install test test-fast demo sft dpo rl sweep eval report bench bench-kernels bench-step lint validate

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -x --durations=15 tests

lint: $(STAMP)
	$(VENV)/bin/ruff check hybrid_posttrain tests benchmarks

validate: $(STAMP)
	$(HPT) validate recipes teachers evals

demo: $(STAMP)
	$(HPT) sweep teachers/sweeps/demo.yaml --resume

sft: $(STAMP)
	$(HPT) run $(or $(RECIPE),recipes/demo/sft.yaml) --output-dir runs/demo-sft

dpo: $(STAMP)
	$(HPT) run $(or $(RECIPE),recipes/demo/dpo.yaml) --output-dir runs/demo-dpo

rl: $(STAMP)
	$(HPT) run $(or $(RECIPE),recipes/demo/rl.yaml) --output-dir runs/demo-rl

sweep: $(STAMP)
	$(HPT) sweep $(SWEEP) --resume

eval: $(STAMP)
	$(HPT) eval --model $(RUN)/final --suites $(SUITES) --output-dir $(RUN)/eval

report: $(STAMP)
	$(HPT) report $(RUN) --out $(RUN)/report

bench: bench-kernels bench-step

bench-kernels: $(STAMP)
	$(PY) benchmarks/gdn.py

bench-step: $(STAMP)
	$(PY) benchmarks/train_step.py
