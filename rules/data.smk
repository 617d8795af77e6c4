# Data stages (paper section 3.2): Wikipedia -> passages -> NER and embeddings (sharded) -> masked documents.


rule data:
    input:
        f"{DATA}/documents.parquet",
        f"{DATA}/documents_heldout.parquet",
        f"{DATA}/dataset_card.json",
        f"{DATA}/document_lengths.png",


rule wiki_download:
    output:
        f"{DATA}/articles.parquet",
    params:
        cfg=as_json({"source": config["data"]["source"], "allow_downloads": config["allow_downloads"]}),
        wildcards=wildcards_json,
    conda:
        CONDA_ENV
    log:
        log_path("wiki_download"),
    benchmark:
        benchmark_path("wiki_download")
    shell:
        memtrain("wiki_download", "--output {output:q}")


rule passages:
    input:
        f"{DATA}/articles.parquet",
    output:
        f"{DATA}/passages.parquet",
    params:
        cfg=as_json(config["data"]["passages"]),
        wildcards=wildcards_json,
    conda:
        CONDA_ENV
    log:
        log_path("passages"),
    benchmark:
        benchmark_path("passages")
    shell:
        memtrain("passages", "--input {input:q} --output {output:q}")


rule ner:
    input:
        f"{DATA}/passages.parquet",
    output:
        f"{DATA}/entities/{{scatteritem}}.parquet",
    params:
        cfg=as_json(config["data"]["ner"]),
        wildcards=wildcards_json,
        shard=shard_index,
        shards=config["data"]["ner"]["shards"],
    threads: config["data"]["ner"]["threads"]
    conda:
        CONDA_ENV
    log:
        log_path("ner", "/{scatteritem}"),
    benchmark:
        benchmark_path("ner", "/{scatteritem}")
    shell:
        memtrain("ner", "--input {input:q} --output {output:q} --shard {params.shard} --shards {params.shards} --threads {threads}")


rule embed:
    input:
        f"{DATA}/passages.parquet",
    output:
        f"{DATA}/embeddings/{{scatteritem}}.npy",
    params:
        cfg=as_json({**config["data"]["embed"], "allow_downloads": config["allow_downloads"]}),
        wildcards=wildcards_json,
        shard=shard_index,
        shards=config["data"]["embed"]["shards"],
    threads: config["data"]["embed"]["threads"]
    conda:
        CONDA_ENV
    log:
        log_path("embed", "/{scatteritem}"),
    benchmark:
        benchmark_path("embed", "/{scatteritem}")
    shell:
        memtrain("embed", "--input {input:q} --output {output:q} --shard {params.shard} --shards {params.shards} --threads {threads}")


rule index:
    input:
        gather.embed(f"{DATA}/embeddings/{{scatteritem}}.npy"),
    output:
        f"{DATA}/passages.faiss",
    params:
        cfg=as_json(config["data"]["index"]),
        wildcards=wildcards_json,
    conda:
        CONDA_ENV
    log:
        log_path("index"),
    benchmark:
        benchmark_path("index")
    shell:
        memtrain("index", "--inputs {input:q} --output {output:q}")


rule tokenizer:
    output:
        directory(f"{RESULTS}/models/{{backbone}}/tokenizer"),
    params:
        cfg=lambda w: as_json({"backbone": config["backbones"][w.backbone], "allow_downloads": config["allow_downloads"]}),
        wildcards=wildcards_json,
    conda:
        CONDA_ENV
    log:
        log_path("tokenizer", "/{backbone}"),
    benchmark:
        benchmark_path("tokenizer", "/{backbone}")
    shell:
        memtrain("tokenizer", "--backbone {wildcards.backbone:q} --output {output:q}")


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
    params:
        cfg=as_json({"documents": config["data"]["documents"], "index": config["data"]["index"], "seed": config["seed"]}),
        wildcards=wildcards_json,
    conda:
        CONDA_ENV
    log:
        log_path("assemble"),
    benchmark:
        benchmark_path("assemble")
    shell:
        memtrain(
            "assemble",
            "--passages {input.passages:q} --entities {input.entities:q} --embeddings {input.embeddings:q} "
            "--index {input.index:q} --tokenizer {input.tokenizer:q} --train {output.train:q} --heldout {output.heldout:q} "
            "--stats {output.stats:q}",
        )


rule dataset_card:
    input:
        train=f"{DATA}/documents.parquet",
        heldout=f"{DATA}/documents_heldout.parquet",
        stats=f"{DATA}/assembly_stats.json",
    output:
        card=f"{DATA}/dataset_card.json",
        figure=f"{DATA}/document_lengths.png",
    params:
        cfg=as_json({"documents": config["data"]["documents"]}),
        wildcards=wildcards_json,
    conda:
        CONDA_ENV
    log:
        log_path("dataset_card"),
    benchmark:
        benchmark_path("dataset_card")
    shell:
        memtrain(
            "dataset_card",
            "--train {input.train:q} --heldout {input.heldout:q} --assembly {input.stats:q} "
            "--card {output.card:q} --figure {output.figure:q}",
        )
