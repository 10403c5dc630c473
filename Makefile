# WedSync Realtime: the two commands (`make run`, `make test`) and their helpers.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
export HOST PORT

.PHONY: run cluster test lint audit lock format bench conformance conformance-install install install-dev clean

# Installs come from the locks, every file checked against a hash in them; requirements.txt and
# requirements-dev.txt are what people edit, `make lock` turns them into the locks (README "Dependencies").
PIP_INSTALL := $(BIN)/pip install --quiet --disable-pip-version-check --require-hashes
PIP_COMPILE := $(BIN)/pip-compile --quiet --generate-hashes --allow-unsafe \
	--no-emit-index-url --no-emit-find-links $(if $(UPGRADE),--upgrade)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed-runtime: requirements.lock | $(BIN)/python
	$(PIP_INSTALL) -r requirements.lock
	touch $@

$(VENV)/.installed-dev: requirements.lock requirements-dev.lock | $(BIN)/python
	$(PIP_INSTALL) -r requirements-dev.lock
	touch $@ $(VENV)/.installed-runtime

install: $(VENV)/.installed-runtime
install-dev: $(VENV)/.installed-dev

## Re-resolve the locks after an edit of requirements.txt or requirements-dev.txt, keeping every pin
## that still fits (UPGRADE=1: the newest releases the inputs allow). The dev lock is held to the
## runtime lock's versions, so both install the same runtime set.
lock: install-dev
	$(PIP_COMPILE) -o requirements.lock requirements.txt
	$(PIP_COMPILE) -c requirements.lock -o requirements-dev.lock requirements-dev.txt

## pip-audit over the locked set; says AUDIT NOT RUN where its vulnerability service does not answer.
audit: install-dev
	bin/audit

## The deployed layout on this machine (docs/deployment.md): PostgreSQL, Redis with a replica and three
## sentinels, two nodes, a worker with beat, nginx on http://localhost:8100/; Ctrl-C stops it all.
cluster: install-dev
	$(BIN)/python bin/cluster.py

## Serve on http://$(HOST):$(PORT): daphne plus a Celery worker with beat; Ctrl-C stops both.
run: install
	bin/run

## The whole suite; uses PostgreSQL and Redis when they answer and names what it could not run.
test: install-dev node_modules/.installed
	$(BIN)/pytest

## The JS client's test tools (package-lock.json): terser, to hold the client to its size budget.
node_modules/.installed: package.json package-lock.json
	npm ci --ignore-scripts --no-audit --no-fund
	touch $@

## ruff (lint and format check), mypy and the audit of the locked set.
lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .
	bin/audit

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
	rm -rf var .pytest_cache .mypy_cache .ruff_cache .conformance node_modules
