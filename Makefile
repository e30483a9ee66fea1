# The two commands a newcomer needs: `make demo` (the whole pipeline) and `make test` (every test).
# Each does all of its own set-up on a fresh machine.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: venv demo test lint unit stack-up stack-down stack-status clean

venv:
	@scripts/bootstrap.sh

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: venv lint
	$(BIN)/pytest $(PYTEST_ARGS)

unit: venv
	$(BIN)/pytest tests/unit tests/service $(PYTEST_ARGS)

demo: venv
	$(BIN)/flts demo

stack-up: venv
	$(BIN)/flts stack up --services

stack-down: venv
	$(BIN)/flts stack down

stack-status: venv
	$(BIN)/flts stack status

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
