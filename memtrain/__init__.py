"""MemTrain reproduction: self-supervised context-memory training for LLM agents, as a Snakemake + MLflow pipeline."""

__version__ = "0.1.0"
