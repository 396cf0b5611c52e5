# Tidings developer entry points. Each target bootstraps .venv on a fresh machine (Python 3.11).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
FUZZ_SECONDS ?= 3

.PHONY: run test prereqs lint typecheck unit fuzz bench proto clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/tidings server

test: prereqs lint typecheck unit fuzz

# Chromium for the browser tests, PostgreSQL and Redis for the cluster tests: installed or
# started when this machine allows it, else a stop at once with the command to run.
prereqs:
	bash scripts/test_prereqs.sh

lint: $(STAMP)
	$(BIN)/ruff check src tests bench fuzz

typecheck: $(STAMP)
	$(BIN)/mypy src

unit: $(STAMP)
	$(BIN)/python -m pytest

fuzz: $(STAMP)
	$(BIN)/python fuzz/run.py --seconds $(FUZZ_SECONDS)

bench: $(STAMP)
	$(BIN)/python bench/ratchet.py

proto: $(STAMP)
	PY=$(BIN)/python scripts/gen_proto.sh

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
