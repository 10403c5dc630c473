# WedSync Realtime: the two commands (`make run`, `make test`) and their helpers.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
export HOST PORT

.PHONY: run test lint format bench conformance conformance-install install install-dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed-runtime: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@ $(VENV)/.installed-runtime

install: $(VENV)/.installed-runtime
install-dev: $(VENV)/.installed-dev

## Serve on http://$(HOST):$(PORT): daphne plus a Celery worker with beat; Ctrl-C stops both.
run: install
	bin/run

## The whole suite; uses PostgreSQL and Redis when they answer and names what it could not run.
test: install-dev
	$(BIN)/pytest

## ruff (lint and format check) and mypy.
lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .

## Every scenario against the product, the ceiling and the textbook baseline, side by side; a few
## minutes (FULL=1: the full sizes, tens of minutes). Needs PostgreSQL and Redis; see docs/benchmarks.md.
bench: install-dev
	$(BIN)/python -m bench $(if $(FULL),--full) $(BENCH_ARGS)

## The Autobahn testsuite (cases 1-7, 9, 10) against a daphne node running the product's socket stack
## behind the test-only echo route; rewrites docs/conformance.md. Needs Python 2.7 (pyenv 2.7.18);
## the suite is installed into .conformance/ on first use. `make test` runs the same check.
conformance: install-dev
	$(BIN)/python -m tests.conformance.autobahn

conformance-install: install-dev
	$(BIN)/python -m tests.conformance.autobahn --install-only

format: install-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache .conformance
