# Sightline: the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DATA   ?= sightline-data
EVENTS ?= 500000
HOST   ?= 127.0.0.1
PORT   ?= 8000

.PHONY: demo serve test install dev bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(BIN)/sightline: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q -e .
	@touch $@

install: $(BIN)/sightline

## demo: install, load a realistic demo product's data (once), and serve it on http://127.0.0.1:8000
demo: install
	@if [ -f $(DATA)/events.duckdb ]; then echo "Using the existing data in $(DATA)"; \
	 else $(BIN)/sightline demo --data-dir $(DATA) --events $(EVENTS); fi
	$(BIN)/sightline serve --data-dir $(DATA) --host $(HOST) --port $(PORT)

serve: install
	$(BIN)/sightline serve --data-dir $(DATA) --host $(HOST) --port $(PORT)

## dev: the package with its test dependencies, plus posthog-js for the browser tests
dev: $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev]'
	@if command -v npm >/dev/null 2>&1; then \
	   (cd tests/browser && npm ci --silent --no-audit --no-fund); \
	 else echo "npm not found: the posthog-js browser tests will be skipped"; fi

## test: install the dev dependencies and run the whole suite
test: dev
	$(BIN)/python -m pytest -q

bench: dev
	$(BIN)/python benchmarks/ingest.py

clean:
	rm -rf $(VENV) *.egg-info tests/browser/node_modules
