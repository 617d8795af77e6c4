"""Search-server throughput: one batched request per agent turn against one request per query.

The MEM1 agent sends every query of a turn in one POST /retrieve (memtrain/agent/search_agent.py), so
the encoder embeds them as one batch and FAISS searches them together. This measures, in one run, on
the real server (child process, real HTTP on loopback, the configured encoder and a flat index over the
first --passages bundled summaries), the queries per second of
  batched     --queries queries sent --batch at a time,
  sequential  the same queries, one request each,
and prints the ratio. The queries are the offline QA set's questions. Timings depend on the machine and
on what else runs on it; nothing is asserted.

    .venv/bin/python bench/retriever_throughput.py [--passages 2000] [--queries 64] [--batch 16] [--top-k 3]
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from memtrain import config as memtrain_config
from memtrain.data import offline_qa, retrieval, sources
from memtrain.retriever import serve

ROOT = Path(__file__).resolve().parent.parent


def build_corpus(folder: Path, passages: int, encoder_ref: str) -> tuple[Path, Path, float]:
    """Corpus table and flat index over the first `passages` bundled summaries; seconds spent embedding."""
    records = list(itertools.islice(sources.vital_articles(), passages))
    table = pa.table({name: [r[name] for r in records] for name in ("id", "title", "text")})
    pq.write_table(table, folder / "corpus.parquet")
    encoder = retrieval.load_encoder(encoder_ref, allow_downloads=False)
    started = time.perf_counter()
    vectors = retrieval.embed(encoder, table.column("text").to_pylist())
    seconds = time.perf_counter() - started
    retrieval.save_index(retrieval.build_index(vectors, {"type": "flat"}), folder / "index.faiss")
    return folder / "corpus.parquet", folder / "index.faiss", seconds


def queries_per_second(client, queries: list[str], batch: int, top_k: int) -> float:
    started = time.perf_counter()
    for start in range(0, len(queries), batch):
        client.search(queries[start : start + batch], top_k)
    return len(queries) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "config" / "config.yaml"))
    parser.add_argument("--passages", type=int, default=2000)
    parser.add_argument("--queries", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16, help="queries per request in the batched mode")
    parser.add_argument("--top-k", type=int, default=3)
    args = parser.parse_args()

    settings = memtrain_config.load(args.config)["retriever"]
    questions = [q["question"] for q in offline_qa.load_questions()]
    queries = list(itertools.islice(itertools.cycle(questions), args.queries))
    with tempfile.TemporaryDirectory() as tmp:
        corpus, index, embed_seconds = build_corpus(Path(tmp), args.passages, settings["encoder"])
        with serve(
            corpus, index, settings["encoder"], query_prefix=settings["query_prefix"], top_k=args.top_k, threads=1
        ) as client:
            queries_per_second(client, queries[: args.batch], args.batch, args.top_k)  # warm-up
            batched = queries_per_second(client, queries, args.batch, args.top_k)
            sequential = queries_per_second(client, queries, 1, args.top_k)
    print(
        f"corpus: {args.passages} passages embedded in {embed_seconds:.1f} s "
        f"({args.passages / embed_seconds:.0f} passages/s); {args.queries} queries, top-{args.top_k}"
    )
    print(f"batched ({args.batch} per request): {batched:8.1f} queries/s")
    print(f"sequential (1 per request):  {sequential:8.1f} queries/s")
    print(f"ratio batched / sequential:  {batched / sequential:8.2f}x")


if __name__ == "__main__":
    main()
