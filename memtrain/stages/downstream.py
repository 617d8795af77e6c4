"""Stages of the downstream rules (rules/downstream.smk, paper sections 4.2-4.3): QA data, the search corpus,
MemAgent and MEM1 post-training, and both evaluations; each stays thin and leaves the logic to memtrain.data,
agent, rl and eval."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from memtrain import rules
from memtrain.errors import InputError
from memtrain.settings import RL, Agent, section
from memtrain.stages.job import Job, output_summary, prune_checkpoints

OFFLINE = "offline"


# --- data ---------------------------------------------------------------------------------------
def _hotpot_files(
    references: Sequence[str], offline: str | None, split: str, allow_downloads: bool, field: str
) -> list[Path]:
    from memtrain.assets import dataset_file

    if list(references) == [OFFLINE]:
        if offline is None:
            raise InputError("'offline' needs the offline QA set (the input `offline`)", field=field)
        return [Path(offline) / f"hotpot_{split}.json"]
    return [dataset_file(ref, allow_downloads=allow_downloads, field=field) for ref in references]


def flashrag_file(reference: str, dataset: str, split: str, offline: str | None, allow_downloads: bool) -> Path:
    """FlashRAG's layout <dataset>/<split>.jsonl, under a folder, the hub repository, or our offline set."""
    from memtrain.assets import dataset_file

    if reference == OFFLINE:  # config.validate has checked that the dataset is 'offline' and the split train or dev
        if offline is None:
            raise InputError("'offline' needs the offline QA set (the input `offline`)", field="qa.search.flashrag")
        return Path(offline) / f"flashrag_{split}.jsonl"
    return dataset_file(
        f"{reference.rstrip('/')}/{dataset}/{split}.jsonl", allow_downloads=allow_downloads, field="qa.search.flashrag"
    )


def offline_qa(job: Job, run) -> None:
    """Our small HotpotQA-format stand-in over the bundled Wikipedia summaries, and its FlashRAG form."""
    from memtrain.data import offline_qa as offline
    from memtrain.io import atomic_dir

    with atomic_dir(job.output.offline) as tmp:
        counts = offline.write(tmp, job.config["seed"], job.config["qa"]["offline"]["num_distractors"])
    run.log_metrics({f"{split}_questions": count for split, count in counts.items()})


def qa_long_context(job: Job, run) -> None:
    """MemAgent's training contexts and the RULER-HotpotQA evaluation set at every configured length.

    Every input file must hold questions: an empty one (a failed download, a wrong file) is an error
    naming it and its config key, before anything is written, rather than an empty or missing set.
    """
    from memtrain.assets import dataset_file
    from memtrain.data import qa, qa_builders

    params = job.config
    settings, downloads = params["qa"], params["allow_downloads"]

    def hotpot(key: str, split: str) -> list[qa.HotpotQuestion]:
        questions = []
        for path in _hotpot_files(settings[key], job.input.get("offline"), split, downloads, f"qa.{key}"):
            found = qa.read_hotpotqa(path)
            if not found:
                raise InputError("holds no question", file=path, field=f"qa.{key}")
            questions.extend(found)
        return questions

    train = hotpot("hotpotqa_train", "train")
    training = settings["memagent_train"]
    # Distractors come from every paragraph of the split, as in MemAgent, not only from the questions kept.
    train_pool = [p for q in train for p in q.context]
    train = train[: training["num_questions"]] if training["num_questions"] else train
    train_items = qa_builders.memagent_training(train, training["num_docs"], params["seed"], train_pool)
    long_context = settings["long_context"]
    limit = long_context["num_questions"]
    if long_context["memagent_eval_dir"]:
        eval_items = []
        for num_docs in long_context["lengths"]:
            path = dataset_file(
                f"{long_context['memagent_eval_dir'].rstrip('/')}/eval_{num_docs}.json",
                allow_downloads=downloads,
                field="qa.long_context.memagent_eval_dir",
            )
            items = qa.read_memagent_eval(path)
            if not items:
                raise InputError("holds no question", file=path, field="qa.long_context.memagent_eval_dir")
            eval_items.extend(items[:limit] if limit else items)
    else:
        dev = hotpot("hotpotqa_dev", "dev")
        dev_pool = [p for q in dev for p in q.context]
        dev = dev[:limit] if limit else dev
        eval_items = [
            item
            for num_docs in long_context["lengths"]
            for item in qa_builders.ruler_hotpotqa(dev, num_docs, params["seed"], dev_pool)
        ]
    qa.write_long_context(train_items, job.output.train)
    qa.write_long_context(eval_items, job.output.evaluation)
    words = {n: [len(i.context.split()) for i in eval_items if i.num_docs == n] for n in long_context["lengths"]}
    run.log_metrics(
        {
            "train_questions": len(train_items),
            "train_context_words": sum(len(i.context.split()) for i in train_items) / len(train_items),
            **{f"eval_questions/{n}docs": len(w) for n, w in words.items()},
            **{f"eval_context_words/{n}docs": sum(w) / max(len(w), 1) for n, w in words.items()},
        }
    )


