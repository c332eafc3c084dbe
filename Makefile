# Two commands do all the set-up on a fresh machine: `make up` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
TSTAMP := $(VENV)/.installed-test-stamp

.PHONY: install install-test up run status lint test test-fast docs clean

# `make up` installs the platform alone; `make test` adds the test tools and the scale-out extras.
# uv installs what pip would (same resolver inputs: pyproject.toml) in about half the time on a
# fresh machine (35 s vs 66 s for the test extras, measured Dec 3).
# Bytecode: where PYTHONDONTWRITEBYTECODE is set (as on this CI image), every process would compile
# what it imports, every time; the tests start hundreds. uv compiles the installed packages up front
# on both cores (13 s wall; .ci/run overlaps it with apt); the tests write the rest (the platform's
# own modules) on first import (`env -u` in PYTEST below).
UV := $(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python

VENV_READY := test -x $(BIN)/python || $(PYTHON) -m venv $(VENV); \
	test -x $(BIN)/uv || $(BIN)/python -m pip install --quiet uv

$(STAMP): pyproject.toml
	$(VENV_READY)
	$(UV) -e .
	touch $(STAMP)

# The platform and the extras in one resolution (a fresh machine: 16 s instead of 24 s for two).
$(TSTAMP): pyproject.toml
	$(VENV_READY)
	$(UV) -e ".[test,scale]"
	touch $(STAMP) $(TSTAMP)

install: $(STAMP)

install-test: $(TSTAMP)

## Dagster UI + daemon (sensors running) + endpoint; writes demo data on first start.
up: install
	$(BIN)/ml-platform up

## Headless: every pending landing file through the whole graph once.
run: install
	$(BIN)/ml-platform run

status: install
	$(BIN)/ml-platform status

## Style and the layer rules (ruff, import-linter).
lint: install-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

# The tests' temp dirs (pytest's tmp_path: every Dagster instance, MLflow store and landing zone the
# tests make) on tmpfs when there is one with 4 GB free: a SQLite commit there costs no fsync
# (0.2 ms instead of 3 ms on a VM disk; the suite makes tens of thousands). pytest keeps the last 3
# runs' dirs. `make test TEST_TMPDIR=/tmp` keeps them on disk.
TEST_TMPDIR ?= $(shell [ -w /dev/shm ] && [ "$$(df -Pk /dev/shm | awk 'NR==2 {print $$4}')" -gt 4000000 ] \
	&& echo /dev/shm || echo $${TMPDIR:-/tmp})
# One thread per OpenMP / OpenBLAS pool: three workers already share two cores, and idle pool
# threads spin-wait on a core another process needs. The platform's own fits and predictions run
# on one thread already (core/compute.py); this reaches the rest (NumPy / SciPy linear algebra,
# scikit-learn outside those blocks, the tests' own calls): benchmarks/README.md has the figures.
PYTEST := env -u PYTHONDONTWRITEBYTECODE OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 TMPDIR=$(TEST_TMPDIR) \
	$(BIN)/python -m pytest

## The whole suite: lint, unit, integration (real Dagster + MLflow), end-to-end (real processes).
## Whole files per worker, the slowest first (ml_platform_tests/conftest.py); without
## --no-loadscope-reorder, xdist hands out the files with the most tests first, which left the
## one-test end-to-end files (the slowest) for the end. Three workers on two cores: a third of the
## end-to-end tests' time is waiting (for sensors, servers, a process's start-up), which the third
## worker fills (CPU use went from 68 % of the two cores to ~90 %).
test: lint
	$(PYTEST) -n 3 --dist loadfile --no-loadscope-reorder -q --durations=15

## Lint + unit tests (under a minute).
test-fast: lint
	$(PYTEST) -q -n 2 ml_platform_tests/unit

## docs/configuration.md, generated from the field descriptions in ml_platform/settings/.
docs: install
	$(BIN)/python -m ml_platform.config_reference --write

clean:
	rm -rf .ml_platform data/landing
