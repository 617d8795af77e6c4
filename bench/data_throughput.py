"""Throughput of the data stages on this machine, and what it implies for the paper's workload.

One run measures, on a slice of the configured corpus and with the code the stages run:
  NER      a naive `nlp(text)` loop over the full spaCy pipeline against the stage's path
           (only `ner` enabled, nlp.pipe in batches, n_process 1 and 2), and whether they agree;
  embed    sentence-transformers passages/s with the stage's thread count;
  search   top-k neighbour queries on the configured index, flat against HNSW, HNSW recall@k;
  assemble masked documents/s with the policy tokenizer counting tokens.
It prints ratios measured in this run (never asserts timings, which depend on the machine), then
projects each stage to paper scale. Projections assume linear scaling and are estimates, not measurements.

    .venv/bin/python bench/data_throughput.py [--config config/config.yaml] [--passages 2000]
        [--pivots 200] [--output results/benchmarks/data.json] [--results-dir DIR] [--no-mlflow]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from memtrain import config as memtrain_config
from memtrain.data import documents, entities, retrieval, sources
from memtrain.data.passages import passages as split_passages
from memtrain.io import write_json

# Paper workload. Words are an estimate, not a count of the dump: no offline copy of the full
# articles exists here to measure them.
PAPER_ARTICLES = 6_407_814  # wikimedia/wikipedia 20231101.en, Hugging Face dataset card
WORDS_PER_ARTICLE = 668  # Wikipedia:Size of Wikipedia (April 2024: 6.8M articles, >4.5 billion words, ~668 per article)
PAPER_WORDS = PAPER_ARTICLES * WORDS_PER_ARTICLE  # ~4.3e9 words
PAPER_DOCUMENTS = 30_000  # paper section 4.1
PAPER_PASSAGES_PER_DOCUMENT = 150  # N at paper scale (paper section 4.1)
WIDE_SHARDS = 64  # a cluster-sized scatter, next to the config's own shard counts

TARGET_PIPE2_VS_NAIVE = 4.0  # what the NER stage's design is meant to buy on 2 cores
BUSY_CORES = 0.2  # cores used by other processes during a timed step above which the summary warns
WARMUP_TEXTS = 16
SEARCH_REPEATS = 5  # searches on a small slice take milliseconds: the median of a few is steadier
ASSEMBLY_TRAIN, ASSEMBLY_HELDOUT = 40, 8  # caps on the config's counts so that the slice can supply them

T = TypeVar("T")


def timed(function: Callable[[], T]) -> tuple[T, float]:
    started = time.perf_counter()
    result = function()
    return result, time.perf_counter() - started


def own_cpu_seconds() -> float:
    """CPU time of this process and of its finished children (nlp.pipe's worker processes)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def machine_cpu_seconds() -> float:
    """Busy CPU time of the whole machine, all processes."""
    import psutil

    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def timed_cores(function: Callable[[], T]) -> tuple[T, dict[str, float]]:
    """Result, wall seconds, cores this step used and cores other processes used meanwhile. Other work on
    the machine (concurrent jobs, tests) takes cores from a step, most visibly from n_process=2: this tells a
    busy machine from slow code."""
    own, machine = own_cpu_seconds(), machine_cpu_seconds()
    result, seconds = timed(function)
    own = own_cpu_seconds() - own
    others = max(machine_cpu_seconds() - machine - own, 0.0)
    return result, {"seconds": seconds, "cores_used": own / seconds, "other_work_cores": others / seconds}


def word_count(texts: Iterable[str]) -> int:
    """Words as the ner stage counts them for its words_per_second metric."""
    return sum(len(text.split()) for text in texts)


def load_slice(config: Mapping[str, Any], count: int) -> dict[str, Any]:
    """The first `count` passages of the configured corpus, split exactly as the passages stage does."""
    data = config["data"]
    articles = sources.articles(data["source"], allow_downloads=False)
    table = split_passages(articles, data["passages"]["min_words"], data["passages"]["max_words"]).slice(0, count)
    words = table.column("num_words").to_pylist()
    return {
        "articles": articles.num_rows,
        "ids": table.column("passage_id").to_pylist(),
        "texts": table.column("text").to_pylist(),
        "words": sum(words),
        "mean_passage_words": sum(words) / len(words),
    }


# --- NER -------------------------------------------------------------------------------------------


class _Replay:
    """Feeds already parsed docs through entities.extract, so the naive loop's entities are filtered
    by the very code the stage uses rather than by a copy of its rules."""

    def __init__(self, docs: Sequence[Any]) -> None:
        self.docs = docs

    def pipe(self, texts: Iterable[str], batch_size: int, n_process: int) -> Iterable[Any]:
        return iter(self.docs)


def naive_ner(model: str, texts: Sequence[str]) -> tuple[list[Any], dict[str, Any]]:
    """The obvious way to run spaCy: every component loaded, one call per text. The baseline."""
    import spacy

    nlp = spacy.load(model)
    for text in texts[:WARMUP_TEXTS]:
        nlp(text)
    docs, timing = timed_cores(lambda: [nlp(text) for text in texts])
    return docs, {"components": list(nlp.pipe_names), **timing}


def pipe_ner(
    nlp: Any, texts: Sequence[str], ner: Mapping[str, Any], n_process: int
) -> tuple[list[list[dict]], dict[str, Any]]:
    """The ner stage's own call. With n_process > 1 the timing includes starting the worker processes,
    as it does in the stage, since nlp.pipe starts them anew on every call."""
    found, timing = timed_cores(
        lambda: entities.extract(nlp, texts, ner["labels"], ner["min_chars"], ner["batch_size"], n_process)
    )
    return found, {"components": list(nlp.pipe_names), "n_process": n_process, **timing}


def throughput(timing: dict[str, Any], texts: Sequence[str]) -> dict[str, Any]:
    words = word_count(texts)
    return {"passages": len(texts), "words": words, **timing, "words_per_second": words / timing["seconds"]}


def agreement(left: Sequence[list[dict]], right: Sequence[list[dict]]) -> float:
    """Fraction of passages whose (text, label, start, end) entity lists are identical."""

    def spans(found: list[dict]) -> list[tuple]:
        return [(e["text"], e["label"], e["start"], e["end"]) for e in found]

    same = sum(spans(a) == spans(b) for a, b in zip(left, right, strict=True))
    return same / max(len(left), 1)


def measure_ner(
    config: Mapping[str, Any], texts: Sequence[str], naive_count: int
) -> tuple[dict[str, Any], list[list[dict]]]:
    """Words/s of the naive loop (on the first naive_count texts) and of the stage's path with 1 and 2 processes."""
    ner = config["data"]["ner"]
    subset = texts[:naive_count]
    docs, naive = naive_ner(ner["model"], subset)
    naive_entities = entities.extract(_Replay(docs), subset, ner["labels"], ner["min_chars"])

    nlp = entities.load_pipeline(ner["model"])
    entities.extract(nlp, texts[:WARMUP_TEXTS], ner["labels"], ner["min_chars"], ner["batch_size"], 1)
    found, pipe = pipe_ner(nlp, texts, ner, n_process=1)
    found2, pipe2 = pipe_ner(nlp, texts, ner, n_process=2)

    result = {
        "model": ner["model"],
        "batch_size": ner["batch_size"],
        "naive": throughput(naive, subset),
        "pipe": throughput(pipe, texts),
        "pipe2": throughput(pipe2, texts),
        "entities": sum(map(len, found)),
        "passages_without_entities": sum(not f for f in found),
        "same_entities_pipe_vs_naive": agreement(found[: len(subset)], naive_entities),
        "same_entities_pipe2_vs_pipe": agreement(found2, found),
    }
    return result, found


# --- embedding, search ---------------------------------------------------------------------------


def measure_embedding(config: Mapping[str, Any], texts: Sequence[str]) -> tuple[dict[str, Any], np.ndarray]:
    """Passages/s with the thread count the embed stage sets for itself (data.embed.threads); the
    previous count is restored after, since it is also FAISS's OpenMP pool and the search stage leaves it be."""
    import torch

    embed = config["data"]["embed"]
    default_threads = torch.get_num_threads()
    torch.set_num_threads(embed["threads"])
    encoder, load_seconds = timed(
        lambda: retrieval.load_encoder(embed["model"], allow_downloads=False, device=embed["device"])
    )
    retrieval.embed(encoder, texts[:WARMUP_TEXTS], embed["passage_prefix"], embed["batch_size"])
    vectors, timing = timed_cores(lambda: retrieval.embed(encoder, texts, embed["passage_prefix"], embed["batch_size"]))
    result = {
        "model": embed["model"],
        "device": embed["device"],
        "torch_threads": torch.get_num_threads(),
        "batch_size": embed["batch_size"],
        "passages": len(texts),
        "dimension": int(vectors.shape[1]),
        "load_seconds": load_seconds,
        **timing,
        "passages_per_second": len(texts) / timing["seconds"],
    }
    torch.set_num_threads(default_threads)
    return result, vectors


def stage_index(embeddings: np.ndarray, settings: Mapping[str, Any]) -> tuple[Any, float]:
    """An index as the assemble stage sees it: built, written and read back, which is where the
    search-time knobs (efSearch, nprobe) get applied. Only the build is timed."""
    built, seconds = timed(lambda: retrieval.build_index(embeddings, settings))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "index.faiss"
        retrieval.save_index(built, path)
        return retrieval.load_index(path, settings), seconds


def search_seconds(index: Any, queries: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    """Median wall time of searching all queries at once, over SEARCH_REPEATS runs; ids of the last."""
    times, ids = [], None
    for _ in range(SEARCH_REPEATS):
        (_, ids), seconds = timed(lambda: retrieval.search(index, queries, k))
        times.append(seconds)
    return ids, statistics.median(times)


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean fraction of the exact top-k that the approximate search also returned."""
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found.tolist(), exact.tolist())]))


def measure_search(config: Mapping[str, Any], embeddings: np.ndarray, pivots: int) -> tuple[dict[str, Any], Any]:
    """Search time of the configured index type, of flat and of HNSW, at the depth assemble asks for."""
    data = config["data"]
    settings = data["documents"]
    k = settings["num_related"] + settings["retrieval_margin"] + 1
    rng = np.random.default_rng(config["seed"])
    queries = embeddings[rng.choice(len(embeddings), size=min(pivots, len(embeddings)), replace=False)]
    indexes, results, exact = {}, {}, None
    for kind in dict.fromkeys(["flat", data["index"]["type"], "hnsw"]):
        index, build = stage_index(embeddings, {**data["index"], "type": kind})
        ids, seconds = search_seconds(index, queries, k)
        exact = ids if kind == "flat" else exact
        indexes[kind] = index
        results[kind] = {
            "build_seconds": build,
            "search_seconds": seconds,
            "queries_per_second": len(queries) / seconds,
            "seconds_per_query": seconds / len(queries),
            f"recall_at_{k}": recall(ids, exact),
        }
    summary = {
        "configured_type": data["index"]["type"],
        "k": k,
        "pivots": len(queries),
        "vectors": len(embeddings),
        "hnsw_m": data["index"]["hnsw_m"],
        "ef_search": data["index"]["ef_search"],
        "hnsw_speedup_vs_flat": results["flat"]["search_seconds"] / results["hnsw"]["search_seconds"],
        **results,
    }
    return summary, indexes[data["index"]["type"]]


# --- assembly ------------------------------------------------------------------------------------


def policy_token_counter(config: Mapping[str, Any]) -> tuple[Callable[[Sequence[str]], list[int]], float]:
    """The policy tokenizer counting as the assemble stage does (no special tokens), and its load time."""
    from memtrain.models import load_tokenizer, token_counter

    name = memtrain_config.tokenizer_backbone(config)
    tokenizer, seconds = timed(lambda: load_tokenizer(name, config["backbones"][name], allow_downloads=False))
    return token_counter(tokenizer), seconds


def measure_assembly(
    config: Mapping[str, Any],
    ids: list[str],
    texts: list[str],
    found: list[list[dict]],
    embeddings: np.ndarray,
    index: Any,
) -> dict[str, Any]:
    """Documents/s of documents.assemble on the slice, with the config's settings but fewer documents."""
    base = config["data"]["documents"]
    settings = {
        **base,
        "num_train": min(base["num_train"], ASSEMBLY_TRAIN),
        "num_heldout": min(base["num_heldout"], ASSEMBLY_HELDOUT),
    }
    depth = settings["num_related"] + settings["retrieval_margin"] + 1
    corpus = documents.Corpus(ids, texts, found, embeddings)
    count_tokens, load_seconds = policy_token_counter(config)
    count_tokens(texts[:WARMUP_TEXTS])

    def neighbours(pivots: np.ndarray) -> np.ndarray:
        return retrieval.search(index, corpus.embeddings[pivots], depth)[1]

    (train, heldout, stats), seconds = timed(
        lambda: documents.assemble(corpus, neighbours, count_tokens, settings, config["seed"])
    )
    built = train.to_pylist() + heldout.to_pylist()
    return {
        "train_documents": train.num_rows,
        "heldout_documents": heldout.num_rows,
        "num_passages": settings["num_passages"],
        "min_tokens": settings["min_tokens"],
        "max_tokens": settings["max_tokens"],
        "tokenizer_load_seconds": load_seconds,
        "seconds": seconds,
        "documents_per_second": len(built) / seconds,
        "mean_passages_per_document": statistics.mean(len(d["passages"]) for d in built),
        "mean_tokens_per_document": statistics.mean(d["num_tokens"] for d in built),
        "pivots_tried": stats.pivots_tried,
        "leaking_passages_replaced": stats.leaking_replaced,
    }


# --- projection ----------------------------------------------------------------------------------


def stage_projection(job_hours: float, shards: int | None = None, threads: int = 1) -> dict[str, float | None]:
    """One stage's projection: one job doing all the work, then that work scattered over the config's shards
    and over WIDE_SHARDS jobs of `threads` cores each, assuming linear scaling. shards=None: a single job
    that cannot be scattered (its thread use was not controlled, so no CPU-hours)."""
    if shards is None:
        return {
            "cpu_hours": None,
            "one_job_hours": job_hours,
            "wall_hours_config_shards": job_hours,
            "wall_hours_64_shards": job_hours,
        }
    return {
        "cpu_hours": job_hours * threads,
        "one_job_hours": job_hours,
        "wall_hours_config_shards": job_hours / shards,
        "wall_hours_64_shards": job_hours / WIDE_SHARDS,
    }


def project(report: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """Paper-scale time of each data stage from this run's throughputs (an extrapolation, not a measurement).

    NER and embedding are scattered over shards; index building, neighbour search and assembly are one job each.
    """
    data = config["data"]
    ner, embed, search, assembly = report["ner"], report["embedding"], report["search"], report["assembly"]
    paper_passages = PAPER_WORDS / report["slice"]["mean_passage_words"]
    scale = paper_passages / search["vectors"]

    ner_hours = PAPER_WORDS / ner["pipe"]["words_per_second"] / 3600  # n_process=1: CPU-hours of one core
    ner_threads = data["ner"]["threads"]  # a ner job runs nlp.pipe with this many processes
    embed_hours = paper_passages / embed["passages_per_second"] / 3600
    flat_hours = PAPER_DOCUMENTS * search["flat"]["seconds_per_query"] * scale / 3600
    hnsw_hours = PAPER_DOCUMENTS * search["hnsw"]["seconds_per_query"] / 3600
    hnsw_build = search["hnsw"]["build_seconds"] * scale / 3600
    assembly_hours = (
        PAPER_DOCUMENTS
        / assembly["documents_per_second"]
        * PAPER_PASSAGES_PER_DOCUMENT
        / assembly["mean_passages_per_document"]
        / 3600
    )

    return {
        "constants": {
            "articles": PAPER_ARTICLES,
            "words_per_article": WORDS_PER_ARTICLE,
            "words": PAPER_WORDS,
            "passages": paper_passages,
            "documents": PAPER_DOCUMENTS,
            "passages_per_document": PAPER_PASSAGES_PER_DOCUMENT,
            "wide_shards": WIDE_SHARDS,
            "flat_index_gib": paper_passages * embed["dimension"] * 4 / 2**30,
        },
        "stages": {
            "ner": stage_projection(ner_hours / ner_threads, data["ner"]["shards"], ner_threads),
            "embed_cpu": stage_projection(embed_hours, data["embed"]["shards"], embed["torch_threads"]),
            "index_build_hnsw": stage_projection(hnsw_build),
            "search_flat": stage_projection(flat_hours),
            "search_hnsw": stage_projection(hnsw_hours),
            "assemble": stage_projection(assembly_hours),
        },
        "notes": [
            "Projections, not measurements: linear scaling from a slice of the bundled summaries.",
            (
                f"Words are estimated ({PAPER_ARTICLES:,} articles x {WORDS_PER_ARTICLE} words); passages = words / "
                "mean passage words of the slice (summaries are pooled; full articles give longer passages, so fewer)."
            ),
            (
                "Sharded wall time assumes every shard gets its own cores and scales linearly (compare the measured "
                "n_process=2 gain); index build, search and assembly are single jobs, so more shards do not help them."
            ),
            "Embedding is projected on CPU; a GPU is typically 50-100x faster.",
            (
                "Flat search time is scaled by paper passages / slice passages (brute force grows with the corpus); "
                "HNSW per-query time is left unscaled (it grows roughly logarithmically): the realistic option."
            ),
            "HNSW build is scaled linearly, a lower bound (insertion cost grows with the graph).",
            "Assembly is one job; its time is scaled by 150 / measured passages per document for tokenization.",
        ],
    }


# --- report --------------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    import faiss
    import sentence_transformers
    import spacy
    import torch

    return {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "faiss_omp_threads": faiss.omp_get_max_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "spacy": spacy.__version__,
        "sentence_transformers": sentence_transformers.__version__,
        "faiss": faiss.__version__,
        "torch": torch.__version__,
    }


def ratios(report: Mapping[str, Any]) -> dict[str, Any]:
    ner = report["ner"]
    naive, pipe, pipe2 = (ner[run]["words_per_second"] for run in ("naive", "pipe", "pipe2"))
    return {
        "pipe_vs_naive": pipe / naive,
        "pipe2_vs_naive": pipe2 / naive,
        "pipe2_vs_pipe": pipe2 / pipe,
        "hnsw_vs_flat_search": report["search"]["hnsw_speedup_vs_flat"],
        "target_pipe2_vs_naive": TARGET_PIPE2_VS_NAIVE,
        "target_met": pipe2 / naive >= TARGET_PIPE2_VS_NAIVE,
    }


def numeric(tree: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Every number in the report under a dotted name, as MLflow metrics (booleans as 0/1)."""
    flat: dict[str, float] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(numeric(value, f"{prefix}{key}."))
        elif isinstance(value, (int, float)):
            flat[f"{prefix}{key}"] = float(value)
    return flat


def duration(hours: float) -> str:
    """Hours in the unit a reader grasps at once: projections span seconds to days."""
    seconds = hours * 3600
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:,.1f} {unit}"
    return f"{seconds:.1f} s"


def summary(report: Mapping[str, Any]) -> str:
    r, ner, emb, search, asm = (report[k] for k in ("ratios", "ner", "embedding", "search", "assembly"))
    k = search["k"]
    lines = [
        "== Ratios (this run) ==",
        f"  pipe (n_process=1) vs naive loop   {r['pipe_vs_naive']:8.2f}x",
        (
            f"  pipe (n_process=2) vs naive loop   {r['pipe2_vs_naive']:8.2f}x   target >= {TARGET_PIPE2_VS_NAIVE:.0f}x: "
            f"{'met' if r['target_met'] else 'NOT met'}"
        ),
        f"  pipe n_process=2 vs n_process=1    {r['pipe2_vs_pipe']:8.2f}x",
        f"  HNSW vs flat search (slice size)   {r['hnsw_vs_flat_search']:8.2f}x",
        "== NER ==",
        f"  naive loop over {ner['naive']['components']}",
        f"  pipe with {ner['pipe']['components']} (n_process=2: worker start-up included)",
        f"  {'':20s} {'words/s':>8s} {'passages':>9s} {'seconds':>8s} {'cores used':>11s} {'other work':>11s}",
        *(
            f"  {label:20s} {ner[run]['words_per_second']:8,.0f} {ner[run]['passages']:9d} {ner[run]['seconds']:8.1f} "
            f"{ner[run]['cores_used']:11.2f} {ner[run]['other_work_cores']:11.2f}"
            for run, label in (("naive", "naive loop"), ("pipe", "pipe n_process=1"), ("pipe2", "pipe n_process=2"))
        ),
        (
            f"  same entities: pipe vs naive {ner['same_entities_pipe_vs_naive']:.1%} of passages, "
            f"n_process=2 vs 1 {ner['same_entities_pipe2_vs_pipe']:.1%}"
        ),
        "== Embedding ==",
        (
            f"  {emb['passages_per_second']:.1f} passages/s ({emb['passages']} passages, {emb['seconds']:.1f} s, "
            f"{emb['torch_threads']} torch thread(s), batch {emb['batch_size']}; {emb['cores_used']:.2f} cores used, "
            f"{emb['other_work_cores']:.2f} by other work)"
        ),
        f"== Search: {search['pivots']} pivots, top-{k} of {search['vectors']} (configured: {search['configured_type']}) ==",
        *(
            f"  {kind:5s} build {search[kind]['build_seconds'] * 1e3:8.1f} ms   all pivots {search[kind]['search_seconds'] * 1e3:7.2f} ms"
            f"   {search[kind]['queries_per_second']:10,.0f} queries/s   recall@{k} {search[kind][f'recall_at_{k}']:.3f}"
            for kind in ("flat", "ivf", "hnsw")
            if kind in search
        ),
        "== Assembly ==",
        (
            f"  {asm['documents_per_second']:.2f} documents/s ({asm['train_documents']} train + {asm['heldout_documents']} "
            f"held-out in {asm['seconds']:.1f} s; {asm['mean_passages_per_document']:.1f} passages and "
            f"{asm['mean_tokens_per_document']:.0f} tokens per document; {asm['pivots_tried']} pivots tried)"
        ),
    ]
    projection = report["projection"]
    constants = projection["constants"]
    lines += [
        (
            f"== PROJECTED paper scale (estimates): {constants['words']:.2e} words, {constants['passages']:.2e} passages, "
            f"{constants['documents']:,} documents of {constants['passages_per_document']} passages =="
        ),
        f"  {'stage':18s} {'CPU time':>10s} {'one job':>10s} {'config shards':>14s} {f'{WIDE_SHARDS} shards':>10s}",
        *(
            f"  {name:18s} {duration(stage['cpu_hours']) if stage['cpu_hours'] is not None else '-':>10s} "
            f"{duration(stage['one_job_hours']):>10s} {duration(stage['wall_hours_config_shards']):>14s} "
            f"{duration(stage['wall_hours_64_shards']):>10s}"
            for name, stage in projection["stages"].items()
        ),
        f"  flat index of all passages: {constants['flat_index_gib']:,.0f} GiB of float32 vectors",
        *(f"  - {note}" for note in projection["notes"]),
    ]
    machine = report["machine"]
    lines.append(f"Runtime {report['runtime_seconds']:.0f} s on {machine['cpu_count']} CPU(s).")
    if report["other_work_cores_max"] >= BUSY_CORES:
        lines.append(
            f"WARNING: other processes used up to {report['other_work_cores_max']:.2f} cores during the timed "
            "steps; throughputs (n_process=2 most) are understated."
        )
    return "\n".join(lines)


def log_to_mlflow(report: Mapping[str, Any], config: Mapping[str, Any], args: argparse.Namespace) -> str:
    from memtrain import tracking

    params = {
        "passages": args.passages,
        "pivots": args.pivots,
        "naive_passages": args.naive_passages,
        "config": str(args.config),
        "data": config["data"],
    }
    with tracking.stage_run(
        "bench_data_throughput",
        params=params,
        results_dir=config["results_dir"],
        experiment=config["tracking"]["experiment"],
    ) as run:
        run.log_metrics(numeric(report))
        run.log_dict(report, "data_throughput.json")
        return run.run_id


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config/config.yaml")
    parser.add_argument("--passages", type=int, default=2000, help="passages of the corpus slice")
    parser.add_argument("--naive-passages", type=int, default=400, help="passages for the slow naive NER loop")
    parser.add_argument("--pivots", type=int, default=200, help="neighbour queries timed")
    parser.add_argument("--results-dir", default=None, help="overrides the config's results_dir (MLflow store)")
    parser.add_argument("--output", default=None, help="JSON report (default <results_dir>/benchmarks/data.json)")
    parser.add_argument("--no-mlflow", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    started = time.perf_counter()
    config = memtrain_config.load(
        args.config, overrides={"results_dir": args.results_dir} if args.results_dir else None
    )
    output = Path(args.output or Path(config["results_dir"]) / "benchmarks" / "data.json")

    corpus = load_slice(config, args.passages)
    if len(corpus["ids"]) < args.passages:
        print(
            f"note: the configured corpus gives {len(corpus['ids'])} passages, fewer than --passages {args.passages}",
            file=sys.stderr,
        )
    # NER first: its n_process=2 run forks, which is safest before torch starts its thread pools.
    progress(f"NER on {len(corpus['ids'])} passages (naive loop on {args.naive_passages})")
    ner, found = measure_ner(config, corpus["texts"], args.naive_passages)
    progress("embedding")
    embedding, vectors = measure_embedding(config, corpus["texts"])
    progress("search")
    search, index = measure_search(config, vectors, args.pivots)
    progress("assembly")
    assembly = measure_assembly(config, corpus["ids"], corpus["texts"], found, vectors, index)

    report: dict[str, Any] = {
        "slice": {
            "articles": corpus["articles"],
            "passages": len(corpus["ids"]),
            "words": corpus["words"],
            "mean_passage_words": corpus["mean_passage_words"],
        },
        "ner": ner,
        "embedding": embedding,
        "search": search,
        "assembly": assembly,
        "machine": machine_info(),
    }
    report["ratios"] = ratios(report)
    report["other_work_cores_max"] = max(
        step["other_work_cores"] for step in (ner["naive"], ner["pipe"], ner["pipe2"], embedding)
    )
    report["projection"] = project(report, config)
    report["runtime_seconds"] = time.perf_counter() - started
    write_json(report, output)
    print(summary(report))
    print(f"Report: {output}")
    if not args.no_mlflow:
        print(f"MLflow run {log_to_mlflow(report, config, args)} in {config['results_dir']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