def qa_search(job: Job, run) -> None:
    """Multi-objective questions (k joined with '; ') for MEM1 training and for each search benchmark.

    Each dataset entry maps a name to a FlashRAG split (read from qa.search.flashrag's layout) or to a
    question file, a local path or hf://datasets/... reference ending in .jsonl, .jsonl.gz, .json or
    .parquet: the verl-format files Search-R1 and MEM1 train from, FlashRAG jsonl, or a plain
    [{question, answer}] JSON list (qa.read_qa_file). Its questions are tagged with the entry's name.
    """
    from memtrain.assets import dataset_file
    from memtrain.data import qa, qa_builders

    settings, downloads = job.config["qa"]["search"], job.config["allow_downloads"]

    def composed(key: str, limit: int | None) -> list:
        questions = []
        for dataset, split in settings[key].items():
            if qa.names_qa_file(split):
                path = dataset_file(split, allow_downloads=downloads, field=f"qa.search.{key}.{dataset}")
                found = qa.read_qa_file(path, dataset)
            else:
                path = flashrag_file(settings["flashrag"], dataset, split, job.input.get("offline"), downloads)
                found = qa.read_flashrag(path, dataset)
            # File order, no shuffle: the same pairs as MEM1's published multi-objective sets.
            items = qa_builders.compose_multi_objective(found, settings["objectives"], None)
            if not items:
                raise InputError(
                    f"fewer than {settings['objectives']} questions to compose",
                    file=path,
                    field=f"qa.search.{key}.{dataset}",
                )
            questions.extend(items[:limit] if limit else items)
        return questions

    train = composed("train_datasets", settings["num_train_questions"])
    evaluation = composed("eval_datasets", settings["num_eval_questions"])
    qa_builders.write_multi_objective(train, job.output.train)
    qa_builders.write_multi_objective(evaluation, job.output.evaluation)
    run.log_metrics({"train_questions": len(train), "eval_questions": len(evaluation)})


def search_corpus(job: Job, run) -> None:
    """The passages MEM1 searches, as (id, title, text): wiki-18 jsonl, or every offline QA paragraph.

    Written in record batches, so that wiki-18's 21M passages never sit in memory as Python objects.
    """
    import itertools

    import pyarrow as pa
    import pyarrow.parquet as pq

    from memtrain.assets import dataset_file
    from memtrain.data import qa
    from memtrain.io import atomic_path

    reference = job.config["qa"]["corpus"]
    if reference == OFFLINE:
        questions = qa.read_hotpotqa([Path(job.input.offline) / f"hotpot_{split}.json" for split in ("train", "dev")])
        unique = dict.fromkeys((p.title, p.text) for q in questions for p in q.context)
        passages = (qa.CorpusPassage(str(i), title, text) for i, (title, text) in enumerate(unique))
    else:
        passages = qa.read_corpus(
            dataset_file(reference, allow_downloads=job.config["allow_downloads"], field="qa.corpus")
        )
    schema = pa.schema([("id", pa.string()), ("title", pa.string()), ("text", pa.string())])
    batch = list(itertools.islice(passages, 100_000))
    if not batch:  # before the writer opens: an empty corpus must leave no output behind
        raise InputError("the corpus holds no passage", file=reference, field="qa.corpus")
    count = 0
    with atomic_path(job.output.corpus) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        while batch:
            writer.write_table(
                pa.table(
                    {"id": [p.id for p in batch], "title": [p.title for p in batch], "text": [p.text for p in batch]},
                    schema=schema,
                )
            )
            count += len(batch)
            batch = list(itertools.islice(passages, 100_000))
    run.log_metrics({"passages": count})
    run.log_dict(output_summary(job.output.corpus), "outputs/corpus.json")


