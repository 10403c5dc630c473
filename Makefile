# WedSync Realtime: the two commands (`make run`, `make test`) and their helpers.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
export HOST PORT

.PHONY: run test lint format bench install install-dev clean

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

## The room scenario side by side with the ceiling and the textbook baseline (needs PostgreSQL and Redis).
bench: install-dev
	$(BIN)/python -m bench.room --members 200 --rate 50 --seconds 10 --servers product,ceiling,baseline

format: install-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
