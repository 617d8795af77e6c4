"""MemTrain reproduction: self-supervised context-memory training for LLM agents, as a Snakemake + MLflow pipeline."""

import os

# MLflow sets up telemetry on first import; the pipeline runs offline, so it must be off before any import.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

__version__ = "0.1.0"
