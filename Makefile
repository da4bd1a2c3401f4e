# vllm-stack: `make venv` (what `pulumi` runs in), `make plan` (offline plan of STACK), `make engine` (the Pulumi CLI and
# providers built from Go modules), `make test` (everything the tests need, then all tests).
# VENV is the folder Pulumi.yaml's runtime.options.virtualenv and policy/PulumiPolicy.yaml name: change them together.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STACK  ?= dev
PYTEST_ARGS ?= -n 2

.PHONY: venv plan render docs engine test lint typecheck bench clean

# the program's packages and the policy pack's (policy/ runs in this venv too)
$(VENV)/.runtime: requirements.txt policy/requirements.txt pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt -r policy/requirements.txt
	# the repository itself, editable: the `vllm-stack` command and `python -m stacks` from any folder
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $@

venv: $(VENV)/.runtime

plan: $(VENV)/.runtime
	$(PY) -m stacks plan $(STACK)

render: $(VENV)/.runtime
	$(PY) -m stacks render $(STACK) --out out/$(STACK)

# generated from stacks/config/schema.py: the JSON Schema for editors and docs/configuration.md
docs: $(VENV)/.runtime
	$(PY) -m stacks schema > schema/stack-config.schema.json
	$(PY) -m stacks config-reference > docs/configuration.md

# the Pulumi CLI, its Python language host and the docker, kubernetes and random providers, built from the Go
# module proxy into ~/.cache/vllm-stack/engine (reused when built): `export PATH="$$(scripts/engine.sh --bin-dir):$$PATH"`
engine:
	bash scripts/engine.sh

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(VENV)/.dev
	$(VENV)/bin/mypy

# System packages (nginx + njs, Docker engine, promtool, node, chromium) are installed when running as root, the
# prometheus-operator and Grafana types with npm into .cache/ (scripts/schema-types.sh), Open WebUI and playwright-core
# into ~/.cache/vllm-stack (scripts/open-webui.sh);
# a Docker engine is started for the tests when none answers, and stopped again by its pid. The Pulumi engine is
# built (or reused) alongside, and tests/test_engine_*.py run last, once it is there (scripts/run-tests.sh); where it
# cannot be built, those skip (fail under CI).
test: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	PY=$(PY) PYTEST_ARGS="$(PYTEST_ARGS)" bash scripts/run-tests.sh

bench: $(VENV)/.dev
	$(PY) benchmarks/program_time.py
	$(PY) benchmarks/gateway.py
	$(PY) benchmarks/gateway_memory.py

clean:
	rm -rf out .pytest_cache .mypy_cache .ruff_cache .hypothesis .cache
