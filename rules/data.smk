# Data stages (paper section 3.2): Wikipedia -> passages -> NER and embeddings (sharded) -> masked documents.


rule data:
    input:
        f"{DATA}/documents.parquet",
        f"{DATA}/documents_heldout.parquet",
        f"{DATA}/dataset_card.json",
        f"{DATA}/document_lengths.png",


rule wiki_download:
    output:
        articles=f"{DATA}/articles.parquet",
    log:
        log_path("wiki_download"),
    benchmark:
        benchmark_path("wiki_download")
    conda:
        CONDA_ENV
    params:
        **stage_job("data.source", "allow_downloads"),
    shell:
        stage("wiki_download")


rule passages:
    input:
        articles=f"{DATA}/articles.parquet",
    output:
        passages=f"{DATA}/passages.parquet",
    log:
        log_path("passages"),
    benchmark:
        benchmark_path("passages")
    conda:
        CONDA_ENV
    params:
        **stage_job("data.passages"),
    shell:
        stage("passages")


rule ner:
    input:
        passages=f"{DATA}/passages.parquet",
    output:
        entities=f"{DATA}/entities/{{scatteritem}}.parquet",
    log:
        log_path("ner", "{scatteritem}"),
    benchmark:
        benchmark_path("ner", "{scatteritem}")
    conda:
        CONDA_ENV
    threads: config["data"]["ner"]["threads"]
    params:
        **stage_job("data.ner"),
    shell:
        stage("ner")


rule embed:
    input:
        passages=f"{DATA}/passages.parquet",
    output:
        embeddings=f"{DATA}/embeddings/{{scatteritem}}.npy",
    log:
        log_path("embed", "{scatteritem}"),
    benchmark:
        benchmark_path("embed", "{scatteritem}")
    conda:
        CONDA_ENV
    threads: config["data"]["embed"]["threads"]
    params:
        **stage_job("data.embed", "allow_downloads"),
    shell:
        stage("embed")


rule index:
    input:
        embeddings=gather.embed(f"{DATA}/embeddings/{{scatteritem}}.npy"),
    output:
        index=f"{DATA}/passages.faiss",
    log:
        log_path("index"),
    benchmark:
        benchmark_path("index")
    conda:
        CONDA_ENV
    params:
        **stage_job("data.index"),
    shell:
        stage("index")


rule tokenizer:
    output:
        tokenizer=directory(f"{RESULTS}/models/{{backbone}}/tokenizer"),
    log:
        log_path("tokenizer", "{backbone}"),
    benchmark:
        benchmark_path("tokenizer", "{backbone}")
    conda:
        CONDA_ENV
    params:
        **stage_job(lambda w: backbone_slice(w, "allow_downloads")),
    shell:
        stage("tokenizer")


rule assemble:
    input:
        passages=f"{DATA}/passages.parquet",
        entities=gather.ner(f"{DATA}/entities/{{scatteritem}}.parquet"),
        embeddings=gather.embed(f"{DATA}/embeddings/{{scatteritem}}.npy"),
        index=f"{DATA}/passages.faiss",
        tokenizer=f"{RESULTS}/models/{TOKENIZER_BACKBONE}/tokenizer",
    output:
        train=f"{DATA}/documents.parquet",
        heldout=f"{DATA}/documents_heldout.parquet",
        stats=f"{DATA}/assembly_stats.json",
    log:
        log_path("assemble"),
    benchmark:
        benchmark_path("assemble")
    conda:
        CONDA_ENV
    params:
        **stage_job("data.documents", "data.index", "seed"),
    shell:
        stage("assemble")


rule dataset_card:
    input:
        train=f"{DATA}/documents.parquet",
        heldout=f"{DATA}/documents_heldout.parquet",
        stats=f"{DATA}/assembly_stats.json",
    output:
        card=f"{DATA}/dataset_card.json",
        figure=f"{DATA}/document_lengths.png",
    log:
        log_path("dataset_card"),
    benchmark:
        benchmark_path("dataset_card")
    conda:
        CONDA_ENV
    params:
        **stage_job("data.documents"),
    shell:
        stage("dataset_card")
