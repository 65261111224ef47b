# Mailyard — the two commands a newcomer needs are `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CONFIG ?= examples/mailyard.yaml

.PHONY: run test unit lint typecheck proto bench bench-stages dashboards chart chart-schema clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,fast]'
	touch $@

## run: the whole pipeline in one process against the local RabbitMQ
run: $(VENV)/.installed
	$(PY) -m mailyard check-broker --config $(CONFIG)
	$(PY) -m mailyard all --config $(CONFIG)

## test: lint, type check, then every test (needs RabbitMQ; see README)
test: $(VENV)/.installed lint typecheck
	$(PY) -m pytest $(PYTEST_ARGS)

## unit: the tests that need no broker
unit: $(VENV)/.installed
	$(PY) -m pytest -m "not integration" $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check services tests bench observability charts
	$(VENV)/bin/ruff format --check services tests bench observability charts

typecheck: $(VENV)/.installed
	$(VENV)/bin/mypy

## bench: throughput, latency and cost; BENCH_ARGS="--compare-postfix --count 20000"
bench: $(VENV)/.installed
	PYTHONPATH=services:. $(PY) -m bench $(BENCH_ARGS)

## bench-stages: each split-mode service alone, draining a full queue; BENCH_ARGS="--compare-repo ../baseline"
bench-stages: $(VENV)/.installed
	PYTHONPATH=services:. $(PY) -m bench.stages $(BENCH_ARGS)

## dashboards: regenerate charts/mailyard/dashboards/*.json from observability/
dashboards: $(VENV)/.installed
	$(PY) -m observability.dashboards

## chart: the Helm chart: helm lint, helm template of every ci/*-values.yaml, Kubernetes
## and CRD schemas, and what the rendered objects must say (needs helm and go; see .ci/run)
chart: $(VENV)/.installed
	$(PY) -m pytest -m chart tests/chart $(PYTEST_ARGS)

## chart-schema: regenerate charts/mailyard/values.schema.json (from values.yaml and config.py)
chart-schema: $(VENV)/.installed
	$(PY) charts/values_schema.py

## proto: regenerate the committed Python code from proto/
proto: $(VENV)/.installed
	$(PY) -m grpc_tools.protoc -Iproto --python_out=services --pyi_out=services \
		proto/mailyard/v1/*.proto

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
