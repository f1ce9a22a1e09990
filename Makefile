# Developer entry points. A fresh clone needs only `make test`: the venv is built on demand.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Touched after a successful install; older than pyproject.toml means "reinstall".
STAMP := $(VENV)/.stamp

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DELETE_ON_ERROR:
.DEFAULT_GOAL := test

.PHONY: venv demo test lint bench torture fuzz clean distclean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[dev]'
	touch $@

demo: venv
	$(BIN)/python -m hakit demo

test: venv
	$(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: venv
	$(BIN)/python -m bench

# Seeded fault schedules on an in-process cluster (see torture/__init__.py), niced and bounded:
#   make torture SEED=0 SCHEDULES=10000 MINUTES=9 TORTURE_ARGS=--record
SEED ?= 0
SCHEDULES ?= 1000
MINUTES ?= 9
torture: venv
	nice -n 10 $(BIN)/python -m torture --seed $(SEED) --schedules $(SCHEDULES) \
		--minutes $(MINUTES) $(TORTURE_ARGS)

# The frame fuzzer's full run (fuzz/RESULTS.md): 1,000,000 frames or 10 minutes, niced.
FUZZ_ARGS ?= --frames 1000000 --minutes 10 --workers 16
fuzz: venv
	nice -n 10 $(BIN)/python -m fuzz $(FUZZ_ARGS)

# Build artefacts and caches; the venv stays (see distclean).
clean:
	rm -rf build dist .mypy_cache .ruff_cache .hypothesis .pytest_cache
	find . -path ./$(VENV) -prune -o \( -name __pycache__ -o -name '*.egg-info' \) -type d -print0 \
		| xargs -0 rm -rf

distclean: clean
	rm -rf $(VENV)
