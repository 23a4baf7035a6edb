# Two commands on a fresh machine: `make serve` serves the models in model_label/, `make test` passes the tests.
# Both create the virtual environment at .venv first with Python 3.11, then install by role (pyproject.toml's
# extras) with every version pinned by constraints.txt: `make serve` what a CPU serving node needs (no TensorFlow,
# torch or ultralytics, ~1 GB), `make test` everything (~9 GB). Each install runs again when pyproject.toml or
# constraints.txt changes. `make constraints` writes constraints.txt again from a fresh test install.

VENV := .venv
BIN := $(VENV)/bin
PYTHON ?= $(shell command -v python3.11 || command -v python3 || echo python3.11)
PIP_INSTALL := $(BIN)/pip install --quiet -c constraints.txt
# Ultralytics stays offline and keeps its settings inside the repo: set here for every process a target starts, before
# any Python runs (Python code sets the same through pipeline/core/yolo_offline.py's offline_environment; Ray's
# workers get them from serve_config.yaml's runtime_env).
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

.PHONY: setup serve test test-fast lint constraints

setup: $(VENV)/.installed-test

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null || { \
	    echo "Python 3.11 is needed (pyproject.toml: requires-python); found: $$($(PYTHON) --version 2>&1)." \
	         "Install python3.11, or name one: make PYTHON=/path/to/python3.11 ..." >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed-serve: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP_INSTALL) -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP_INSTALL) -e '.[test]'
	touch $@ $(VENV)/.installed-serve

serve: $(VENV)/.installed-serve
	$(BIN)/serve run serve_config.yaml

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest

# The fast tier, in seconds: every test that needs no model, no photos, no Ray and no training (pyproject.toml's
# markers): the ingress's HTTP behaviour with stand-in model handles, the deployments' own logic, the recognition
# core, preprocessing, the pipelines' data handling and the client's side. `make test` runs it too.
test-fast: $(VENV)/.installed-test
	$(BIN)/python -m pytest -m "not (models or data or cluster or train)"

# Lint (ruff) and types (mypy on deployments/ and pipeline/), as configured in pyproject.toml; CI runs it first.
lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/mypy

# constraints.txt again: every package of a fresh test install, at the versions pip picks today (review the diff).
constraints:
	rm -rf $(VENV)-constraints
	$(PYTHON) -m venv $(VENV)-constraints
	$(VENV)-constraints/bin/pip install --quiet --upgrade pip
	$(VENV)-constraints/bin/pip install --quiet '.[test]'
	{ echo "# Every package of the test install, pinned: make and deploy/'s Dockerfiles install with pip -c this file."; \
	  echo "# Written by \`make constraints\` (Python 3.11, x86_64 Linux); edit pyproject.toml, not this file."; \
	  $(VENV)-constraints/bin/pip freeze --exclude product-recognition; } > constraints.txt
	rm -rf $(VENV)-constraints build
