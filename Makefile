# Developer entry points. A fresh clone needs only `make test`: the venv is built on demand.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Touched after a successful install; older than pyproject.toml means "reinstall".
STAMP := $(VENV)/.stamp
# The same for the demo's lighter install (hakit's own dependencies only).
DEMO_STAMP := $(VENV)/.stamp-demo
# `make demo DEMO_ARGS=--slow` paces the story for a room.
DEMO_ARGS ?=

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DELETE_ON_ERROR:
.DEFAULT_GOAL := test

.PHONY: venv demo test lint bench torture fuzz lab browser notebooks test-binder binder-badge binder-requirements clean distclean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[dev]'
	touch $@

# The demo needs only hakit's runtime dependencies, read from pyproject.toml; hakit itself
# runs from this checkout (`python -m` puts it on the path), so nothing is built (no build
# backend warnings) and no dev extras come along. A venv set up by `make venv` has them all.
$(DEMO_STAMP): pyproject.toml
	@echo "Setting up $(VENV) with what the demo needs..."
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@if [ ! $(STAMP) -nt pyproject.toml ]; then \
		$(BIN)/python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' > $(VENV)/demo-requirements.txt; \
		$(BIN)/python -m pip install -q -r $(VENV)/demo-requirements.txt; \
	fi
	@touch $@

demo: $(DEMO_STAMP)
	@$(BIN)/python -m hakit demo $(DEMO_ARGS)

test: venv browser
	$(BIN)/python -m pytest -q

# The browser test drives Debian's chromium through Playwright (which is never let download
# a browser of its own): install the package when it is missing.
browser:
	@command -v chromium >/dev/null || { \
		echo "installing Debian's chromium for the browser test"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }

# JupyterLab on 127.0.0.1 with the workshop's first notebook: a live cluster and its dashboard.
lab: venv
	$(BIN)/python -m jupyter lab notebooks/01-quickstart.ipynb --ip=127.0.0.1 \
		$(if $(filter 0,$(shell id -u)),--allow-root)

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

# Execute every teaching notebook in a fresh kernel, check its facts, and write the executed
# copies (what a static viewer shows) to notebooks/rendered/.
notebooks: venv
	$(BIN)/python -m tests.notebooks.run --workers 4 --render notebooks/rendered

# Build a fresh environment from binder/ as Binder would (venv + requirements + postBuild) and
# execute every notebook in it. Slow: not part of `make test`; .ci/run runs it.
test-binder:
	bash tests/binder/build.sh

# Point the README's Binder badge at [tool.hakit.binder] in pyproject.toml (repository, ref).
binder-badge: venv
	$(BIN)/python -m tests.binder.badge

# Pin binder/requirements.txt to the versions installed in .venv.
binder-requirements: venv
	$(BIN)/python -m tests.binder.pins

# Build artefacts and caches; the venv stays (see distclean).
clean:
	rm -rf build dist .mypy_cache .ruff_cache .hypothesis .pytest_cache
	find . -path ./$(VENV) -prune -o \( -name __pycache__ -o -name '*.egg-info' \) -type d -print0 \
		| xargs -0 rm -rf

distclean: clean
	rm -rf $(VENV)
