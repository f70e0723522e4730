# Every command CI and the README use. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(CURDIR)/$(VENV)/bin/python
# The services import the shared package from the repository root.
export PYTHONPATH := $(CURDIR)
# The commands that run a service read .env (see .env.example) when there is one; its values
# win over the shell's. The tests never read it: they make their own database and vhost.
LOAD_ENV := set -a; [ ! -f $(CURDIR)/.env ] || . $(CURDIR)/.env; set +a;

.PHONY: help install api worker run redrive chaos chaos-short openapi db smoke test test-unit test-integration lint format clean bench bench-smoke

help: ## List the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

install: $(VENV)/.installed ## Create .venv with both services' requirements and the dev tools

$(VENV)/.installed: api-service/requirements.txt worker-service/requirements.txt requirements-dev.txt requirements-test.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r api-service/requirements.txt \
		-r worker-service/requirements.txt -r requirements-dev.txt
	touch $@

api: install ## Run the API in the foreground (configured by environment variables)
	$(LOAD_ENV) cd api-service/src && exec $(PY) main.py

worker: install ## Run the worker in the foreground
	$(LOAD_ENV) cd worker-service/src && exec $(PY) main.py

run: install ## Run the API and the worker together; Ctrl-C stops both
	@trap 'kill 0' INT TERM; $(MAKE) --no-print-directory api & $(MAKE) --no-print-directory worker & wait

redrive: install ## Move dead-lettered task messages back to the work queue
	$(LOAD_ENV) cd worker-service/src && $(PY) redrive.py

chaos: install ## Fault-injection run, N=2,000 (ARGS=--write-docs puts the table in docs/reliability.md)
	$(PY) -m chaos $(ARGS)

chaos-short: install ## The same with N=200 (runs in make test too)
	$(PY) -m chaos --short $(ARGS)

openapi: install ## Write the API's OpenAPI document to docs/openapi.json
	cd api-service/src && $(PY) export_openapi.py

db: install ## Create the database in DATABASE_URL if missing and load db/init.sql
	$(LOAD_ENV) $(PY) -m common.mysql.schema

test: install ## All unit and integration tests (a scratch database and vhost of their own)
	cd api-service && $(PY) -m pytest
	cd worker-service && $(PY) -m pytest
	$(PY) -m bench --smoke
	$(PY) -m pytest

smoke: install ## Both services run as their Dockerfiles' CMDs run them, one task to COMPLETED
	$(PY) -m pytest tests/test_smoke.py

test-unit: install ## Only the tests that need no services
	cd api-service && $(PY) -m pytest -m unit
	cd worker-service && $(PY) -m pytest -m unit
	$(PY) -m pytest -m unit

lint: install ## ruff (lint and format check) and mypy (strict)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	cd api-service && MYPYPATH=src:.. $(PY) -m mypy --config-file ../pyproject.toml src tests
	cd worker-service && MYPYPATH=src:.. $(PY) -m mypy --config-file ../pyproject.toml src tests
	$(PY) -m mypy common testkit tests chaos bench
	$(PY) -m check_jsonschema --builtin-schema vendor.compose-spec docker-compose.yml
	$(VENV)/bin/hadolint api-service/Dockerfile worker-service/Dockerfile

format: install ## Apply ruff's fixes and formatting
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

clean: ## Remove .venv and caches
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache */.pytest_cache

bench: install ## Benchmark the services against their targets (~6 min); writes docs/benchmarks.md
	$(PY) -m bench

bench-smoke: install ## The benchmark suite's code path, a few seconds per measurement
	$(PY) -m bench --smoke