def search_index(job: Job, run) -> None:
    """Dense index of the search corpus: a prebuilt one (qa.index) put together from its parts and checked
    against the corpus, or one built here (flat/IVF/HNSW as data.index says) with the retriever's encoder."""
    import pyarrow.parquet as pq
    import torch

    from memtrain.data import retrieval

    params = job.config
    started = time.perf_counter()
    passages = pq.read_metadata(job.input.corpus).num_rows
    if params["qa"]["index"]:
        retrieval.join_index_parts(
            _index_parts(params["qa"]["index"], params["allow_downloads"]), job.output.index, expected_vectors=passages
        )
        run.log_metrics({"passages": passages, "seconds": time.perf_counter() - started})
        return
    torch.set_num_threads(job.threads)
    settings = params["retriever"]
    texts = pq.read_table(job.input.corpus, columns=["text"]).column("text").to_pylist()
    encoder = retrieval.load_encoder(
        settings["encoder"], allow_downloads=params["allow_downloads"], device=settings["device"]
    )
    vectors = retrieval.embed(encoder, texts, settings["passage_prefix"], settings["batch_size"])
    retrieval.save_index(retrieval.build_index(vectors, params["data"]["index"]), job.output.index)
    run.log_metrics({"passages": passages, "seconds": time.perf_counter() - started})


def _index_parts(references: Sequence[str], allow_downloads: bool) -> list[Path]:
    from memtrain.assets import dataset_file

    return [
        dataset_file(ref, allow_downloads=allow_downloads, field=f"qa.index[{i}]") for i, ref in enumerate(references)
    ]


# --- models -------------------------------------------------------------------------------------
def _search_server(params: Mapping[str, Any], corpus: str, index: str, log_path: str | None):
    """The MEM1 search server as a separate process (its own encoder and FAISS threads), stopped when the
    block ends, also when the stage fails; the block gets its client."""
    from memtrain.retriever.client import serve

    settings = params["retriever"]
    return serve(
        corpus,
        index,
        settings["encoder"],
        query_prefix=settings["query_prefix"],
        top_k=settings["top_k"],
        device=settings["device"],
        host=settings["host"],
        allow_remote=settings["allow_remote"],
        allow_downloads=params["allow_downloads"],
        threads=1,
        log_path=log_path,
    )


@contextlib.contextmanager
def retriever(params: Mapping[str, Any], corpus: str, index: str, log_path: str | None) -> Iterator[Any]:
    """A running search server for the length of a stage, and the agent's search function over it."""
    with _search_server(params, corpus, index, log_path) as client:
        yield client.observations(params["retriever"]["top_k"])


def posttrain(job: Job, run, algorithm: str, output: str, continue_from: str | None = None) -> None:
    """MemAgent or MEM1 GRPO from a base or MemTrain policy, with the MemTrain trainer and rollout code.

    With `continue_from` (the checkpoints of a finished MemAgent run) it carries that run on for
    posttrain.scaling.steps more steps, exporting the policy every eval_every steps (paper section 5.2) under
    params.exports_dir; `output` is the last of them, or the final policy.
    """
    from memtrain.config import posttrain_params, scaling_steps
    from memtrain.rl import kinds, launch, policies

    kind = kinds.get(algorithm)
    params = posttrain_params(job.config, algorithm)
    training, seed = section(kind.section, params), int(job.wildcards["seed"])
    on_verl = params["trainer"]["backend"] == "verl"
    source, exports = None, {}
    if continue_from:
        source = _finished_checkpoint(continue_from, training.steps, algorithm, on_verl)
        *between, _ = scaling_steps(params)
        exports = {step: Path(job.params.exports_dir) / f"step{step}" for step in between}
        training = dataclasses.replace(training, steps=training.steps + params["posttrain"]["scaling"]["steps"])
        run.set_tags({"posttrain.continued_from": str(source)})
    # What the checkpoint key hashes and veRL's agent loops read.
    settings = {**dataclasses.asdict(training), "seed": seed}
    run.set_tags({"memtrain.policy": job.input.policy})
    items = kind.items(job.input.data)
    if on_verl:
        summary = _posttrain_on_verl(job, params, kind, items, settings, output, source, exports)
        run.log_dict(summary, "outputs/training.json")
        prune_checkpoints(run, job, summary, output, continue_from)
        return
    rl = RL.of(params)
    policy = policies.load(job.input.policy, rl.runtime, seed, threads=job.threads, kl_coef=rl.loss.kl_coef)
    with contextlib.ExitStack() as stack:
        search = (
            stack.enter_context(retriever(params, job.input.corpus, job.input.index, job.params.server_log))
            if kind.uses_search
            else None
        )
        task = kind.task(
            policy.engine,
            policy.tokenizer,
            kinds.run_settings(params, kind.name, settings),
            training.group_size,
            search,
        )
        summary = launch.train(
            policy,
            task,
            items,
            params,
            {**settings, "algorithm": algorithm},
            job.params.checkpoints,
            output,
            launch.step_logger(run, kind.logged, training.steps),
            resume=True,
            on_resume=lambda step: run.set_tags({"posttrain.resumed_from_step": step}),
            continue_from=source,
            exports=exports,
        )
    run.log_dict(summary, "outputs/training.json")
    prune_checkpoints(run, job, summary, output, continue_from)


