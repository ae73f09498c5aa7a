# The two commands a newcomer needs: `make run` and `make test`. See README.md.
VENV ?= .venv
PYTHON ?= python3.11
PY := $(VENV)/bin/python
REQ_HASH := $(shell cat requirements.txt requirements-dev.txt | sha256sum | cut -c1-16)
RUNTIME_STAMP := $(VENV)/.runtime-$(REQ_HASH)
DEV_STAMP := $(VENV)/.dev-$(REQ_HASH)
# The suite runs on PostgreSQL (the production database); this local server is its default.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/samgen
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test test-fast lint format bench venv

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(RUNTIME_STAMP): requirements.txt | $(PY)
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(DEV_STAMP): requirements.txt requirements-dev.txt | $(PY)
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@ $(RUNTIME_STAMP)

venv: $(RUNTIME_STAMP)

## Set up (venv, install, migrate, first admin) and serve the ASGI app on http://$(HOST):$(PORT)
# DEBUG is on for local use only (the settings refuse it with a non-local ALLOWED_HOSTS).
run: $(RUNTIME_STAMP)
	DEBUG=true $(PY) manage.py migrate --noinput
	DEBUG=true $(PY) manage.py ensure_admin
	DEBUG=true $(PY) manage.py runserver $(HOST):$(PORT)

## Install what the tests need (incl. Debian's Chromium) and run lint + the whole suite
test: $(DEV_STAMP)
	scripts/ensure-chromium.sh
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} $(PY) -m pytest

test-fast: $(DEV_STAMP)
	DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} $(PY) -m pytest -m "not slow and not browser" -x -q

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(DEV_STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: $(DEV_STAMP)
	$(PY) bench/imaging_bench.py
