# make test: set up .venv if needed, lint, run the test suite.
# make lint: ruff (lint, import order, format check).
# make setup: only the environment (tools/setup_env.sh).
# make demo: generate the embedded one-shot dataset, train IA-DETR on it on
#   the CPU, print the seen / unseen AP50 table and draw predictions.
# VENV (default .venv) and BASE_PYTHON (default python3.11) are overridable.
VENV ?= .venv
BASE_PYTHON ?= python3.11
BIN := $(VENV)/bin
# Set-up reruns only when one of these changes (or the venv is gone).
STAMP := $(VENV)/.xattn_mm-setup-done
SETUP_INPUTS := setup.py tools/setup_env.sh $(wildcard requirements/*.txt)

.PHONY: setup lint format test demo

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

DEMO_DIR ?= work_dirs/demo
DEMO_CONFIG := configs/ia_detr/synthetic_oneshot.py

# Training skips its end-of-run validation: the report evaluates.
demo: setup
	$(BIN)/python tools/data/generate_synthetic_oneshot.py data/synthetic_oneshot
	$(BIN)/python tools/train.py $(DEMO_CONFIG) --work-dir $(DEMO_DIR) \
		--cfg-options train_cfg.val_interval=1000
	$(BIN)/python tools/analysis_tools/one_shot_report.py $(DEMO_CONFIG) \
		"$$(cat $(DEMO_DIR)/last_checkpoint)" --work-dir $(DEMO_DIR)
