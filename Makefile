# kaelab — `make run` (set-up + the main job) and `make test` (set-up + the test suite).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.kaelab-installed
# MNIST: $KAELAB_DATA_DIR if set, else this workplace's copy (../shared/data next to the checkout, or
# /work/shared/data for a clone elsewhere) when it exists, else ./data.
SHARED_DATA := $(firstword $(foreach d,../shared/data /work/shared/data,$(if $(wildcard $(d)/MNIST/raw),$(abspath $(d)))))
export KAELAB_DATA_DIR ?= $(or $(SHARED_DATA),$(CURDIR)/data)
PYTEST_ARGS ?=
# make test runs the suite in this many processes (pytest-xdist; every test has its own tmp dirs)
TEST_WORKERS ?= 2

.PHONY: help setup run test test-slow lint bench mutate docs clean distclean

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev,docs]"
	touch $(STAMP)

setup: $(STAMP)  ## create .venv and install kaelab (editable) with pinned torch; quick when up to date

run: setup  ## the main job: python -m kaelab (no download, no account); ends with the path of its report.html
	$(PY) -m kaelab $(ARGS)

test: setup  ## the fast test suite
	@echo "KAELAB_DATA_DIR=$(KAELAB_DATA_DIR)"
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal --durations=25 $(PYTEST_ARGS)

test-slow: setup  ## the long tests (real training to paper-level numbers)
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS)

lint: setup  ## ruff lint + format check
	$(PY) -m ruff check kaelab tests scripts
	$(PY) -m ruff format --check kaelab tests scripts

bench: setup  ## benchmarks -> outputs/bench/*.json
	$(PY) scripts/bench.py $(ARGS)

mutate: setup  ## mutation testing: every wrong implementation in tests/mutations/ must fail its tests (~40 min; not in make test; ARGS="--stage edit")
	$(PY) scripts/mutate.py $(ARGS)

docs: setup  ## the documentation site -> site/ (mkdocs build --strict: a broken link or reference fails)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict -d site/

clean:  ## remove run outputs and caches (keeps .venv)
	rm -rf outputs/runs outputs/multirun outputs/cache outputs/bench site docs/img .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean  ## also remove the virtual environment
	rm -rf $(VENV) *.egg-info