def posttrain_train(job: Job, run) -> None:
    """MemAgent or MEM1 (the job's `algorithm`) post-trained from the base model or a MemTrain policy."""
    posttrain(job, run, job.wildcards["algorithm"], job.output.final)


def _finished_checkpoint(checkpoints: str, steps: int, algorithm: str, on_verl: bool) -> Path:
    """The last checkpoint of the finished run a continued run starts from, in its trainer's own format."""
    from memtrain.rl import checkpoint

    if checkpoint.pruned(checkpoints):
        raise InputError(
            "the finished run's checkpoints were pruned after its export (trainer.prune_checkpoints): "
            "delete its final folder so that it trains again, or keep checkpoints with "
            "trainer.prune_checkpoints: false",
            file=checkpoints,
        )
    if on_verl:
        from memtrain.distributed.train import finished_checkpoint

        return finished_checkpoint(checkpoints, steps)
    found = checkpoint.checkpoints(checkpoints)
    if not found or checkpoint.read_state(found[-1])["step"] != steps:
        raise InputError(
            f"continuing needs the finished run's checkpoint of step {steps} "
            f"(posttrain.{algorithm}.steps); found {[p.name for p in found] or 'none'}",
            file=checkpoints,
        )
    return found[-1]


def _posttrain_on_verl(
    job: Job,
    params: Mapping[str, Any],
    kind,
    items: list[Any],
    settings: Mapping[str, Any],
    output: str,
    source: Path | None,
    exports: Mapping[int, Path],
) -> dict[str, Any]:
    """The same post-training on veRL (trainer.backend verl): the items and the search server here, GRPO on Ray."""
    from memtrain.distributed import train as distributed
    from memtrain.tracking import tracking_uri

    if exports:  # veRL must checkpoint every evaluated step and keep it until it is exported
        params = {
            **params,
            "rl": {
                **params["rl"],
                "checkpoint_every": params["posttrain"]["scaling"]["eval_every"],
                "keep_checkpoints": len(exports) + 1,
            },
        }
    with contextlib.ExitStack() as stack:
        url = None
        if kind.uses_search:
            if params["trainer"]["verl"]["nodes"] > 1 and not params["retriever"]["allow_remote"]:
                raise InputError(
                    "MEM1 on several nodes needs a search server the other nodes reach: set retriever.host "
                    "to this node's address and retriever.allow_remote: true",
                    field="retriever.host",
                )
            url = stack.enter_context(
                _search_server(params, job.input.corpus, job.input.index, job.params.server_log)
            ).url
        return distributed.run(
            params,
            kind.name,
            {**settings, "algorithm": kind.name},
            items,
            job.input.policy,
            job.params.checkpoints,
            output,
            f"{kind.name}-seed{settings['seed']}",
            Path(job.params.checkpoints) / "logs",
            retriever_url=url,
            continue_from=source,
            exports=exports,
            tracking_uri=tracking_uri(job.results_dir),
            threads=job.threads,
        )


