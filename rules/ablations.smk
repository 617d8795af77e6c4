# Ablations (paper section 5.1, Figure 3): MemAgent post-trained from each MemTrain variant (full, e2e,
# decoupled) for every seed, evaluated on long-context QA by length. Only this branch: `snakemake ablations`.
# Post-training scaling (section 5.2, Figure 4): MemAgent carried on from its final checkpoint for more steps,
# every exported checkpoint evaluated on long-context QA. Only this branch: `snakemake scaling`.


rule ablations:
    input:
        expand(f"{EVAL}/long_context/{{backbone}}/memagent/{{init}}/seed{{seed}}.parquet", backbone=MEMTRAIN_BACKBONES,
               init=[f"memtrain-{variant}" for variant in config["memtrain"]["variants"]], seed=POSTTRAIN["seeds"]),


rule scaling:
    input:
        expand(f"{EVAL}/scaling/{{backbone}}/{{init}}/seed{{seed}}/step{{step}}.parquet", backbone=MEMTRAIN_BACKBONES,
               init=SCALING["inits"], seed=SCALING_SEEDS, step=SCALING_STEPS),
        # the two starting points of Figure 4: MemAgent at its last step, and MemTrain+MemAgent beside it
        expand(f"{EVAL}/long_context/{{backbone}}/memagent/{{init}}/seed{{seed}}.parquet", backbone=MEMTRAIN_BACKBONES,
               init=list(dict.fromkeys([*SCALING["inits"], "memtrain-full"])), seed=POSTTRAIN["seeds"]),


rule posttrain_continue:
    input:
        policy=lambda w: init_policy(w.backbone, w.init),  # the KL reference stays the run's starting model
        finished=f"{RESULTS}/train/memagent/{{backbone}}/{{init}}/seed{{seed}}/final",
        data=f"{QA}/memagent_train.parquet",
    output:
        *[directory(path) for path in expand(f"{CONTINUED}/step{{step}}", step=SCALING_STEPS, allow_missing=True)],
    params:
        cfg=continue_params,
        wildcards=wildcards_json,
        source=f"{RESULTS}/train/memagent/{{backbone}}/{{init}}/seed{{seed}}/checkpoints",
        checkpoints=f"{CONTINUED}/checkpoints",
        exports=CONTINUED,
        last=f"{CONTINUED}/step{SCALING_STEPS[-1]}",
        prune=prune_flag(),  # its own checkpoints and those of the run it carried on
    threads: ALL_CORES
    conda:
        CONDA_ENV
    log:
        log_path("posttrain_continue", "/{backbone}/{init}/seed{seed}"),
    benchmark:
        benchmark_path("posttrain_continue", "/{backbone}/{init}/seed{seed}")
    shell:
        memtrain(
            "posttrain",
            "--algorithm memagent --policy {input.policy:q} --data {input.data:q} --seed {wildcards.seed} "
            "--continue-from {params.source:q} --exports-dir {params.exports:q} --checkpoints {params.checkpoints:q} "
            "--output {params.last:q} --threads {threads} --resume {params.prune}",
        )


use rule eval_long_context as eval_scaling with:
    input:
        policy=f"{CONTINUED}/step{{step}}",
        data=f"{QA}/long_context_eval.parquet",
    output:
        f"{EVAL}/scaling/{{backbone}}/{{init}}/seed{{seed}}/step{{step}}.parquet",
    params:
        cfg=downstream_params,
        wildcards=wildcards_json,
        mode="memory",
    log:
        log_path("eval_scaling", "/{backbone}/{init}/seed{seed}/step{step}"),
    benchmark:
        benchmark_path("eval_scaling", "/{backbone}/{init}/seed{seed}/step{step}")
