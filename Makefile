# make test: set up .venv if needed, lint, run the test suite.
# make lint: ruff (lint, import order, format check).
# make setup: only the environment (tools/setup_env.sh).
# VENV (default .venv) and BASE_PYTHON (default python3.11) are overridable.
VENV ?= .venv
BASE_PYTHON ?= python3.11
BIN := $(VENV)/bin
# Set-up reruns only when one of these changes (or the venv is gone).
STAMP := $(VENV)/.xattn_mm-setup-done
SETUP_INPUTS := setup.py tools/setup_env.sh $(wildcard requirements/*.txt)

.PHONY: setup lint format test

setup: $(STAMP)

$(STAMP): $(SETUP_INPUTS)
	VENV=$(VENV) BASE_PYTHON=$(BASE_PYTHON) bash tools/setup_env.sh
	touch $@

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: lint
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest tests
