# Downstream (paper sections 4.2-4.3): QA data, the MEM1 search corpus, MemAgent / MEM1 post-training from the
# base model and from MemTrain for every seed, and both evaluations (long-context QA by length, search QA).


wildcard_constraints:
    algorithm="memagent|mem1",
    trained="none|memagent|mem1",
    init="base|memtrain-(full|e2e|decoupled)",
    seed=r"\d+",
    step=r"\d+",


rule posttrain:
    input:
        expand(f"{RESULTS}/train/{{algorithm}}/{{backbone}}/{{init}}/seed{{seed}}/final", algorithm=["memagent", "mem1"],
               backbone=MEMTRAIN_BACKBONES, init=POSTTRAIN["inits"], seed=POSTTRAIN["seeds"]),


rule evaluate:
    input:
        evaluations(),


rule offline_qa:
    output:
        directory(OFFLINE_QA),
    params:
        cfg=as_json({"seed": config["seed"], **config["qa"]["offline"]}),
        wildcards=wildcards_json,
    conda:
        CONDA_ENV
    log:
        log_path("offline_qa"),
    benchmark:
        benchmark_path("offline_qa")
    shell:
        memtrain("offline_qa", "--output-dir {output:q}")


rule qa_long_context:
    input:
        offline_qa_input("hotpotqa_train", "hotpotqa_dev"),
    output:
        train=f"{QA}/memagent_train.parquet",
        evaluation=f"{QA}/long_context_eval.parquet",
    params:
        cfg=as_json({"qa": config["qa"], "seed": config["seed"], "allow_downloads": config["allow_downloads"]}),
        wildcards=wildcards_json,
        offline=offline_dir_flag,
    conda:
        CONDA_ENV
    log:
        log_path("qa_long_context"),
    benchmark:
        benchmark_path("qa_long_context")
    shell:
        memtrain("qa_long_context", "{params.offline} --train-output {output.train:q} --eval-output {output.evaluation:q}")


rule qa_search:
    input:
        offline_qa_input("search"),
    output:
        train=f"{QA}/mem1_train.parquet",
        evaluation=f"{QA}/search_eval.parquet",
    params:
        cfg=as_json({"qa": config["qa"], "seed": config["seed"], "allow_downloads": config["allow_downloads"]}),
        wildcards=wildcards_json,
        offline=offline_dir_flag,
    conda:
        CONDA_ENV
    log:
        log_path("qa_search"),
    benchmark:
        benchmark_path("qa_search")
    shell:
        memtrain("qa_search", "{params.offline} --train-output {output.train:q} --eval-output {output.evaluation:q}")


rule search_corpus:
    input:
        offline_qa_input("corpus"),
    output:
        f"{SEARCH}/corpus.parquet",
    params:
        cfg=as_json({"corpus": config["qa"]["corpus"], "allow_downloads": config["allow_downloads"]}),
        wildcards=wildcards_json,
        offline=offline_dir_flag,
    conda:
        CONDA_ENV
    log:
        log_path("search_corpus"),
    benchmark:
        benchmark_path("search_corpus")
    shell:
        memtrain("search_corpus", "{params.offline} --output {output:q}")


rule search_index:
    input:
        f"{SEARCH}/corpus.parquet",
    output:
        f"{SEARCH}/index.faiss",
    params:
        cfg=as_json({"retriever": config["retriever"], "index": config["data"]["index"], "prebuilt": config["qa"]["index"],
                     "allow_downloads": config["allow_downloads"]}),
        wildcards=wildcards_json,
    threads: ALL_CORES
    conda:
        CONDA_ENV
    log:
        log_path("search_index"),
    benchmark:
        benchmark_path("search_index")
    shell:
        memtrain("search_index", "--corpus {input:q} --output {output:q} --threads {threads}")


rule posttrain_train:
    input:
        unpack(posttrain_inputs),
    output:
        directory(f"{RESULTS}/train/{{algorithm}}/{{backbone}}/{{init}}/seed{{seed}}/final"),
    params:
        cfg=downstream_params,
        wildcards=wildcards_json,
        search=search_flags,
        checkpoints=f"{RESULTS}/train/{{algorithm}}/{{backbone}}/{{init}}/seed{{seed}}/checkpoints",
        # a run the scaling continuation carries on keeps its checkpoints: the continuation prunes them
        prune=lambda w: prune_flag(not continued(w)),
    threads: ALL_CORES
    conda:
        CONDA_ENV
    log:
        log_path("posttrain", "/{algorithm}/{backbone}/{init}/seed{seed}"),
    benchmark:
        benchmark_path("posttrain", "/{algorithm}/{backbone}/{init}/seed{seed}")
    shell:
        memtrain(
            "posttrain",
            "--algorithm {wildcards.algorithm} --policy {input.policy:q} --data {input.data:q} {params.search} "
            "--seed {wildcards.seed} --checkpoints {params.checkpoints:q} --output {output:q} --threads {threads} --resume "
            "{params.prune}",
        )


rule eval_long_context:
    input:
        policy=evaluated_policy,
        data=f"{QA}/long_context_eval.parquet",
    output:
        f"{EVAL}/long_context/{{backbone}}/{{trained}}/{{init}}/seed{{seed}}.parquet",
    params:
        cfg=downstream_params,
        wildcards=wildcards_json,
        mode=lambda w: "full" if (w.trained, w.init) == ("none", "base") else "memory",
    threads: ALL_CORES
    conda:
        CONDA_ENV
    log:
        log_path("eval_long_context", "/{backbone}/{trained}/{init}/seed{seed}"),
    benchmark:
        benchmark_path("eval_long_context", "/{backbone}/{trained}/{init}/seed{seed}")
    shell:
        memtrain(
            "eval_long_context",
            "--policy {input.policy:q} --mode {params.mode} --data {input.data:q} --output {output:q} "
            "--seed {wildcards.seed} --threads {threads}",
        )


rule eval_search_qa:
    input:
        policy=evaluated_policy,
        data=f"{QA}/search_eval.parquet",
        corpus=f"{SEARCH}/corpus.parquet",
        index=SEARCH_INDEX,
    output:
        f"{EVAL}/search_qa/{{backbone}}/{{trained}}/{{init}}/seed{{seed}}.parquet",
    params:
        cfg=downstream_params,
        wildcards=wildcards_json,
        server_log=log_path("retriever", "/eval_search_qa/{backbone}/{trained}/{init}/seed{seed}"),
    threads: ALL_CORES
    conda:
        CONDA_ENV
    log:
        log_path("eval_search_qa", "/{backbone}/{trained}/{init}/seed{seed}"),
    benchmark:
        benchmark_path("eval_search_qa", "/{backbone}/{trained}/{init}/seed{seed}")
    shell:
        memtrain(
            "eval_search_qa",
            "--policy {input.policy:q} --data {input.data:q} --corpus {input.corpus:q} --index {input.index:q} "
            "--output {output:q} --seed {wildcards.seed} --server-log {params.server_log:q} --threads {threads}",
        )
