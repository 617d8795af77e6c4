"""Stages of the data rules (rules/data.smk, paper section 3.2): Wikipedia -> passages -> NER and embeddings
(sharded) -> masked documents and their card.

Each stage reads its rule's named inputs, writes its outputs atomically and logs its figures to the job's MLflow
run; the logic lives in memtrain.data.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from memtrain import rules
from memtrain.errors import InputError
from memtrain.stages.job import Job, output_summary


def scatter_item(job: Job) -> tuple[int, int]:
    """(0-based shard, shards) of a scattered job, from its scatter item '3-of-8'."""
    item = job.wildcards["scatteritem"]
    shard, shards = item.split("-of-")
    return int(shard) - 1, int(shards)


def wiki_download(job: Job, run) -> None:
    from memtrain.data import sources
    from memtrain.io import write_parquet

    started = time.perf_counter()
    table = sources.articles(job.config["data"]["source"], job.config["allow_downloads"])
    write_parquet(table, job.output.articles)
    words = sum(len(text.split()) for text in table.column("text").to_pylist())
    run.log_metrics({"articles": table.num_rows, "words": words, "seconds": time.perf_counter() - started})
    run.log_dict(output_summary(job.output.articles), "outputs/articles.json")


def passages(job: Job, run) -> None:
    import pyarrow.parquet as pq

    from memtrain.data.passages import passages as split_passages
    from memtrain.io import write_parquet

    settings = job.config["data"]["passages"]
    started = time.perf_counter()
    table = split_passages(pq.read_table(job.input.articles), settings["min_words"], settings["max_words"])
    write_parquet(table, job.output.passages)
    words = table.column("num_words").to_pylist()
    run.log_metrics(
        {
            "passages": table.num_rows,
            "mean_words": sum(words) / len(words),
            "below_min_words": sum(w < settings["min_words"] for w in words),
            "seconds": time.perf_counter() - started,
        }
    )
    run.log_dict(output_summary(job.output.passages), "outputs/passages.json")


def ner(job: Job, run) -> None:
    import pyarrow.parquet as pq

    from memtrain.data import entities
    from memtrain.io import read_parquet_rows, shard_bounds, write_parquet

    settings = job.config["data"]["ner"]
    start, stop = shard_bounds(pq.read_metadata(job.input.passages).num_rows, *scatter_item(job))
    rows = read_parquet_rows(job.input.passages, start, stop, ["passage_id", "text"])
    nlp = entities.load_pipeline(settings["model"])
    started = time.perf_counter()
    texts = rows.column("text").to_pylist()
    found = entities.extract(
        nlp, texts, settings["labels"], settings["min_chars"], settings["batch_size"], n_process=job.threads
    )
    seconds = time.perf_counter() - started
    write_parquet(entities.entities_table(rows.column("passage_id").to_pylist(), found), job.output.entities)
    words = sum(len(t.split()) for t in texts)
    run.log_metrics(
        {
            "passages": len(texts),
            "entities": sum(map(len, found)),
            "passages_without_entities": sum(not f for f in found),
            "words_per_second": words / max(seconds, 1e-9),
            "seconds": seconds,
        }
    )
    run.log_dict(output_summary(job.output.entities), "outputs/entities.json")


def embed(job: Job, run) -> None:
    import pyarrow.parquet as pq
    import torch

    from memtrain.data import retrieval
    from memtrain.io import read_parquet_rows, shard_bounds

    settings = job.config["data"]["embed"]
    torch.set_num_threads(job.threads)
    start, stop = shard_bounds(pq.read_metadata(job.input.passages).num_rows, *scatter_item(job))
    texts = read_parquet_rows(job.input.passages, start, stop, ["text"]).column("text").to_pylist()
    encoder = retrieval.load_encoder(
        settings["model"], allow_downloads=job.config["allow_downloads"], device=settings["device"]
    )
    started = time.perf_counter()
    vectors = retrieval.embed(encoder, texts, settings["passage_prefix"], settings["batch_size"])
    seconds = time.perf_counter() - started
    retrieval.save_array(vectors, job.output.embeddings)
    run.log_metrics(
        {
            "passages": len(texts),
            "dimension": vectors.shape[1],
            "passages_per_second": len(texts) / max(seconds, 1e-9),
            "seconds": seconds,
        }
    )


def index(job: Job, run) -> None:
    from memtrain.data import retrieval

    started = time.perf_counter()
    embeddings = retrieval.load_arrays(job.input.embeddings)
    built = retrieval.build_index(embeddings, job.config["data"]["index"])
    retrieval.save_index(built, job.output.index)
    run.log_metrics({"vectors": built.ntotal, "seconds": time.perf_counter() - started})
    run.log_dict(output_summary(job.output.index), "outputs/index.json")


def tokenizer(job: Job, run) -> None:
    from memtrain.io import atomic_dir
    from memtrain.models import load_tokenizer

    backbone = job.wildcards["backbone"]
    loaded = load_tokenizer(backbone, job.config["backbones"][backbone], job.config["allow_downloads"])
    with atomic_dir(job.output.tokenizer) as tmp:
        loaded.save_pretrained(str(tmp))
    run.log_metrics({"vocab_size": len(loaded)})


def assemble(job: Job, run) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from memtrain.data import documents, retrieval
    from memtrain.io import write_json, write_parquet
    from memtrain.models import load_saved_tokenizer, token_counter

    passages_table = pq.read_table(job.input.passages, columns=["passage_id", "text"])
    entity_table = pa.concat_tables(pq.read_table(path) for path in job.input.entities)
    if entity_table.column("passage_id").to_pylist() != passages_table.column("passage_id").to_pylist():
        raise InputError(
            "entity shards do not list the passages in order: rerun the ner stage", file=job.input.entities[0]
        )
    corpus = documents.Corpus(
        passages_table.column("passage_id").to_pylist(),
        passages_table.column("text").to_pylist(),
        entity_table.column("entities").to_pylist(),
        retrieval.load_arrays(job.input.embeddings),
    )
    faiss_index = retrieval.load_index(job.input.index, job.config["data"]["index"])
    settings = job.config["data"]["documents"]
    depth = settings["num_related"] + settings["retrieval_margin"] + 1
    count_tokens = token_counter(load_saved_tokenizer(job.input.tokenizer))

    def neighbours(pivots):
        return retrieval.search(faiss_index, corpus.embeddings[pivots], depth)[1]

    started = time.perf_counter()
    train, heldout, stats = documents.assemble(corpus, neighbours, count_tokens, settings, job.config["seed"])
    seconds = time.perf_counter() - started
    write_parquet(heldout, job.output.heldout, row_group_size=256)
    write_parquet(train, job.output.train, row_group_size=256)
    assembly = {
        "pivots_tried": stats.pivots_tried,
        "leaking_passages_replaced": stats.leaking_replaced,
        "skipped": dict(sorted(stats.skipped.items())),
        "seconds": seconds,
        "documents_per_second": (train.num_rows + heldout.num_rows) / max(seconds, 1e-9),
    }
    write_json(assembly, job.output.stats)
    run.log_metrics(
        {
            "train_documents": train.num_rows,
            "heldout_documents": heldout.num_rows,
            "pivots_tried": stats.pivots_tried,
            "leaking_passages_replaced": stats.leaking_replaced,
            **{f"skipped_{reason}": count for reason, count in stats.skipped.items()},
            "documents_per_second": assembly["documents_per_second"],
            "seconds": seconds,
        }
    )


def dataset_card(job: Job, run) -> None:
    import pyarrow.parquet as pq

    from memtrain.data import card
    from memtrain.io import atomic_path, write_json

    train, heldout = pq.read_table(job.input.train), pq.read_table(job.input.heldout)
    settings = job.config["data"]["documents"]
    summary = card.card(train, heldout, json.loads(Path(job.input.stats).read_text()), settings)
    figure = card.histogram(train, heldout, settings["min_tokens"], settings["max_tokens"])
    with atomic_path(job.output.figure) as tmp:
        figure.savefig(tmp, format="png")
    write_json(summary, job.output.card)
    run.log_dict(summary, "dataset_card.json")
    run.log_figure(figure, "document_lengths.png")
    run.log_metrics(
        {
            f"{split}_{name}": summary[split]["num_tokens"].get(name)
            for split in ("train", "heldout")
            for name in ("min", "median", "max")
        }
    )


STAGES = {
    rules.WIKI_DOWNLOAD: wiki_download,
    rules.PASSAGES: passages,
    rules.NER: ner,
    rules.EMBED: embed,
    rules.INDEX: index,
    rules.TOKENIZER: tokenizer,
    rules.ASSEMBLE: assemble,
    rules.DATASET_CARD: dataset_card,
}
