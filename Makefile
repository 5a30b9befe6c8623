# Runwright developer entry points. `make demo` and `make test` work on a fresh
# machine: they create the virtualenv and install everything first.

VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU wheel keeps dev/CI installs small; with a GPU, pyproject's range picks a CUDA build.
TORCH_SPEC ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo 'torch>=2.4,<3' || echo 'torch==2.13.0')
PYTEST_ARGS ?=

.PHONY: install demo test lint format compose-check

$(VENV)/.installed: pyproject.toml sdk/pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev]"
	# The client SDK is its own package (a training machine installs only it); the tests use it too.
	$(PY) -m pip install --quiet -e ./sdk
	touch $@

install: $(VENV)/.installed

## Start the whole product on the embedded default (SQLite, filesystem broker) with a demo run.
demo: install
	$(PY) manage.py demo

## Install everything (Chromium included, where apt is available) and run the whole suite.
test: install
	bash scripts/test.sh $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

## Validate docker-compose.yml (with a filled-in copy of .env.example) and its security rules.
compose-check: install
	$(PY) -m pytest -q tests/webapp/test_production_settings.py
