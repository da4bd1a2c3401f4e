# vllm-stack: `make plan` (offline plan of STACK) and `make test` (everything the tests need, then all tests).
VENV   ?= .venv
PY     := $(VENV)/bin/python
STACK  ?= dev
PYTEST_ARGS ?=

.PHONY: plan render test lint typecheck bench clean

$(VENV)/.runtime: requirements.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $@

plan: $(VENV)/.runtime
	$(PY) -m stacks plan $(STACK)

render: $(VENV)/.runtime
	$(PY) -m stacks render $(STACK) --out out/$(STACK)

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(VENV)/.dev
	$(VENV)/bin/mypy

# System packages (nginx + njs, Docker engine, promtool) are installed when running as root;
# a Docker engine is started for the tests when none answers, and stopped again by its pid.
test: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	bash scripts/system-deps.sh
	bash scripts/with-dockerd.sh $(PY) -m pytest $(PYTEST_ARGS)

bench: $(VENV)/.dev
	$(PY) benchmarks/program_time.py
	$(PY) benchmarks/gateway.py

clean:
	rm -rf out .pytest_cache .mypy_cache .ruff_cache .hypothesis
