# The two commands of the README, and the pieces they are made of.
#   make demo   set up .venv/ (first time: about 6 minutes on 2 cores, llama-cpp-python compiles) and run the demo
#               (first time: about 8 more minutes to train the task models; then about 10 seconds)
#   make test   set up .venv/ and run ruff and the whole test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install demo test lint protos bench clean

# Reinstalls when the dependency lists change. The constraints file picks the CPU build of torch.
$(STAMP): pyproject.toml constraints/cpu.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install -c constraints/cpu.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/tandem demo

lint: $(STAMP)
	$(BIN)/ruff check .

test: lint
	$(BIN)/pytest $(PYTEST_ARGS)

# Regenerate cloud_service/wire/ from protos/ (a test fails when it is stale).
protos: $(STAMP)
	$(BIN)/python protos/generate.py

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints/cpu.txt -e '.[dev,bench]'
	$(BIN)/python -m benchmarks.toy_models
	$(BIN)/python -m benchmarks.export
	$(BIN)/python -m benchmarks.edge
	$(BIN)/python -m benchmarks.cloud
	$(BIN)/python -m benchmarks.sdk
	$(BIN)/python -m benchmarks.fleet

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
