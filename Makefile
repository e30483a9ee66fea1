# The two commands a newcomer needs: `make demo` (the whole pipeline) and `make test` (every test).
# Each does all of its own set-up on a fresh machine.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: venv demo test lint unit test-cluster cluster-up cluster-down stack-up stack-down stack-status clean

venv:
	@scripts/bootstrap.sh

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: venv lint
	$(BIN)/pytest $(PYTEST_ARGS)

unit: venv
	$(BIN)/pytest tests/unit tests/service $(PYTEST_ARGS)

# A real single-node Kubernetes cluster (root; builds and caches its binaries under ~/.cache/flts/k8s):
# `helm install` of the chart. Not part of `make test` (it needs root and the images the compose test builds).
test-cluster: venv
	$(BIN)/pytest -m cluster tests/cluster $(PYTEST_ARGS)

cluster-up:
	@scripts/cluster.sh up

cluster-down:
	@scripts/cluster.sh down

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
