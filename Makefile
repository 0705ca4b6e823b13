# Each tool is one target, the same locally and in CI. The first target that needs the environment builds it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The deploy checks' linters and kubectl (tests/deploy/tools.in says why they have a virtualenv of their own).
TOOLS := .venv-tools
TOOLS_STAMP := $(TOOLS)/.installed
# The image's name, from the one place that writes it (components/image.py, from the package version). It is read
# with runpy so that no environment needs to be built first.
IMAGE = $(shell PYTHONPATH=src $(PYTHON) -c 'import runpy; print(runpy.run_path("components/image.py")["BASE_IMAGE"])')

.PHONY: demo test test-fast lint typecheck compile image image-name clean

# Rebuilt when the dependencies change. pip takes torch and torchvision from this machine's wheel cache.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# --no-deps: tools.txt is the whole, hash-pinned closure, so pip installs exactly it.
$(TOOLS_STAMP): tests/deploy/tools.txt
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --no-deps --require-hashes -r tests/deploy/tools.txt
	touch $(TOOLS_STAMP)

demo: $(STAMP)
	$(BIN)/artlora demo --config configs/demo.yaml

# Three pytest-xdist workers on two cores: much of the suite waits on servers and task processes, and a third worker
# fills those waits (the whole suite on 2 cores, nothing else running: 13m22s with two, 11m24s with three; at 912
# tests, 10m25s with three and 12m05s with four, whose contention costs more CPU than its overlap saves).
# Each module is one work unit (its module fixtures made once); the session's servers, tiny model and style run are
# made once for all the workers (tests/shared_fixtures.py); tests/conftest.py starts the slow modules first.
WORKERS ?= 3
PARALLEL := -n $(WORKERS) --dist loadfile --no-loadscope-reorder
# The suite starts about 160 Python processes (kfp.local tasks, CLI runs, servers): with bytecode caching off (many
# Python images set PYTHONDONTWRITEBYTECODE=1), each compiles artlora's source again, and each worker re-rewrites
# every test module's asserts. Caching on for the suite's processes (__pycache__ is ignored by git).
test test-fast: export PYTHONDONTWRITEBYTECODE :=

test: $(STAMP) $(TOOLS_STAMP)
	$(BIN)/pytest -q $(PARALLEL)

# The quick loop: everything but the end-to-end tests (marked slow: whole pipelines, and processes and services
# started, killed and restarted).
test-fast: $(STAMP) $(TOOLS_STAMP)
	$(BIN)/pytest -q $(PARALLEL) -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/hadolint docker/Dockerfile

# mypy over src/ as configured in pyproject.toml ([tool.mypy]).
typecheck: $(STAMP)
	$(BIN)/mypy

compile: $(STAMP)
	$(BIN)/artlora pipeline compile --config configs/sd15.yaml --out pipelines/style_lora.yaml

# Needs a Docker engine (not on the dev and CI machines). `docker run IMAGE artlora ...` runs the CLI.
image:
	docker build -f docker/Dockerfile -t $(IMAGE) \
		--build-arg VERSION=$(lastword $(subst :, ,$(IMAGE))) \
		--build-arg REVISION=$(shell git rev-parse HEAD) .

image-name:
	@echo $(IMAGE)

clean:
	rm -rf $(VENV) $(TOOLS) .artlora .pytest_cache .ruff_cache .mypy_cache
