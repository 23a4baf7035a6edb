# Two commands on a fresh machine: `make serve` serves the models in model_label/, `make test` passes the tests.
# Both create the virtual environment at .venv first (once; again when pyproject.toml changes).

VENV := .venv
BIN := $(VENV)/bin
# Ultralytics stays offline and keeps its settings inside the repo.
export YOLO_OFFLINE := 1
export YOLO_AUTOINSTALL := 0
export YOLO_CONFIG_DIR := $(CURDIR)/.yolo
# Ray's control plane (job API, dashboard, GCS, raylet, agents) is no open door: token auth on (the local
# `ray.init` writes ~/.ray/auth_token; `ray get-auth-token` prints it; `serve status`/`serve deploy` send it when
# RAY_AUTH_MODE=token), and the local node on 127.0.0.1 (Ray's single-machine mode, its default on macOS and
# Windows): beyond loopback only the HTTP port (8000) answers without the token (docs/security.md).
# Same values as load_tests/local_ray.py, which the tests and load tests use.
export RAY_AUTH_MODE ?= token
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER ?= 0

.PHONY: setup serve test test-fast lint

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

# The fast tier, in seconds: every test that needs no model, no photos, no Ray and no training (pyproject.toml's
# markers): the ingress's HTTP behaviour with stand-in model handles, the deployments' own logic, the recognition
# core, preprocessing, the pipelines' data handling and the client's side. `make test` runs it too.
test-fast: setup
	$(BIN)/python -m pytest -m "not (models or data or cluster or train)"

# Lint (ruff) and types (mypy on deployments/ and pipeline/), as configured in pyproject.toml; CI runs it first.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy
