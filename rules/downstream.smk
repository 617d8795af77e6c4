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
        expand(
            f"{RESULTS}/train/{{algorithm}}/{{backbone}}/{{init}}/seed{{seed}}/final",
            algorithm=["memagent", "mem1"],
            backbone=MEMTRAIN_BACKBONES,
            init=POSTTRAIN["inits"],
            seed=POSTTRAIN["seeds"],
        ),


rule evaluate:
    input:
        evaluations(),


rule offline_qa:
    output:
        offline=directory(OFFLINE_QA),
    log:
        log_path("offline_qa"),
    benchmark:
        benchmark_path("offline_qa")
    conda:
        CONDA_ENV
    params:
        **stage_job("seed", "qa.offline"),
    shell:
        stage("offline_qa")


rule qa_long_context:
    input:
        unpack(offline_qa_input("hotpotqa_train", "hotpotqa_dev")),
    output:
        train=f"{QA}/memagent_train.parquet",
        evaluation=f"{QA}/long_context_eval.parquet",
    log:
        log_path("qa_long_context"),
    benchmark:
        benchmark_path("qa_long_context")
    conda:
        CONDA_ENV
    params:
        **stage_job("qa", "seed", "allow_downloads"),
    shell:
        stage("qa_long_context")


rule qa_search:
    input:
        unpack(offline_qa_input("search")),
    output:
        train=f"{QA}/mem1_train.parquet",
        evaluation=f"{QA}/search_eval.parquet",
    log:
        log_path("qa_search"),
    benchmark:
        benchmark_path("qa_search")
    conda:
        CONDA_ENV
    params:
        **stage_job("qa", "seed", "allow_downloads"),
    shell:
        stage("qa_search")


rule search_corpus:
    input:
        unpack(offline_qa_input("corpus")),
    output:
        corpus=f"{SEARCH}/corpus.parquet",
    log:
        log_path("search_corpus"),
    benchmark:
        benchmark_path("search_corpus")
    conda:
        CONDA_ENV
    params:
        **stage_job("qa.corpus", "allow_downloads"),
    shell:
        stage("search_corpus")


rule search_index:
    input:
        corpus=f"{SEARCH}/corpus.parquet",
    output:
        index=SEARCH_INDEX,
    log:
        log_path("search_index"),
    benchmark:
        benchmark_path("search_index")
    conda:
        CONDA_ENV
    threads: JOB_THREADS
    params:
        **stage_job("retriever", "data.index", "qa.index", "allow_downloads"),
    shell:
        stage("search_index")


rule posttrain_train:
    input:
        unpack(posttrain_inputs),
    output:
        final=directory(f"{RESULTS}/train/{{algorithm}}/{{backbone}}/{{init}}/seed{{seed}}/final"),
    log:
        log_path("posttrain", "{algorithm}/{backbone}/{init}/seed{seed}"),
    benchmark:
        benchmark_path("posttrain", "{algorithm}/{backbone}/{init}/seed{seed}")
    priority: TRAINING_PRIORITY
    conda:
        CONDA_ENV
    threads: JOB_THREADS
    params:
        **stage_job(
            downstream_params,
            checkpoints=f"{RESULTS}/train/{{algorithm}}/{{backbone}}/{{init}}/seed{{seed}}/checkpoints",
            server_log=log_path("retriever", "posttrain/{backbone}/{init}/seed{seed}"),
            # a run the scaling continuation carries on keeps its checkpoints: the continuation prunes them
            prune=lambda w: prune(not continued(w)),
        ),
    shell:
        stage("posttrain_train")


rule eval_long_context:
    input:
        policy=evaluated_policy,
        data=f"{QA}/long_context_eval.parquet",
    output:
        rows=f"{EVAL}/long_context/{{backbone}}/{{trained}}/{{init}}/seed{{seed}}.parquet",
    log:
        log_path("eval_long_context", "{backbone}/{trained}/{init}/seed{seed}"),
    benchmark:
        benchmark_path("eval_long_context", "{backbone}/{trained}/{init}/seed{seed}")
    conda:
        CONDA_ENV
    threads: JOB_THREADS
    params:
        **stage_job(
            downstream_params,
            mode=lambda w: "full" if (w.trained, w.init) == ("none", "base") else "memory",
        ),
    shell:
        stage("eval_long_context")


rule eval_search_qa:
    input:
        policy=evaluated_policy,
        data=f"{QA}/search_eval.parquet",
        corpus=f"{SEARCH}/corpus.parquet",
        index=SEARCH_INDEX,
    output:
        rows=f"{EVAL}/search_qa/{{backbone}}/{{trained}}/{{init}}/seed{{seed}}.parquet",
    log:
        log_path("eval_search_qa", "{backbone}/{trained}/{init}/seed{seed}"),
    benchmark:
        benchmark_path("eval_search_qa", "{backbone}/{trained}/{init}/seed{seed}")
    conda:
        CONDA_ENV
    threads: JOB_THREADS
    params:
        **stage_job(
            downstream_params,
            server_log=log_path("retriever", "eval_search_qa/{backbone}/{trained}/{init}/seed{seed}"),
        ),
    shell:
        stage("eval_search_qa")
