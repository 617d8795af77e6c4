"""`python -m memtrain <stage>`: the one entry point that Snakemake rules call.

Each stage reads its inputs, writes its outputs atomically and records itself as an MLflow child run
of the snakemake invocation: its config section as params, its figures as metrics, a summary of its
outputs as artifacts. Stage functions stay thin; the logic lives in the memtrain.data modules.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from memtrain.errors import InputError

STAGES: dict[str, Callable[[argparse.Namespace, Mapping[str, Any], Any], None]] = {}


def stage(name: str, *arguments: tuple[str, dict]):
    """Register a stage function with its own command-line arguments."""
    def register(function):
        function.arguments = arguments
        STAGES[name] = function
        return function
    return register


def arg(flag: str, **kwargs) -> tuple[str, dict]:
    return flag, kwargs


def output_summary(path: str | os.PathLike) -> dict[str, Any]:
    """What a reader of the MLflow run wants to know about an output file without opening it."""
    path = Path(path)
    summary: dict[str, Any] = {"path": str(path), "bytes": path.stat().st_size}
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        metadata = pq.read_metadata(path)
        summary.update(rows=metadata.num_rows, columns=metadata.schema.to_arrow_schema().names)
    return summary


PRUNE = arg("--prune-checkpoints", action="store_true",
            help="delete the run's checkpoints (and a continued run's source) once the final export is written")


def prune_checkpoints(run, args, summary: dict[str, Any], *more: str | None) -> None:
    """With --prune-checkpoints, delete a finished training's checkpoints and those of `more` (the run a
    continuation carried on); the bytes freed go to MLflow."""
    from memtrain.rl import checkpoint

    if args.prune_checkpoints and summary["finished"]:
        folders = [args.checkpoints, *(folder for folder in more if folder)]
        run.log_metrics({"pruned_checkpoint_bytes": sum(checkpoint.prune(f, args.output) for f in folders)})


@stage("wiki_download", arg("--output", required=True))
def wiki_download(args, params, run) -> None:
    from memtrain.data import sources
    from memtrain.io import write_parquet

    started = time.perf_counter()
    table = sources.articles(params["source"], params["allow_downloads"])
    write_parquet(table, args.output)
    words = sum(len(text.split()) for text in table.column("text").to_pylist())
    run.log_metrics({"articles": table.num_rows, "words": words, "seconds": time.perf_counter() - started})
    run.log_dict(output_summary(args.output), "outputs/articles.json")


@stage("passages", arg("--input", required=True), arg("--output", required=True))
def passages(args, params, run) -> None:
    import pyarrow.parquet as pq

    from memtrain.data.passages import passages as split_passages
    from memtrain.io import write_parquet

    started = time.perf_counter()
    table = split_passages(pq.read_table(args.input), params["min_words"], params["max_words"])
    write_parquet(table, args.output)
    words = table.column("num_words").to_pylist()
    run.log_metrics({"passages": table.num_rows, "mean_words": sum(words) / len(words),
                     "below_min_words": sum(w < params["min_words"] for w in words),
                     "seconds": time.perf_counter() - started})
    run.log_dict(output_summary(args.output), "outputs/passages.json")


@stage("ner", arg("--input", required=True), arg("--output", required=True), arg("--threads", type=int, default=1),
       arg("--shard", type=int, required=True), arg("--shards", type=int, required=True))
def ner(args, params, run) -> None:
    import pyarrow.parquet as pq

    from memtrain.data import entities
    from memtrain.io import read_parquet_rows, shard_bounds, write_parquet

    start, stop = shard_bounds(pq.read_metadata(args.input).num_rows, args.shard, args.shards)
    rows = read_parquet_rows(args.input, start, stop, ["passage_id", "text"])
    nlp = entities.load_pipeline(params["model"])
    started = time.perf_counter()
    texts = rows.column("text").to_pylist()
    found = entities.extract(nlp, texts, params["labels"], params["min_chars"], params["batch_size"],
                             n_process=args.threads)
    seconds = time.perf_counter() - started
    write_parquet(entities.entities_table(rows.column("passage_id").to_pylist(), found), args.output)
    words = sum(len(t.split()) for t in texts)
    run.log_metrics({"passages": len(texts), "entities": sum(map(len, found)),
                     "passages_without_entities": sum(not f for f in found),
                     "words_per_second": words / max(seconds, 1e-9), "seconds": seconds})
    run.log_dict(output_summary(args.output), "outputs/entities.json")


@stage("embed", arg("--input", required=True), arg("--output", required=True), arg("--threads", type=int, default=1),
       arg("--shard", type=int, required=True), arg("--shards", type=int, required=True))
def embed(args, params, run) -> None:
    import pyarrow.parquet as pq
    import torch

    from memtrain.data import retrieval
    from memtrain.io import read_parquet_rows, shard_bounds

    torch.set_num_threads(args.threads)
    start, stop = shard_bounds(pq.read_metadata(args.input).num_rows, args.shard, args.shards)
    texts = read_parquet_rows(args.input, start, stop, ["text"]).column("text").to_pylist()
    encoder = retrieval.load_encoder(params["model"], allow_downloads=params["allow_downloads"], device=params["device"])
    started = time.perf_counter()
    vectors = retrieval.embed(encoder, texts, params["passage_prefix"], params["batch_size"])
    seconds = time.perf_counter() - started
    retrieval.save_array(vectors, args.output)
    run.log_metrics({"passages": len(texts), "dimension": vectors.shape[1],
                     "passages_per_second": len(texts) / max(seconds, 1e-9), "seconds": seconds})


@stage("index", arg("--inputs", nargs="+", required=True), arg("--output", required=True))
def index(args, params, run) -> None:
    from memtrain.data import retrieval

    started = time.perf_counter()
    embeddings = retrieval.load_arrays(args.inputs)
    built = retrieval.build_index(embeddings, params)
    retrieval.save_index(built, args.output)
    run.log_metrics({"vectors": built.ntotal, "seconds": time.perf_counter() - started})
    run.log_dict(output_summary(args.output), "outputs/index.json")


@stage("tokenizer", arg("--backbone", required=True), arg("--output", required=True))
def tokenizer(args, params, run) -> None:
    from memtrain.io import atomic_dir
    from memtrain.models import load_tokenizer

    loaded = load_tokenizer(args.backbone, params["backbone"], params["allow_downloads"])
    with atomic_dir(args.output) as tmp:
        loaded.save_pretrained(str(tmp))
    run.log_metrics({"vocab_size": len(loaded)})


@stage("assemble", arg("--passages", required=True), arg("--entities", nargs="+", required=True),
       arg("--embeddings", nargs="+", required=True), arg("--index", required=True),
       arg("--tokenizer", required=True), arg("--train", required=True), arg("--heldout", required=True),
       arg("--stats", required=True))
def assemble(args, params, run) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from memtrain.data import documents, retrieval
    from memtrain.io import write_json, write_parquet
    from memtrain.models import load_saved_tokenizer, token_counter

    passages_table = pq.read_table(args.passages, columns=["passage_id", "text"])
    entity_table = pa.concat_tables(pq.read_table(path) for path in args.entities)
    if entity_table.column("passage_id").to_pylist() != passages_table.column("passage_id").to_pylist():
        raise InputError("entity shards do not list the passages in order: rerun the ner stage", file=args.entities[0])
    corpus = documents.Corpus(passages_table.column("passage_id").to_pylist(), passages_table.column("text").to_pylist(),
                              entity_table.column("entities").to_pylist(), retrieval.load_arrays(args.embeddings))
    faiss_index = retrieval.load_index(args.index, params["index"])
    settings = params["documents"]
    depth = settings["num_related"] + settings["retrieval_margin"] + 1
    count_tokens = token_counter(load_saved_tokenizer(args.tokenizer))

    def neighbours(pivots):
        return retrieval.search(faiss_index, corpus.embeddings[pivots], depth)[1]

    started = time.perf_counter()
    train, heldout, stats = documents.assemble(corpus, neighbours, count_tokens, settings, params["seed"])
    seconds = time.perf_counter() - started
    write_parquet(heldout, args.heldout, row_group_size=256)
    write_parquet(train, args.train, row_group_size=256)
    assembly = {"pivots_tried": stats.pivots_tried, "leaking_passages_replaced": stats.leaking_replaced,
                "skipped": dict(sorted(stats.skipped.items())), "seconds": seconds,
                "documents_per_second": (train.num_rows + heldout.num_rows) / max(seconds, 1e-9)}
    write_json(assembly, args.stats)
    run.log_metrics({"train_documents": train.num_rows, "heldout_documents": heldout.num_rows,
                     "pivots_tried": stats.pivots_tried, "leaking_passages_replaced": stats.leaking_replaced,
                     **{f"skipped_{reason}": count for reason, count in stats.skipped.items()},
                     "documents_per_second": assembly["documents_per_second"], "seconds": seconds})


@stage("dataset_card", arg("--train", required=True), arg("--heldout", required=True),
       arg("--assembly", required=True), arg("--card", required=True), arg("--figure", required=True))
def dataset_card(args, params, run) -> None:
    import pyarrow.parquet as pq

    from memtrain.data import card
    from memtrain.io import atomic_path, write_json

    train, heldout = pq.read_table(args.train), pq.read_table(args.heldout)
    settings = params["documents"]
    summary = card.card(train, heldout, json.loads(Path(args.assembly).read_text()), settings)
    figure = card.histogram(train, heldout, settings["min_tokens"], settings["max_tokens"])
    with atomic_path(args.figure) as tmp:
        figure.savefig(tmp, format="png")
    write_json(summary, args.card)
    run.log_dict(summary, "dataset_card.json")
    run.log_figure(figure, "document_lengths.png")
    run.log_metrics({f"{split}_{name}": summary[split]["num_tokens"].get(name)
                     for split in ("train", "heldout") for name in ("min", "median", "max")})


@stage("prepare_model", arg("--backbone", required=True), arg("--output", required=True))
def prepare_model(args, params, run) -> None:
    """Materialise a base policy once as safetensors (dequantised from GGUF, or fetched when downloads are allowed)."""
    from memtrain.models import prepare_policy

    summary = prepare_policy(args.backbone, params["backbone"], params["allow_downloads"], args.output,
                             dtype=params["dtype"])
    run.log_metrics({k: v for k, v in summary.items() if isinstance(v, (int, float))})
    run.log_dict(summary, "outputs/policy.json")


@stage("memtrain", arg("--documents", required=True), arg("--policy", required=True), arg("--variant", required=True),
       arg("--checkpoints", required=True), arg("--output", required=True), arg("--threads", type=int, default=None),
       arg("--resume", action="store_true", help="continue from the newest checkpoint written under the same config"),
       arg("--stop-after-step", type=int, default=None, help="stop after this step (simulates a pre-empted job)"), PRUNE)
def memtrain_training(args, params, run) -> None:
    """MemTrain GRPO of one backbone and variant: E2E masked reconstruction with (or without) IMR."""
    from memtrain.rl import kinds, launch

    settings = params["memtrain"]
    documents = kinds.MEMTRAIN.items(args.documents)
    if params["trainer"]["backend"] == "verl":
        from memtrain.distributed import train as distributed
        from memtrain.tracking import tracking_uri

        summary = distributed.run(params, "memtrain", settings, documents, args.policy, args.checkpoints, args.output,
                                  f"memtrain-{args.variant}", Path(args.checkpoints) / "logs", variant=args.variant,
                                  mask_token=params["mask_token"], tracking_uri=tracking_uri(args.results_dir),
                                  stop_after=args.stop_after_step)
        run.log_dict(summary, "outputs/training.json")
        prune_checkpoints(run, args, summary)
        return
    policy = launch.load(args.policy, params["rl"], settings["seed"], threads=args.threads)
    task = kinds.MEMTRAIN.task(policy.engine, policy.tokenizer,
                               kinds.run_settings(params, "memtrain", settings, args.variant, params["mask_token"]),
                               settings["group_size"], None)
    summary = launch.train(policy, task, documents, params, {**settings, "variant": args.variant}, args.checkpoints,
                           args.output, launch.step_logger(run, kinds.MEMTRAIN.logged, settings["steps"]),
                           resume=args.resume, stop_after=args.stop_after_step,
                           on_resume=lambda step: run.set_tags({"memtrain.resumed_from_step": step}))
    run.log_dict(summary, "outputs/training.json")
    prune_checkpoints(run, args, summary)


def parser() -> argparse.ArgumentParser:
    import memtrain.downstream  # noqa: F401  (registers the QA, post-training and evaluation stages)
    import memtrain.report.stage  # noqa: F401  (registers the report)

    root = argparse.ArgumentParser(prog="python -m memtrain", description=__doc__.splitlines()[0])
    commands = root.add_subparsers(dest="stage", required=True)
    for name, function in STAGES.items():
        command = commands.add_parser(name, help=(function.__doc__ or "").split("\n")[0] or None)
        command.add_argument("--params", required=True, help="JSON of the stage's config (what the rule passes)")
        command.add_argument("--results-dir", default="results")
        command.add_argument("--experiment", default="memtrain")
        command.add_argument("--rule", default=None)
        command.add_argument("--wildcards", default="{}", help="JSON of the job's wildcards")
        for flag, kwargs in function.arguments:
            command.add_argument(flag, **kwargs)
    return root


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["plan"]:  # a planning tool, not a stage: no --params, no MLflow run
        from memtrain.plan.command import main as plan

        return plan(argv[1:])
    args = parser().parse_args(argv)
    params = json.loads(args.params)
    if not params.get("allow_downloads", False):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from memtrain import tracking

    try:
        with tracking.stage_run(args.stage, params, args.results_dir, args.experiment,
                                rule=args.rule, wildcards=json.loads(args.wildcards)) as run:
            STAGES[args.stage](args, params, run)
    except InputError as error:
        print(f"memtrain {args.stage}: {error}", file=sys.stderr)
        return 2
    return 0