def sampled(evaluate: Callable[[], list[dict[str, Any]]], samples: int) -> list[dict[str, Any]]:
    """Every question answered `samples` times (MemAgent's harness: --sampling), each row tagged with its sample;
    the engine's generator moves on between passes, so sampled answers differ."""
    return [{**row, "sample": sample} for sample in range(samples) for row in evaluate()]


def _write_rows(rows: list[dict[str, Any]], path: str) -> None:
    import pyarrow as pa

    from memtrain.io import write_parquet

    write_parquet(pa.Table.from_pylist(rows), path)


def eval_long_context(job: Job, run) -> None:
    """Long-context QA by length: memory models chunk by chunk, base models with the whole context at once."""
    from memtrain.data import qa
    from memtrain.eval import long_context
    from memtrain.rl import policies

    params = job.config
    chosen = params["eval"]["long_context_sampling"] or params["eval"]["sampling"]
    run.set_tags({"memtrain.policy": job.input.policy})
    items = qa.read_long_context(job.input.data)
    started = time.perf_counter()
    with policies.decoder(job.input.policy, params, int(job.wildcards["seed"]), threads=job.threads) as policy:
        rows = _long_context_rows(job.params.mode, policy, params, items, chosen, run)
    _write_rows(rows, job.output.rows)
    run.log_metrics({**long_context.summary(rows), "questions": len(rows), "seconds": time.perf_counter() - started})
    run.log_dict(output_summary(job.output.rows), "outputs/predictions.json")


def _long_context_rows(
    mode: str, policy, params: Mapping[str, Any], items, chosen: Mapping[str, Any], run
) -> list[dict[str, Any]]:
    """Memory models read chunk by chunk; base models read the whole context at once, cut to their window."""
    from memtrain.agent.prompts import load_templates
    from memtrain.engines import Sampling
    from memtrain.eval import long_context
    from memtrain.rl import policies

    evaluation = params["eval"]
    if mode == "memory":
        agent = policies.memory_agent(policy, params, chosen)
        rows = sampled(lambda: long_context.with_memory(agent, items, evaluation["batch_size"]), evaluation["samples"])
    else:
        from memtrain.agent.chat import stop_token_ids

        window = evaluation["context_window"] or policy.max_positions
        agent = section(Agent, params)
        sampling = Sampling(
            agent.budgets.response, chosen["temperature"], chosen["top_p"], stop_token_ids(policy.tokenizer)
        )
        templates = load_templates(agent)
        rows = sampled(
            lambda: long_context.full_context(
                policy.engine, policy.tokenizer, templates, items, window, sampling, evaluation["batch_size"]
            ),
            evaluation["samples"],
        )
        run.log_metrics(
            {"truncated_fraction": sum(r["truncated"] for r in rows) / max(len(rows), 1), "context_window": window}
        )
    return rows


def eval_search_qa(job: Job, run) -> None:
    """Multi-objective search QA on every configured benchmark with the MEM1 agent and the retrieval server."""
    from memtrain.data import qa_builders
    from memtrain.eval import search_qa
    from memtrain.rl import policies

    params = job.config
    evaluation = params["eval"]
    run.set_tags({"memtrain.policy": job.input.policy})
    items = qa_builders.read_multi_objective(job.input.data)
    started = time.perf_counter()
    with (
        retriever(params, job.input.corpus, job.input.index, job.params.server_log) as search,
        policies.decoder(job.input.policy, params, int(job.wildcards["seed"]), threads=job.threads) as policy,
    ):
        agent = policies.search_agent(
            policy, params, search, evaluation["search_qa_sampling"] or evaluation["sampling"]
        )
        rows = sampled(lambda: search_qa.evaluate(agent, items, evaluation["batch_size"]), evaluation["samples"])
    _write_rows(rows, job.output.rows)
    run.log_metrics({**search_qa.summary(rows), "questions": len(rows), "seconds": time.perf_counter() - started})
    run.log_dict(output_summary(job.output.rows), "outputs/predictions.json")


STAGES = {
    rules.OFFLINE_QA: offline_qa,
    rules.QA_LONG_CONTEXT: qa_long_context,
    rules.QA_SEARCH: qa_search,
    rules.SEARCH_CORPUS: search_corpus,
    rules.SEARCH_INDEX: search_index,
    rules.POSTTRAIN_TRAIN: posttrain_train,
    rules.EVAL_LONG_CONTEXT: eval_long_context,
    rules.EVAL_SEARCH_QA: eval_search_qa,
}
