# Paths, per-rule params and the one command shape every rule runs.
import os
import sys

from snakemake.settings.types import DeploymentMethod

from memtrain.stages import job as memtrain_job

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
# Threads of a training or evaluation job: in a local run `threads_per_job` of the --cores (null: all of them); on a
# cluster (no --cores) the profile's set-threads gives each rule its cpus, and 1 stands in until it does.
_CORES = workflow.resource_settings.cores
JOB_THREADS = min(config["threads_per_job"] or _CORES, _CORES) if _CORES else 1
# Trainings start before evaluations whenever both are ready: each training unblocks evaluations, and a DAG that
# ends on many short evaluations keeps every core busy to the end instead of one long chain on one core.
TRAINING_PRIORITY = 1


scattergather:
    ner=config["data"]["ner"]["shards"],
    embed=config["data"]["embed"]["shards"],


def _named(files, kind: str) -> dict:
    """A rule's inputs or outputs by name; an unnamed one would not reach its stage, so it stops the DAG here."""
    named = {name: value if isinstance(value, str) else list(value) for name, value in files.items()}
    if len(files) != sum(1 if isinstance(v, str) else len(v) for v in named.values()):
        raise ValueError(f"a stage rule names every {kind}; these are unnamed among {list(files)}")
    return named


def stage_job(*config_paths, **params):
    """A stage rule's params, `params: **stage_job(...)`: `settings`, the config at `config_paths` (dotted, kept at
    their paths; one callable of the wildcards instead where the slice depends on them) with `params` (strings
    formatted with the wildcards, callables called with them) and the wildcards; and `files`, the rule's named
    input and output. Two params because snakemake reruns a job when its params change only for params that do
    not read its files: a changed config slice must rerun the job. The stage reads both as one
    memtrain.stages.job.Job."""

    def settings(wildcards):
        if len(config_paths) == 1 and callable(config_paths[0]):
            sliced = config_paths[0](wildcards)
        else:
            sliced = memtrain_job.config_slice(config, *config_paths)
        values = {
            name: (
                value(wildcards) if callable(value) else value.format(**wildcards) if isinstance(value, str) else value
            )
            for name, value in params.items()
        }
        return memtrain_job.settings_json(sliced, values, dict(wildcards.items()), RESULTS, EXPERIMENT)

    def files(wildcards, input, output):
        return memtrain_job.files_json(_named(input, "input"), _named(output, "output"))

    return {"settings": settings, "files": files}


def stage(rule_name: str) -> str:
    """The shell command of a stage rule: `python -m memtrain <rule>` with the rule's job, logged to its log.
    The name is spelled here rather than as {rule}, which `snakemake --lint` takes for an outside variable;
    tests/test_house.py checks that every rule names itself."""
    return (
        f"{PYTHON} -m memtrain {rule_name} --threads {{threads}} --settings {{params.settings:q}} "
        f"--files {{params.files:q}} > {{log:q}} 2>&1"
    )


def log_path(rule_name: str, job: str = "") -> str:
    """results/logs/<rule>[/<job>].log: `job` names the job within its rule by its wildcards."""
    return os.path.join(RESULTS, "logs", rule_name, job).rstrip(os.sep) + ".log"


def benchmark_path(rule_name: str, job: str = "") -> str:
    return os.path.join(RESULTS, "benchmarks", rule_name, job).rstrip(os.sep) + ".tsv"


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


def offline_qa_input(*uses: str):
    """Input function (for unpack): the offline QA set as `offline`, when one of the named sources is configured
    as 'offline' (else nothing to build)."""
    qa = config["qa"]
    offline = {
        "hotpotqa_train": qa["hotpotqa_train"] == ["offline"],
        "hotpotqa_dev": qa["hotpotqa_dev"] == ["offline"] and not qa["long_context"]["memagent_eval_dir"],
        "search": qa["search"]["flashrag"] == "offline",
        "corpus": qa["corpus"] == "offline",
    }
    found = {"offline": OFFLINE_QA} if any(offline[use] for use in uses) else {}
    return lambda wildcards: found


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


def downstream_params(wildcards) -> dict:
    """Only the settings a job depends on, so that editing one training's section reruns only its jobs."""
    rl = config["rl"]
    algorithm = getattr(wildcards, "algorithm", None)
    if algorithm is not None:  # a post-training, on the configured trainer
        posttrain, own = {algorithm: POSTTRAIN[algorithm]}, {"trainer": config["trainer"]}
    else:  # an evaluation: the runtime knobs of the policy, the MEM1 limits of the search agent and `eval`
        rl = {key: rl[key] for key in ("device", "dtype", "engine_batch_size", "engine_linear")}
        posttrain, own = {"mem1": POSTTRAIN["mem1"]}, {"eval": config["eval"]}
    return {
        "agent": config["agent"],
        "rl": rl,
        "posttrain": posttrain,
        "retriever": config["retriever"],
        "allow_downloads": config["allow_downloads"],
        **own,
    }


def continue_params(wildcards) -> dict:
    """MemAgent's settings and the scaling section: what a continued run depends on."""
    posttrain = {"memagent": POSTTRAIN["memagent"], "scaling": POSTTRAIN["scaling"]}
    return {
        "agent": config["agent"],
        "rl": config["rl"],
        "posttrain": posttrain,
        "trainer": config["trainer"],
        "allow_downloads": config["allow_downloads"],
    }


def continued(wildcards) -> bool:
    """Whether the scaling continuation carries this post-training run on from its checkpoint."""
    return (
        wildcards.algorithm == "memagent"
        and wildcards.backbone in MEMTRAIN_BACKBONES
        and wildcards.init in SCALING["inits"]
        and int(wildcards.seed) in SCALING_SEEDS
    )


def prune(wanted: bool = True) -> bool:
    """Whether a training job deletes its checkpoints once exported: nothing downstream needs them
    (trainer.prune_checkpoints)."""
    return config["trainer"]["prune_checkpoints"] and wanted


def backbone_slice(wildcards, *paths: str) -> dict:
    """The job's backbone (backbones.<name>: names may hold dots) and the config at `paths`."""
    return {
        "backbones": {wildcards.backbone: config["backbones"][wildcards.backbone]},
        **memtrain_job.config_slice(config, *paths),
    }


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
        search = [("none", "base", 0)] + [
            ("mem1", init, seed) for init in POSTTRAIN["inits"] for seed in POSTTRAIN["seeds"]
        ]
        files += [f"{EVAL}/long_context/{backbone}/{t}/{i}/seed{s}.parquet" for t, i, s in long_context]
        files += [f"{EVAL}/search_qa/{backbone}/{t}/{i}/seed{s}.parquet" for t, i, s in search]
    return files
