# MemTrain (paper sections 3-4.1): base policies, then GRPO per backbone and variant (full, e2e, decoupled).


rule memtrain:
    input:
        expand(
            f"{MEMTRAIN}/{{backbone}}/{{variant}}/final",
            backbone=MEMTRAIN_BACKBONES,
            variant=config["memtrain"]["variants"],
        ),


rule prepare_model:
    output:
        model=directory(f"{RESULTS}/models/{{backbone}}/base"),
    log:
        log_path("prepare_model", "{backbone}"),
    benchmark:
        benchmark_path("prepare_model", "{backbone}")
    conda:
        CONDA_ENV
    params:
        **stage_job(lambda w: backbone_slice(w, "allow_downloads", "rl.dtype")),
    shell:
        stage("prepare_model")


rule memtrain_train:
    input:
        documents=f"{DATA}/documents.parquet",
        policy=f"{RESULTS}/models/{{backbone}}/base",
    output:
        final=directory(f"{MEMTRAIN}/{{backbone}}/{{variant}}/final"),
    log:
        log_path("memtrain", "{backbone}/{variant}"),
    benchmark:
        benchmark_path("memtrain", "{backbone}/{variant}")
    priority: TRAINING_PRIORITY
    conda:
        CONDA_ENV
    threads: JOB_THREADS
    params:
        **stage_job(
            lambda w: {
                "agent": config["agent"],
                "rl": config["rl"],
                "memtrain": {k: v for k, v in config["memtrain"].items() if k not in ("backbones", "variants")},
                "trainer": config["trainer"],
                **memtrain_job.config_slice(config, "data.documents.mask_token"),
            },
            checkpoints=f"{MEMTRAIN}/{{backbone}}/{{variant}}/checkpoints",
            prune=prune(),
        ),
    shell:
        stage("memtrain_train")
