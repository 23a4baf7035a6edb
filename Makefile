# Two commands on a fresh machine: `make serve` serves the models in model_label/, `make test` passes the tests.
# Both create the virtual environment at .venv first (once; again when pyproject.toml changes).

VENV := .venv
BIN := $(VENV)/bin
# Ultralytics stays offline and keeps its settings inside the repo; Ray token auth stays consistent for the CLI.
export YOLO_OFFLINE := 1
export YOLO_AUTOINSTALL := 0
export YOLO_CONFIG_DIR := $(CURDIR)/.yolo
export RAY_AUTH_MODE ?= disabled

.PHONY: setup serve test

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

serve: setup
	$(BIN)/serve run serve_config.yaml

test: setup
	$(BIN)/python -m pytest
