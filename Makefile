# One virtual environment in .venv, created on first use; every target below uses it.
# `make demo` installs only the runtime (pip install -e .: no torch); the other targets add torch
# and the dev extra (train, serve and the tools) to the same environment.
PYTHON  ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
RUNTIME := $(VENV)/.runtime
STAMP   := $(VENV)/.installed

.PHONY: demo test lint docs bench clean

$(RUNTIME): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e .
	touch $(RUNTIME)

$(STAMP): $(RUNTIME)
	# The torch/torchvision pair that installs offline here; pyproject.toml itself accepts any recent one.
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

## demo: caption the bundled sample photos with the bundled default model (runtime install only)
demo: $(RUNTIME)
	$(BIN)/rnncap caption examples/

## test: the whole test suite (CPU; GPU tests skip without CUDA)
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

## docs: build the documentation site into site/ (every python block in it runs in `make test`)
docs: $(STAMP)
	$(BIN)/mkdocs build --strict

## lint: ruff (lint, and the format check), the import-linter contracts of pyproject.toml (layers)
lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks scripts
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) build site *.egg-info src/*.egg-info .pytest_cache
