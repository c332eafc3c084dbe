# Two commands do all the set-up on a fresh machine: `make up` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install up run status test test-fast bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,scale]"
	touch $(STAMP)

install: $(STAMP)

## Dagster UI + daemon (sensors running) + endpoint; writes demo data on first start.
up: install
	$(BIN)/ml-platform up

## Headless: every pending landing file through the whole graph once.
run: install
	$(BIN)/ml-platform run

status: install
	$(BIN)/ml-platform status

## The whole suite: unit, integration (real Dagster + MLflow), end-to-end (real processes).
test: install
	$(BIN)/python -m pytest -n 2 --dist loadfile -q --durations=15

## Unit tests only (seconds).
test-fast: install
	$(BIN)/python -m pytest -q ml_platform_tests/unit

clean:
	rm -rf .ml_platform data/landing
