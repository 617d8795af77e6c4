# Paths, per-rule params and the one command shape every rule runs.
import json
import os
import sys

from snakemake.settings.types import DeploymentMethod

RESULTS = config["results_dir"]
EXPERIMENT = config["tracking"]["experiment"]
DATA = f"{RESULTS}/data"
MEMTRAIN = f"{RESULTS}/train/memtrain"
MEMTRAIN_BACKBONES = config["memtrain"]["backbones"] or list(config["backbones"])
TOKENIZER_BACKBONE = memtrain_config.tokenizer_backbone(config)
CONDA_ENV = "../environment.yml"

# With --sdm conda the rule's environment provides python; otherwise the interpreter running snakemake
# (the project's .venv) does, so `.venv/bin/snakemake` works without activating anything.
PYTHON = "python" if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method else sys.executable


scattergather:
    ner=config["data"]["ner"]["shards"],
    embed=config["data"]["embed"]["shards"],


def as_json(value) -> str:
    return json.dumps(value, sort_keys=True)


def wildcards_json(wildcards) -> str:
    return as_json(dict(wildcards.items()))


def shard_index(wildcards) -> int:
    """0-based shard of a scatter item '3-of-8'."""
    return int(wildcards.scatteritem.split("-of-")[0]) - 1


def memtrain(stage: str, arguments: str) -> str:
    """Shell command of a rule: the stage with its config section (params.cfg), MLflow context and log."""
    return (
        f"{PYTHON} -m memtrain {stage} --params {{params.cfg:q}} --results-dir {RESULTS!r} "
        f"--experiment {EXPERIMENT!r} --rule {{rule}} --wildcards {{params.wildcards:q}} {arguments} > {{log:q}} 2>&1"
    )


def log_path(rule_name: str, suffix: str = "") -> str:
    return f"{RESULTS}/logs/{rule_name}{suffix}.log"


def benchmark_path(rule_name: str, suffix: str = "") -> str:
    return f"{RESULTS}/benchmarks/{rule_name}{suffix}.tsv"
