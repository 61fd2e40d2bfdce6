# medpipe: the commands a user types. `make train` and `make test` set up .venv on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MLFLOW_DB := $(CURDIR)/logs/mlflow/mlflow.db
# `=`, not `?=`: an exported HOST (zsh and some containers set it to the machine's name) must not
# expose the UI; `make ui HOST=0.0.0.0` still does, knowingly (README: Hostile input).
HOST = 127.0.0.1
PORT ?= 5000
ARGS ?=
# MLflow 3 sends usage telemetry to its vendor unless told not to; nothing leaves this machine
# (README: Privacy). `make ui MLFLOW_DISABLE_TELEMETRY=false` allows it.
export MLFLOW_DISABLE_TELEMETRY ?= true

.DEFAULT_GOAL := help
.PHONY: help install train repro test test-all lint ui clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install medpipe with its dev extras (torch pinned to 2.13.0)

train: $(STAMP) ## train the default experiment (synthetic lesions, seeds' CNN); pass ARGS='key=value ...'
	$(BIN)/python -m medpipe.train $(ARGS)

repro: $(STAMP) ## reproduce the DVC pipeline (prepare -> train -> evaluate); re-runs only what changed
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro $(ARGS)

test: $(STAMP) ## run the fast test suite
	$(BIN)/python -m pytest

test-all: $(STAMP) ## run every test, the slow ones too
	$(BIN)/python -m pytest -m ''

lint: $(STAMP) ## ruff lint and format check
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

ui: $(STAMP) ## serve the MLflow UI for the embedded store on http://$(HOST):$(PORT)
	mkdir -p logs/mlflow/artifacts
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(MLFLOW_DB) --default-artifact-root $(CURDIR)/logs/mlflow/artifacts --host $(HOST) --port $(PORT)

# The same store as `make ui` (runs trained with or without the server are browsed together);
# runs sent over HTTP put their artifacts under logs/mlflow/artifacts too. Parallel sweep jobs log
# through the server instead of writing to the sqlite file themselves.
.PHONY: mlflow-server compare
mlflow-server: $(STAMP) ## MLflow tracking server on http://$(HOST):$(PORT) for parallel sweeps (same store as ui)
	mkdir -p logs/mlflow/artifacts
	@echo "In the shell that trains:  export MLFLOW_TRACKING_URI=http://$(HOST):$(PORT)"
	$(BIN)/mlflow server --backend-store-uri sqlite:///$(MLFLOW_DB) --artifacts-destination $(CURDIR)/logs/mlflow/artifacts --host $(HOST) --port $(PORT)

compare: $(STAMP) ## list and compare MLflow runs; pass ARGS='experiment=NAME sweep=latest sort=val/auroc'
	$(BIN)/python -m medpipe.compare $(ARGS)

# Measured comparisons, not tests: JSON and markdown under benchmarks/results/ (benchmarks/README.md).
# ARGS go to benchmarks/run_all.py, e.g. ARGS='--threads 2' on a quiet machine, ARGS='--only startup'.
.PHONY: bench bench-gpu
bench: $(STAMP) ## run the CPU benchmarks (about 10 min on 2 cores); results in benchmarks/results/
	$(BIN)/python -m benchmarks.run_all --set cpu $(ARGS)

bench-gpu: $(STAMP) ## run the GPU benchmarks (needs CUDA); results in benchmarks/results/
	$(BIN)/python -m benchmarks.run_all --set gpu $(ARGS)

clean: ## remove caches and training outputs (keeps .venv, data and the MLflow store)
	rm -rf .pytest_cache .ruff_cache logs/runs logs/multiruns outputs
	find . -name __pycache__ -type d -prune -not -path './.venv/*' -exec rm -rf {} +
