# Each tool is one target, the same locally and in CI. The first target that needs the environment builds it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint compile clean

# Rebuilt when the dependencies change. pip takes torch and torchvision from this machine's wheel cache.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/artlora demo --config configs/demo.yaml

test: $(STAMP)
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/hadolint docker/Dockerfile

compile: $(STAMP)
	$(BIN)/artlora pipeline compile

clean:
	rm -rf $(VENV) .artlora .pytest_cache .ruff_cache
