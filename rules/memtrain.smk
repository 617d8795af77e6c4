# MemTrain (paper sections 3-4.1): base policies, then GRPO per backbone and variant (full, e2e, decoupled).


rule memtrain:
    input:
        expand(f"{MEMTRAIN}/{{backbone}}/{{variant}}/final", backbone=MEMTRAIN_BACKBONES, variant=config["memtrain"]["variants"]),


rule prepare_model:
    output:
        directory(f"{RESULTS}/models/{{backbone}}/base"),
    params:
        cfg=lambda w: as_json({"backbone": config["backbones"][w.backbone], "allow_downloads": config["allow_downloads"],
                               "dtype": config["rl"]["dtype"]}),
        wildcards=wildcards_json,
    conda:
        CONDA_ENV
    log:
        log_path("prepare_model", "/{backbone}"),
    benchmark:
        benchmark_path("prepare_model", "/{backbone}")
    shell:
        memtrain("prepare_model", "--backbone {wildcards.backbone:q} --output {output:q}")


rule memtrain_train:
    input:
        documents=f"{DATA}/documents.parquet",
        policy=f"{RESULTS}/models/{{backbone}}/base",
    output:
        directory(f"{MEMTRAIN}/{{backbone}}/{{variant}}/final"),
    params:
        cfg=as_json(
            {
                "agent": config["agent"],
                "rl": config["rl"],
                "memtrain": {k: v for k, v in config["memtrain"].items() if k not in ("backbones", "variants")},
                "mask_token": config["data"]["documents"]["mask_token"],
                "trainer": config["trainer"],
            }
        ),
        wildcards=wildcards_json,
        checkpoints=f"{MEMTRAIN}/{{backbone}}/{{variant}}/checkpoints",
        prune=prune_flag(),
    threads: ALL_CORES
    conda:
        CONDA_ENV
    log:
        log_path("memtrain", "/{backbone}/{variant}"),
    benchmark:
        benchmark_path("memtrain", "/{backbone}/{variant}")
    shell:
        memtrain(
            "memtrain",
            "--documents {input.documents:q} --policy {input.policy:q} --variant {wildcards.variant:q} "
            "--checkpoints {params.checkpoints:q} --output {output:q} --threads {threads} --resume {params.prune}",
        )
