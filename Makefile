# medpipe: the commands a user types. `make train` and `make test` set up .venv on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MLFLOW_DB := $(CURDIR)/logs/mlflow/mlflow.db
HOST ?= 127.0.0.1
PORT ?= 5000
ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install train test test-all lint ui clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install medpipe with its dev extras (torch pinned to 2.13.0)

train: $(STAMP) ## train the default experiment (synthetic lesions, seeds' CNN); pass ARGS='key=value ...'
	$(BIN)/python -m medpipe.train $(ARGS)

test: $(STAMP) ## run the fast test suite
	$(BIN)/python -m pytest

test-all: $(STAMP) ## run every test, the slow ones too
	$(BIN)/python -m pytest -m ''

lint: $(STAMP) ## ruff lint and format check
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

ui: $(STAMP) ## serve the MLflow UI for the embedded store on http://$(HOST):$(PORT)
	mkdir -p logs/mlflow/artifacts
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(MLFLOW_DB) --default-artifact-root $(CURDIR)/logs/mlflow/artifacts --host $(HOST) --port $(PORT)

clean: ## remove caches and training outputs (keeps .venv, data and the MLflow store)
	rm -rf .pytest_cache .ruff_cache logs/runs logs/multiruns outputs
	find . -name __pycache__ -type d -prune -not -path './.venv/*' -exec rm -rf {} +
