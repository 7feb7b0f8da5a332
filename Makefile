# maas - two commands set everything up on a fresh machine:
#   make run    install what is missing, start the whole suite on embedded defaults
#   make test   install what is missing, check generated code, run every test

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.maas-installed
# examples/plugins: the example catalog plugin, installed editable for its own tests and the plugin tests.
PACKAGES := services/common services/registry services/trainer services/inference cli examples/plugins
EDITABLE := $(foreach p,$(PACKAGES),-e $(p))

.PHONY: help install install-tools run demo soak test test-fast lint protos check-protos bench bench-registry bench-trainer bench-inference bench-overload bench-formats bench-text bench-http bench-coldstart bench-report clean

help:
	@echo "make run           start the suite on embedded defaults (state in ./.maas)"
	@echo "make demo          train, register, promote, serve and classify digits, end to end"
	@echo "make test          check generated code and run every test (SQLite and PostgreSQL)"
	@echo "make lint          ruff and mypy"
	@echo "make protos        regenerate Python code from protos/"
	@echo "make check-protos  fail if the committed generated code is stale"
	@echo "make bench         run every benchmark and write bench/out/report.md"
	@echo "make soak          ten minutes of mixed load on the whole suite"

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) requirements/dev.txt requirements/constraints.txt $(foreach p,$(PACKAGES),$(p)/pyproject.toml)
	$(PIP) install --quiet -c requirements/constraints.txt -r requirements/dev.txt $(EDITABLE)
	touch $(STAMP)

install: $(STAMP)

# System tools the tests use: Debian's docker-compose validates docker-compose.yml
# (the Docker engine itself is not needed for that).
install-tools:
	@command -v docker-compose >/dev/null 2>&1 || { \
		echo "installing docker-compose (apt)"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null) \
		|| echo "could not install docker-compose: its test will fail"; }

run: install
	$(VENV)/bin/maas up

demo: install
	$(PY) demo/digits.py

# Ten minutes of mixed load on the whole suite (CI runs the same test for 60 s).
soak: install
	MAAS_SOAK_SECONDS=600 MAAS_SOAK_REPORT=bench/out/soak.json $(PY) -m pytest tests/soak -q -p no:cacheprovider

protos: install
	$(PY) tools/protos.py

check-protos: install
	$(PY) tools/protos.py --check

test: install install-tools check-protos
	$(PY) -m pytest

test-fast: install
	$(PY) -m pytest -m "not slow"

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy services/common/src/maas/common services/registry/src/maas/registry \
		services/trainer/src/maas/trainer services/inference/src/maas/inference cli/src/maas/cli cli/src/maas/client \
		tools demo bench/report.py examples/plugins/src/maas_example_plugin

bench: bench-registry bench-trainer bench-inference bench-overload bench-formats bench-text bench-http bench-coldstart
	$(MAKE) bench-report

bench-report: install
	$(PY) bench/report.py

bench-registry: install
	$(PY) bench/registry_bench.py

bench-trainer: install
	$(PY) bench/trainer_bench.py

bench-inference: install
	$(PY) bench/inference_bench.py

bench-overload: install
	$(PY) bench/overload.py

# torch vs onnxruntime vs int8 onnxruntime serving of trained catalog models (about 8 min; QUICK=1: 2.5 min)
bench-formats: install
	$(PY) bench/formats_bench.py $(if $(QUICK),--quick)

# a BERT classifier served with server-side tokenization vs onnxruntime in-process, and trained by the
# trainer vs the plain transformers/torch loop (QUICK=1 took 5 min at a load average of 5 on 2 cores)
bench-text: install
	$(PY) bench/text_bench.py $(if $(QUICK),--quick)

# the MLP through the HTTP/REST and gRPC ports of one server, perf_analyzer -i http / -i grpc (about 3 min;
# fetches perf_analyzer's wheel and, where glibc is older than 2.38, Debian 13's C/C++ runtime into bench/out)
bench-http: install
	$(PY) bench/http_bench.py $(if $(QUICK),--rounds 1 --concurrency 8)

# the cold start of a model evicted under MAAS_INFERENCE_MEMORY_LIMIT, and a loaded version's RSS against
# what the limit counts (about 1 min)
bench-coldstart: install
	$(PY) bench/coldstart_bench.py $(if $(QUICK),--rounds 5 --versions 3)

clean:
	rm -rf .maas bench/out
