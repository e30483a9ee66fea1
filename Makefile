# The two commands a newcomer needs: `make demo` (the whole pipeline) and `make test` (every test).
# Each does all of its own set-up on a fresh machine.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: sync-chart-config venv demo test lint unit test-fast test-compose compose-images test-cluster test-cluster-chart cluster-up cluster-down stack-up stack-down stack-status clean

venv:
	@scripts/bootstrap.sh

# The chart carries a copy of the pipeline config and the locustfile (Helm reads only files inside the chart);
# tests/deploy fails when a copy differs from its source.
sync-chart-config:
	cp config/pipeline.yaml .helm/files/pipeline.yaml
	cp locust/locustfile.py .helm/files/locustfile.py

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: venv lint
	$(BIN)/pytest $(PYTEST_ARGS)
	$(BIN)/pytest -m "cluster or cluster_chart" tests/cluster $(PYTEST_ARGS)

unit: venv
	$(BIN)/pytest tests/unit tests/service $(PYTEST_ARGS)

# The inner loop: everything that needs neither a stack, nor Docker, nor a cluster (about a minute).
test-fast: venv lint
	$(BIN)/pytest tests/unit tests/service tests/deploy $(PYTEST_ARGS)

# docker compose for real: builds every image and runs docker-compose.yaml end to end (tests/compose).
test-compose: venv
	$(BIN)/pytest -m compose tests/compose $(PYTEST_ARGS)

# Builds the compose stand-ins and our images into the local Docker engine (starting one if needed).
compose-images: venv
	$(BIN)/python tests/compose/harness.py

# A real single-node Kubernetes node (root; builds and caches its binaries under ~/.cache/flts/k8s): pods,
# cluster DNS, metrics and an HPA scaling out under load; then the whole chart on it (test-cluster-chart);
# then a teardown that must leave nothing behind.
test-cluster: venv
	$(BIN)/pytest -m "cluster or cluster_chart" tests/cluster $(PYTEST_ARGS)

# `helm install` of the whole chart on that node with the compose harness's images (pushed to the node's
# registry), end to end: upload, champion on every inference replica, helm test, HPA scale-out under
# Locust, a trainer pod deleted mid-training, upgrade, uninstall.
test-cluster-chart: venv
	$(BIN)/pytest -m cluster_chart tests/cluster $(PYTEST_ARGS)

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
