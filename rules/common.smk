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
# Training and evaluation take every core of a local run; on a cluster (no --cores) the profile's set-threads
# gives each rule its cpus, and 1 stands in until it does.
ALL_CORES = workflow.resource_settings.cores or 1


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


# --- downstream (rules/downstream.smk) ------------------------------------------------------------
QA = f"{DATA}/qa"
OFFLINE_QA = f"{QA}/offline"
SEARCH = f"{DATA}/search"
EVAL = f"{RESULTS}/eval"
REPORT = f"{RESULTS}/report"
POSTTRAIN = config["posttrain"]
SEARCH_INDEX = f"{SEARCH}/index.faiss"
SCALING = POSTTRAIN["scaling"]
SCALING_SEEDS = SCALING["seeds"] or POSTTRAIN["seeds"]
SCALING_STEPS = memtrain_config.scaling_steps(config)
CONTINUED = f"{RESULTS}/train/memagent/{{backbone}}/{{init}}/seed{{seed}}/continued"


def offline_qa_input(*uses: str) -> list[str]:
    """The offline QA set, when one of the named sources is configured as 'offline' (else nothing to build)."""
    qa = config["qa"]
    offline = {
        "hotpotqa_train": qa["hotpotqa_train"] == ["offline"],
        "hotpotqa_dev": qa["hotpotqa_dev"] == ["offline"] and not qa["long_context"]["memagent_eval_dir"],
        "search": qa["search"]["flashrag"] == "offline",
        "corpus": qa["corpus"] == "offline",
    }
    return [OFFLINE_QA] if any(offline[use] for use in uses) else []


def offline_dir_flag(wildcards, input) -> str:
    return f"--offline-dir {OFFLINE_QA!r}" if OFFLINE_QA in list(input) else ""


def init_policy(backbone: str, init: str) -> str:
    """Where a post-training starts: the prepared base model or a MemTrain variant's final policy."""
    if init == "base":
        return f"{RESULTS}/models/{backbone}/base"
    return f"{MEMTRAIN}/{backbone}/{init.removeprefix('memtrain-')}/final"


def posttrain_inputs(wildcards) -> dict[str, str]:
    inputs = {"policy": init_policy(wildcards.backbone, wildcards.init)}
    if wildcards.algorithm == "memagent":
        inputs["data"] = f"{QA}/memagent_train.parquet"
    else:
        inputs.update(data=f"{QA}/mem1_train.parquet", corpus=f"{SEARCH}/corpus.parquet", index=SEARCH_INDEX)
    return inputs


def search_flags(wildcards, input) -> str:
    """MEM1 trains against the search server: its corpus, index, and a log of its own beside the job's."""
    if wildcards.algorithm != "mem1":
        return ""
    log = log_path("retriever", f"/posttrain/{wildcards.backbone}/{wildcards.init}/seed{wildcards.seed}")
    return f"--corpus {input.corpus!r} --index {input.index!r} --server-log {log!r}"


def downstream_params(wildcards) -> str:
    """Only the settings a job depends on, so that editing one training's section reruns only its jobs."""
    rl = config["rl"]
    algorithm = getattr(wildcards, "algorithm", None)
    training = {}
    if algorithm is not None:  # a post-training, on the configured trainer
        posttrain, training = {algorithm: POSTTRAIN[algorithm]}, {"trainer": config["trainer"]}
    else:  # an evaluation: the runtime knobs of the policy, and the MEM1 limits of the search agent
        rl = {key: rl[key] for key in ("device", "dtype", "engine_batch_size", "engine_linear")}
        posttrain = {"mem1": POSTTRAIN["mem1"]}
    return as_json({"agent": config["agent"], "rl": rl, "posttrain": posttrain, "eval": config["eval"],
                    "retriever": config["retriever"], "allow_downloads": config["allow_downloads"], **training})


def continue_params(wildcards) -> str:
    """MemAgent's settings and the scaling section: what a continued run depends on."""
    posttrain = {"memagent": POSTTRAIN["memagent"], "scaling": POSTTRAIN["scaling"]}
    return as_json({"agent": config["agent"], "rl": config["rl"], "posttrain": posttrain, "trainer": config["trainer"],
                    "allow_downloads": config["allow_downloads"]})


def continued(wildcards) -> bool:
    """Whether the scaling continuation carries this post-training run on from its checkpoint."""
    return (wildcards.algorithm == "memagent" and wildcards.backbone in MEMTRAIN_BACKBONES
            and wildcards.init in SCALING["inits"] and int(wildcards.seed) in SCALING_SEEDS)


def prune_flag(wanted: bool = True) -> str:
    """`--prune-checkpoints` for a training job whose checkpoints nothing downstream needs (trainer.prune_checkpoints)."""
    return "--prune-checkpoints" if config["trainer"]["prune_checkpoints"] and wanted else ""


def evaluated_policy(wildcards) -> str:
    if wildcards.trained == "none":
        return init_policy(wildcards.backbone, wildcards.init)
    return f"{RESULTS}/train/{wildcards.trained}/{wildcards.backbone}/{wildcards.init}/seed{wildcards.seed}/final"


def evaluations() -> list[str]:
    """Every (model, task, seed) of Tables 1 and 2: base and MemTrain-only models once (seed 0), post-trained per seed."""
    memtrain_inits = [init for init in POSTTRAIN["inits"] if init != "base"]
    files = []
    for backbone in MEMTRAIN_BACKBONES:
        long_context = [("none", "base", 0)] + [("none", init, 0) for init in memtrain_inits]
        long_context += [("memagent", init, seed) for init in POSTTRAIN["inits"] for seed in POSTTRAIN["seeds"]]
        search = [("none", "base", 0)] + [("mem1", init, seed) for init in POSTTRAIN["inits"] for seed in POSTTRAIN["seeds"]]
        files += [f"{EVAL}/long_context/{backbone}/{t}/{i}/seed{s}.parquet" for t, i, s in long_context]
        files += [f"{EVAL}/search_qa/{backbone}/{t}/{i}/seed{s}.parquet" for t, i, s in search]
    return files
