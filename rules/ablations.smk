# Ablations (paper section 5.1, Figure 3): MemAgent post-trained from each MemTrain variant (full, e2e,
# decoupled) for every seed, evaluated on long-context QA by length. Only this branch: `snakemake ablations`.
# Post-training scaling (section 5.2, Figure 4): MemAgent carried on from its final checkpoint for more steps,
# every exported checkpoint evaluated on long-context QA. Only this branch: `snakemake scaling`.


rule ablations:
    input:
        expand(
            f"{EVAL}/long_context/{{backbone}}/memagent/{{init}}/seed{{seed}}.parquet",
            backbone=MEMTRAIN_BACKBONES,
            init=[f"memtrain-{variant}" for variant in config["memtrain"]["variants"]],
            seed=POSTTRAIN["seeds"],
        ),


rule scaling:
    input:
        expand(
            f"{EVAL}/scaling/{{backbone}}/{{init}}/seed{{seed}}/step{{step}}.parquet",
            backbone=MEMTRAIN_BACKBONES,
            init=SCALING["inits"],
            seed=SCALING_SEEDS,
            step=SCALING_STEPS,
        ),
        # the two starting points of Figure 4: MemAgent at its last step, and MemTrain+MemAgent beside it
        expand(
            f"{EVAL}/long_context/{{backbone}}/memagent/{{init}}/seed{{seed}}.parquet",
            backbone=MEMTRAIN_BACKBONES,
            init=list(dict.fromkeys([*SCALING["inits"], "memtrain-full"])),
            seed=POSTTRAIN["seeds"],
        ),


rule posttrain_continue:
    input:
        policy=lambda w: init_policy(w.backbone, w.init),  # the KL reference stays the run's starting model
        finished=f"{RESULTS}/train/memagent/{{backbone}}/{{init}}/seed{{seed}}/final",
        data=f"{QA}/memagent_train.parquet",
    output:
        exports=[
            directory(path) for path in expand(f"{CONTINUED}/step{{step}}", step=SCALING_STEPS, allow_missing=True)
        ],
    log:
        log_path("posttrain_continue", "{backbone}/{init}/seed{seed}"),
    benchmark:
        benchmark_path("posttrain_continue", "{backbone}/{init}/seed{seed}")
    priority: TRAINING_PRIORITY
    conda:
        CONDA_ENV
    threads: JOB_THREADS
    params:
        **stage_job(
            continue_params,
            source=f"{RESULTS}/train/memagent/{{backbone}}/{{init}}/seed{{seed}}/checkpoints",
            checkpoints=f"{CONTINUED}/checkpoints",
            exports_dir=CONTINUED,
            prune=prune(),  # its own checkpoints and those of the run it carried on
        ),
    shell:
        stage("posttrain_continue")


rule eval_scaling:
    input:
        policy=f"{CONTINUED}/step{{step}}",
        data=f"{QA}/long_context_eval.parquet",
    output:
        rows=f"{EVAL}/scaling/{{backbone}}/{{init}}/seed{{seed}}/step{{step}}.parquet",
    log:
        log_path("eval_scaling", "{backbone}/{init}/seed{seed}/step{step}"),
    benchmark:
        benchmark_path("eval_scaling", "{backbone}/{init}/seed{seed}/step{step}")
    conda:
        CONDA_ENV
    threads: JOB_THREADS
    params:
        **stage_job(downstream_params, mode="memory"),
    shell:
        stage("eval_scaling")
