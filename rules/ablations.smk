# Ablations (paper section 5.1, Figure 3): MemAgent post-trained from each MemTrain variant (full, e2e,
# decoupled) for every seed, evaluated on long-context QA by length. Only this branch: `snakemake ablations`.


rule ablations:
    input:
        expand(f"{EVAL}/long_context/{{backbone}}/memagent/{{init}}/seed{{seed}}.parquet", backbone=MEMTRAIN_BACKBONES,
               init=[f"memtrain-{variant}" for variant in config["memtrain"]["variants"]], seed=POSTTRAIN["seeds"]),
