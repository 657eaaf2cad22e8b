# The lab's two main commands:
#   make demo   set everything up and run the whole lab end to end on the native lab
#   make test   run the test suite, notebooks included, on a separate test lab
# Other targets: setup, up, down, status, reset, notebooks, jupyter.

SHELL := /bin/bash
VENV ?= .venv
BIN := $(VENV)/bin
PYTHON ?= python3
# Transactions that `make demo` generates.
DEMO_COUNT ?= 10000
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]-*.ipynb))

.PHONY: demo test setup system jars up down status reset notebooks jupyter bench

setup: system $(BIN)/.installed jars

system:
	bash lab/install-system-packages.sh

$(BIN)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

jars: $(BIN)/.installed
	$(BIN)/labkit jars

up: setup
	$(BIN)/labkit lab up

down:
	$(BIN)/labkit lab down

status:
	$(BIN)/labkit lab status

reset:
	$(BIN)/labkit lab reset

# Run every notebook top to bottom with papermill; the executed copies go to
# notebooks/output so the committed notebooks keep their reference outputs.
notebooks:
	mkdir -p notebooks/output
	cd notebooks && for nb in $(notdir $(NOTEBOOKS)); do \
		../$(BIN)/papermill --cwd . -p transaction_count $(DEMO_COUNT) \
			$$nb output/$$nb || exit 1; \
	done

demo: up
	$(MAKE) notebooks
	$(BIN)/labkit report --json

# The root conftest.py points the tests at a test lab with its own folder and
# ports, so `make test` never touches the data of `make demo`.
test: setup
	$(BIN)/pytest -p no:cacheprovider tests \
		$(if $(NOTEBOOKS),--nbval --nbval-current-env $(NOTEBOOKS))

jupyter: up
	$(BIN)/jupyter lab --ip=127.0.0.1 --no-browser --notebook-dir=notebooks $(if $(filter 0,$(shell id -u)),--allow-root,)

# Measure the lab against reference clients and write docs/benchmarks.md.
# BENCH_ARGS=--quick checks the command in a few minutes; --notebooks adds the notebook suite.
bench: setup
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python -m benchmarks $(BENCH_ARGS)
