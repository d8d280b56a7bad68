# bundler — developer tasks. `make help` lists them.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUNTIME_STAMP := $(VENV)/.runtime
LINT_PATHS := bundler tests bench
PYTEST_ARGS ?=
BENCH_ARGS ?=
SUDO := $(shell test "$$(id -u)" = 0 || echo sudo)

.DEFAULT_GOAL := help
.PHONY: help install test test-fast lint format demo bench clean chromium

help: ## list the targets
	@echo "usage: make TARGET   (PYTEST_ARGS='...' for test, BENCH_ARGS='...' for bench)"
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sort | awk 'BEGIN {FS = ":.*## "}; {printf "  %-10s %s\n", $$1, $$2}'

install: $(STAMP) ## create .venv (if missing) and install bundler with its dev tools

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -e '.[dev]'
	@touch $(RUNTIME_STAMP) $@

# the demo needs only what bundler runs with, not the development tools
$(RUNTIME_STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -e .
	@touch $@

test: $(STAMP) chromium ## run the test suite (2 xdist workers; PYTEST_ARGS='-k load' to narrow)
	$(BIN)/python -m pytest -n 2 -q $(PYTEST_ARGS)

test-fast: $(STAMP) ## SQLite only, without the slow tests (a few minutes)
	BUNDLER_TEST_PG_URL=none BUNDLER_TEST_MYSQL_URL=none BUNDLER_TEST_REQUIRE_SERVERS= \
		$(BIN)/python -m pytest -n 2 -q -m "not slow" $(PYTEST_ARGS)

chromium: ## install Debian's chromium when missing (the report test renders in it)
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
		{ $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium; }

lint: $(STAMP) ## ruff check, ruff format --check and mypy
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy bundler

format: $(STAMP) ## reformat and apply ruff's safe fixes
	$(BIN)/ruff format $(LINT_PATHS)
	$(BIN)/ruff check --fix $(LINT_PATHS)

demo: $(RUNTIME_STAMP) ## run `bundler demo` (writes demo/; installs only what bundler needs)
	$(BIN)/bundler demo

bench: $(STAMP) ## run the benchmarks (BENCH_ARGS='...' to choose)
	$(BIN)/python -m bench $(BENCH_ARGS)

clean: ## remove build junk, caches and demo/ (keeps .venv)
	rm -rf build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis demo
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -exec rm -rf {} +
