# bundler — developer tasks. `make help` lists them.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LINT_PATHS := bundler tests bench
PYTEST_ARGS ?=
BENCH_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install test lint format demo bench clean

help: ## list the targets
	@echo "usage: make TARGET   (PYTEST_ARGS='...' for test, BENCH_ARGS='...' for bench)"
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sort | awk 'BEGIN {FS = ":.*## "}; {printf "  %-8s %s\n", $$1, $$2}'

install: $(STAMP) ## create .venv (if missing) and install bundler with its dev tools

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -e '.[dev]'
	@touch $@

test: $(STAMP) ## run the test suite (2 xdist workers; PYTEST_ARGS='-k load' to narrow)
	$(BIN)/python -m pytest -n 2 -q $(PYTEST_ARGS)

lint: $(STAMP) ## ruff check, ruff format --check and mypy
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy bundler

format: $(STAMP) ## reformat and apply ruff's safe fixes
	$(BIN)/ruff format $(LINT_PATHS)
	$(BIN)/ruff check --fix $(LINT_PATHS)

demo: $(STAMP) ## run `bundler demo` (writes demo/)
	$(BIN)/bundler demo

bench: $(STAMP) ## run the benchmarks (BENCH_ARGS='...' to choose)
	$(BIN)/python -m bench $(BENCH_ARGS)

clean: ## remove build junk, caches and demo/ (keeps .venv)
	rm -rf build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis demo
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -exec rm -rf {} +
