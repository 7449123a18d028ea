# One-command entry points. `make up` and `make test` install what they need first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: install up test lint bench

$(BIN)/semsearch: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The CPU build of torch must come first, or sentence-transformers pulls a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"
	# promtool (Debian package `prometheus`) checks the alert rules in the tests.
	command -v promtool >/dev/null || (apt-get update -qq && apt-get install -y -qq prometheus >/dev/null) || echo "install promtool (package prometheus) for the alert-rule tests"
	touch $(BIN)/semsearch

install: $(BIN)/semsearch

up: install
	HF_HUB_OFFLINE=1 $(BIN)/semsearch up

test: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: install
	bash bench/run_all.sh
