# jobmesh: `make up` runs the whole mesh, `make unit` the fast tests, `make test` every check.
# `make` alone lists the targets.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# buf comes from npm: only the targets that lint protos need Node.
NPM_STAMP := node_modules/.installed

.DEFAULT_GOAL := help
.PHONY: help install up unit check lint fmt gen gen-check lint-protos test test-tools clean

help:  ## list the targets
	@awk -F':.*## ' '/^[a-z-]+:.*## / {printf "  make %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { \
	  echo "jobmesh needs Python 3.11 or newer, and '$(PYTHON)' does not run one: make $(MAKECMDGOALS) PYTHON=python3.x" >&2; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]' --config-settings editable_mode=compat
	touch $@

$(NPM_STAMP): package.json
	npm install --silent --no-audit --no-fund
	touch $@

install: $(STAMP)  ## create .venv and install jobmesh with its development tools

up: $(STAMP)  ## migrate, start all four processes (and Redis if none answers); Ctrl-C stops them
	$(BIN)/jobmesh up

unit: $(STAMP)  ## the unit tests: no database, no Redis, no root, seconds
	$(BIN)/pytest tests/unit -q

check: $(STAMP)  ## ruff format --check, ruff check, mypy (what pre-commit runs)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy .

lint: check

fmt: $(STAMP)  ## ruff format, then ruff check --fix
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

gen: $(STAMP)  ## regenerate gen/ from protos/
	$(BIN)/python scripts/gen_protos.py

gen-check: $(STAMP)  ## fail when gen/ is not what protos/ generate
	$(BIN)/python scripts/gen_protos.py --check

lint-protos: $(NPM_STAMP)  ## buf lint of protos/ (needs Node)
	node_modules/.bin/buf lint

test-tools:  ## install promtool and chromium when missing (apt, as root)
	scripts/test-tools.sh

test: test-tools check gen-check lint-protos  ## test-tools, check, gen-check, lint-protos, then every test (MariaDB, Redis)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/pytest

clean:  ## remove .venv, node_modules and .jobmesh
	rm -rf $(VENV) node_modules .jobmesh
