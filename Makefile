# jobmesh: `make up` runs the whole mesh, `make test` runs every check.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install up test gen lint clean

$(STAMP): pyproject.toml package.json
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]' --config-settings editable_mode=compat
	npm install --silent --no-audit --no-fund
	touch $(STAMP)

install: $(STAMP)

## up: create the virtualenv, migrate, start all four processes (Ctrl-C stops them)
up: $(STAMP)
	$(BIN)/jobmesh up

## test: lint, type-check, generated-code drift, buf lint, the whole pytest suite
test: $(STAMP)
	scripts/test-tools.sh
	PATH="$(CURDIR)/$(BIN):$$PATH" scripts/check.sh

## gen: regenerate gen/ from protos/
gen: $(STAMP)
	$(BIN)/python scripts/gen_protos.py

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy .

clean:
	rm -rf $(VENV) node_modules .jobmesh
