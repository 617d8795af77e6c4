"""What one job of each rule does, from the config alone: tokens, words, passages, FLOPs, bytes.

One small pure function per stage kind, each saying in its docstring what it assumes. Token counts
use the agent's budgets as caps (instruction in full, replies at `response_fill` of theirs), so the
LLM stages err on the long side; the numbers they rest on are in throughputs.yaml.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from memtrain import rules
from memtrain.config import scaling_steps
from memtrain.errors import InputError
from memtrain.plan.dag import Job
from memtrain.plan.throughputs import Model, Throughputs
from memtrain.rl.rewards import uses_recall

Config = Mapping[str, Any]
DTYPE_BYTES = {"float32": 4, "bfloat16": 2}
HUB_WEIGHT_BYTES = 2  # hub checkpoints of the paper's backbones are bf16 safetensors
FLOAT_BYTES = 4  # embeddings and FAISS vectors are float32


@dataclass(frozen=True)
class Tokens:
    """Policy tokens of some turns: prompt tokens read (prefill) and tokens generated (decode)."""

    prefill: float = 0.0
    decode: float = 0.0

    def __add__(self, other: Tokens) -> Tokens:
        return Tokens(self.prefill + other.prefill, self.decode + other.decode)

    def __mul__(self, times: float) -> Tokens:
        return Tokens(self.prefill * times, self.decode * times)

    @property
    def total(self) -> float:
        return self.prefill + self.decode


@dataclass(frozen=True)
class Work:
    """One job's work in the units of the throughputs, and the bytes it leaves on disk."""

    prefill: float = 0.0  # prompt tokens through the policy (rollouts, evaluation, log-prob passes)
    decode: float = 0.0  # generated tokens
    train: float = 0.0  # tokens through forward and backward
    params_b: float = 0.0  # size of the policy those tokens run through
    ner_words: float = 0.0
    ner_processes: int = 1
    embed_passages: float = 0.0
    encoder_params_b: float = 0.0
    text_words: float = 0.0  # words split, parsed and written by Python
    tokenize: float = 0.0  # tokens counted by a fast tokenizer
    cpu_flops: float = 0.0  # BLAS work on the job's CPUs (FAISS index training and adding)
    download_mb: float = 0.0
    disk_bytes: float = 0.0

    @property
    def tokens(self) -> float:
        """Every policy token the job processes, whatever the pass: the unit of a measured rate."""
        return self.prefill + self.decode + self.train

    def as_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


# --- shared pieces ---------------------------------------------------------------------------------
def policy(config: Config, t: Throughputs, backbone: str) -> Model:
    reference = config["backbones"][backbone]
    return t.model(reference.get("path") or reference["gguf"], f"backbone {backbone}")


def memory_reading(context_tokens: float, budgets: Mapping[str, int], fill: float, max_chunks: int | None) -> Tokens:
    """One memory-agent trajectory (MemAgent's loop): a turn per chunk, then the answer turn from memory alone.

    Training keeps at most max_chunks chunks; evaluation reads them all (max_chunks None). Every
    turn's prompt is the whole instruction budget (a cap: template and problem are shorter), the
    previous memory and the chunk; every reply, the next memory included, fills `fill` of its budget.
    """
    chunks = max(1, math.ceil(context_tokens / budgets["chunk"]))
    if max_chunks is not None:
        chunks = min(chunks, max_chunks)
    memory = min(budgets["memory"], budgets["response"] * fill)
    turns = chunks + 1
    return Tokens(
        turns * (budgets["instruction"] + memory) + min(context_tokens, chunks * budgets["chunk"]),
        turns * budgets["response"] * fill,
    )


def recall_question(budgets: Mapping[str, int], fill: float) -> Tokens:
    """One IMR answer (paper 3.3): a single turn over an intermediate memory and one whole masked chunk."""
    return Tokens(
        budgets["instruction"] + min(budgets["memory"], budgets["response"] * fill) + budgets["chunk"],
        budgets["response"] * fill,
    )


def search_episode(config: Config, fill: float) -> Tokens:
    """One MEM1 episode, run to its max_turns (a cap: episodes that answer early are shorter).

    Each turn reads the instruction, the previous reply (internal state and action) and up to
    information_tokens of retrieved text; each reply fills `fill` of response_tokens.
    """
    mem1, instruction = config["posttrain"]["mem1"], config["agent"]["budgets"]["instruction"]
    reply = mem1["response_tokens"] * fill
    return Tokens(instruction + reply + mem1["information_tokens"], reply) * mem1["max_turns"]


def grpo(
    per_item: Tokens, steps: int, settings: Mapping[str, Any], rl: Mapping[str, Any], t: Throughputs
) -> dict[str, float]:
    """Rollout, log-prob and update tokens of a GRPO training (memtrain.rl.trainer's step).

    Rollouts are repeated by the expected DAPO refill rounds (capped by max_refill_rounds); every kept
    item's turns are trained on ppo_epochs times; the reference (KL) and, when an update is split into
    mini-batches or epochs, the old policy score the same tokens in forward-only passes.
    """
    refill = min(rl["filter"]["max_refill_rounds"], t["expected_refill_rounds"]) if rl["filter"]["enabled"] else 0.0
    items = steps * settings["batch_size"]
    generated = per_item * (items * (1 + refill))
    kept = per_item.total * items
    scoring = int(rl["loss"]["kl_coef"] > 0) + int(
        rl["ppo_epochs"] > 1 or settings["mini_batch_size"] < settings["batch_size"]
    )
    return {"prefill": generated.prefill + scoring * kept, "decode": generated.decode, "train": kept * rl["ppo_epochs"]}


def training_disk(model: Model, config: Config, t: Throughputs, exports: int) -> float:
    """Bytes a training leaves: keep_checkpoints checkpoints plus `exports` exported policies.

    Local trainer: weights in rl.dtype plus AdamW moments of the same dtype; veRL: its FSDP
    checkpoint (fp32 weights and moments). Exports are weights in rl.dtype.
    """
    params = model.params_b * 1e9
    weights = params * DTYPE_BYTES[config["rl"]["dtype"]]
    if config["trainer"]["backend"] == "verl":
        checkpoint = params * t["verl_checkpoint_bytes_per_param"]
    else:
        checkpoint = weights * (1 + t["optimizer_bytes_per_weight_byte"])
    return config["rl"]["keep_checkpoints"] * checkpoint + exports * weights


def articles(config: Config, t: Throughputs) -> tuple[float, float]:
    """Articles and words of the configured source: max_articles when set, else the whole source."""
    source = config["data"]["source"]
    per_article = (
        t["vital_words_per_article"] if source["kind"] == "vital_articles" else t["wikipedia_words_per_article"]
    )
    count = source["max_articles"]
    if count is None:
        if source["kind"] == "jsonl":
            raise InputError(
                "the plan cannot size a jsonl source without max_articles", field="data.source.max_articles"
            )
        count = t["vital_articles"] if source["kind"] == "vital_articles" else t["wikipedia_articles"]
    return count, count * per_article


def passage_count(config: Config, t: Throughputs) -> float:
    """Passages of the corpus: its words over the middle of [min_words, max_words] (passages are cut to that range)."""
    settings = config["data"]["passages"]
    return articles(config, t)[1] / ((settings["min_words"] + settings["max_words"]) / 2)


def index_work(vectors: float, dim: int, settings: Mapping[str, Any], t: Throughputs) -> tuple[float, float]:
    """FLOPs to build a FAISS index of `vectors` and its bytes (memtrain.data.retrieval.build_index).

    flat: no build. ivf: k-means (faiss IVF defaults: 10 iterations over at most 256 points per
    centroid) then one centroid assignment per vector. hnsw: ~efConstruction (40) x M distance
    computations per insertion, plus M links of two int32 per vector.
    """
    if settings["type"] == "flat":
        return 0.0, vectors * dim * FLOAT_BYTES
    if settings["type"] == "hnsw":
        return (2 * vectors * dim * 40 * settings["hnsw_m"], vectors * (dim * FLOAT_BYTES + 2 * settings["hnsw_m"] * 4))
    nlist = max(1, min(settings["nlist"], int(vectors // 4)))
    training = 2 * min(vectors, 256 * nlist) * nlist * dim * 10
    return training + 2 * vectors * nlist * dim, vectors * (dim * FLOAT_BYTES + t["vector_id_bytes"])


def search_corpus_passages(config: Config, t: Throughputs) -> float:
    """MEM1's corpus: wiki-18 (21M passages) when configured, else the offline paragraphs (one per bundled summary)."""
    return t["vital_articles"] if config["qa"]["corpus"] == "offline" else t["wiki18_passages"]


# --- one function per stage kind -------------------------------------------------------------------
def bookkeeping(job: Job, config: Config, t: Throughputs) -> Work:
    """Small jobs (tokenizer, card, figures, report, QA subsets): their time is the job's start-up overhead."""
    return Work()


def wiki_download(job: Job, config: Config, t: Throughputs) -> Work:
    """Articles fetched (Hugging Face parquet shards, unless a local copy is configured), parsed and written."""
    _, words = articles(config, t)
    source = config["data"]["source"]
    fetched = source["kind"] == "huggingface" and not source["path"]
    size = words * t["bytes_per_word"]
    return Work(text_words=words, download_mb=size / 1e6 if fetched else 0.0, disk_bytes=size)


def passages(job: Job, config: Config, t: Throughputs) -> Work:
    """Every article word split into passages and written again."""
    _, words = articles(config, t)
    return Work(text_words=words, disk_bytes=words * t["bytes_per_word"])


def ner(job: Job, config: Config, t: Throughputs) -> Work:
    """One shard of the words through spaCy, with data.ner.threads processes but no more than the job's CPUs."""
    settings = config["data"]["ner"]
    words = articles(config, t)[1] / settings["shards"]
    return Work(
        ner_words=words,
        ner_processes=min(settings["threads"], job.cpus),
        disk_bytes=words * t["entities_per_word"] * t["bytes_per_entity"],
    )


def embed(job: Job, config: Config, t: Throughputs) -> Work:
    """One shard of the passages through the sentence encoder; float32 vectors written."""
    settings = config["data"]["embed"]
    encoder = t.model(settings["model"], "data.embed.model")
    count = passage_count(config, t) / settings["shards"]
    return Work(
        embed_passages=count,
        encoder_params_b=encoder.params_b,
        disk_bytes=count * _dim(encoder, settings["model"], t) * FLOAT_BYTES,
    )


def index(job: Job, config: Config, t: Throughputs) -> Work:
    """The FAISS index over every passage vector (see index_work)."""
    reference = config["data"]["embed"]["model"]
    flops, size = index_work(
        passage_count(config, t), _dim(t.model(reference, "data.embed.model"), reference, t), config["data"]["index"], t
    )
    return Work(cpu_flops=flops, disk_bytes=size)


def assemble(job: Job, config: Config, t: Throughputs) -> Work:
    """Documents of num_passages passages each tokenized (to fit min/max tokens) and written with their spans.

    The retrieval searches (one query per pivot) are cheap beside tokenizing and are not counted.
    """
    settings, cut = config["data"]["documents"], config["data"]["passages"]
    documents = settings["num_train"] + settings["num_heldout"]
    passage_tokens = (cut["min_words"] + cut["max_words"]) / 2 / t["words_per_token"]
    document_tokens = (settings["min_tokens"] + settings["max_tokens"]) / 2
    return Work(
        tokenize=documents * settings["num_passages"] * passage_tokens,
        disk_bytes=documents * document_tokens * t["bytes_per_token"],
    )


def prepare_model(job: Job, config: Config, t: Throughputs) -> Work:
    """The base policy fetched from the hub (bf16; a GGUF is local) and saved in rl.dtype."""
    reference = config["backbones"][job.wildcards["backbone"]]
    params = policy(config, t, job.wildcards["backbone"]).params_b * 1e9
    return Work(
        download_mb=params * HUB_WEIGHT_BYTES / 1e6 if "path" in reference else 0.0,
        disk_bytes=params * DTYPE_BYTES[config["rl"]["dtype"]],
    )


def memtrain_training(job: Job, config: Config, t: Throughputs) -> Work:
    """MemTrain GRPO (paper 3.2-3.4) of one backbone and variant.

    Per step, batch_size documents (of the middle of min/max tokens) x G1 trajectories read at
    most max_chunks chunks and answer; with IMR (full, decoupled) each trajectory gets one recall
    question answered G2 times. The final policy is exported once.
    """
    settings, budgets, fill = config["memtrain"], config["agent"]["budgets"], t["response_fill"]
    documents = config["data"]["documents"]
    trajectory = memory_reading(
        (documents["min_tokens"] + documents["max_tokens"]) / 2, budgets, fill, budgets["max_chunks"]
    )
    if uses_recall(job.wildcards["variant"]):
        trajectory += recall_question(budgets, fill) * settings["recall_group_size"]
    model = policy(config, t, job.wildcards["backbone"])
    return Work(
        **grpo(trajectory * settings["group_size"], settings["steps"], settings, config["rl"], t),
        params_b=model.params_b,
        disk_bytes=training_disk(model, config, t, exports=1),
    )


def posttraining(job: Job, config: Config, t: Throughputs) -> Work:
    """MemAgent (4.2) or MEM1 (4.3) GRPO, or MemAgent continued for the scaling steps (5.2).

    MemAgent: a group of trajectories reading num_docs HotpotQA documents (hotpotqa_tokens_per_doc
    each, at most max_chunks chunks); MEM1: a group of search episodes (see search_episode). A
    continued run exports a policy at every evaluated step.
    """
    continued = job.rule == rules.POSTTRAIN_CONTINUE
    algorithm = "memagent" if continued else job.wildcards["algorithm"]
    settings, fill = config["posttrain"][algorithm], t["response_fill"]
    if algorithm == "memagent":
        budgets = config["agent"]["budgets"]
        context = config["qa"]["memagent_train"]["num_docs"] * t["hotpotqa_tokens_per_doc"]
        episode = memory_reading(context, budgets, fill, budgets["max_chunks"])
    else:
        episode = search_episode(config, fill)
    steps = config["posttrain"]["scaling"]["steps"] if continued else settings["steps"]
    model = policy(config, t, job.wildcards["backbone"])
    exports = len(scaling_steps(config)) if continued else 1
    return Work(
        **grpo(episode * settings["group_size"], steps, settings, config["rl"], t),
        params_b=model.params_b,
        disk_bytes=training_disk(model, config, t, exports),
    )


def long_context_evaluation(job: Job, config: Config, t: Throughputs) -> Work:
    """num_questions questions at each length (num_docs x hotpotqa_tokens_per_doc tokens), one reply each.

    Base models (trained none, init base) read each context whole in one prompt, cut to their
    window; trained models read every chunk with memory. Prefill is counted linear in length
    (attention's quadratic share in 100k+-token prompts is not).
    """
    settings, budgets, fill = config["qa"]["long_context"], config["agent"]["budgets"], t["response_fill"]
    questions = settings["num_questions"] or t["hotpotqa_dev_questions"]
    model = policy(config, t, job.wildcards["backbone"])
    whole = job.wildcards.get("trained") == "none" and job.wildcards.get("init") == "base"
    window = config["eval"]["context_window"] or model.context_window or math.inf
    reply = budgets["response"] * fill
    tokens = Tokens()
    for num_docs in settings["lengths"]:
        context = num_docs * t["hotpotqa_tokens_per_doc"]
        tokens += (
            Tokens(min(budgets["instruction"] + context, window - budgets["response"]), reply)
            if whole
            else memory_reading(context, budgets, fill, None)
        )
    rows = questions * len(settings["lengths"])
    return Work(
        prefill=tokens.prefill * questions,
        decode=tokens.decode * questions,
        params_b=model.params_b,
        disk_bytes=rows * (budgets["memory"] + budgets["response"]) * t["bytes_per_token"],
    )


def search_evaluation(job: Job, config: Config, t: Throughputs) -> Work:
    """One search episode per multi-objective question of every benchmark (num_eval_questions, else all:
    the split's questions over `objectives`). The retrieval server's own encoding is not counted."""
    search = config["qa"]["search"]
    questions = 0.0
    for dataset, split in search["eval_datasets"].items():
        questions += search["num_eval_questions"] or _split_size(dataset, split, t) // search["objectives"]
    model = policy(config, t, job.wildcards["backbone"])
    episode = search_episode(config, t["response_fill"]) * questions
    return Work(
        prefill=episode.prefill,
        decode=episode.decode,
        params_b=model.params_b,
        disk_bytes=episode.decode * t["bytes_per_token"],
    )


def case_study(job: Job, config: Config, t: Throughputs) -> Work:
    """Two policies re-read one question; sized at the longest length, where the paper's case sits."""
    budgets = config["agent"]["budgets"]
    context = max(config["qa"]["long_context"]["lengths"]) * t["hotpotqa_tokens_per_doc"]
    tokens = memory_reading(context, budgets, t["response_fill"], None) * 2
    return Work(
        prefill=tokens.prefill, decode=tokens.decode, params_b=policy(config, t, job.wildcards["backbone"]).params_b
    )


def qa_long_context(job: Job, config: Config, t: Throughputs) -> Work:
    """MemAgent's training contexts (num_questions x num_docs documents) and the evaluation sets (fetched when
    memagent_eval_dir is on the hub, else built), all written as text."""
    qa = config["qa"]
    train_docs = (qa["memagent_train"]["num_questions"] or t["hotpotqa_train_questions"]) * qa["memagent_train"][
        "num_docs"
    ]
    eval_docs = (qa["long_context"]["num_questions"] or t["hotpotqa_dev_questions"]) * sum(
        qa["long_context"]["lengths"]
    )
    per_doc = t["hotpotqa_tokens_per_doc"] * t["bytes_per_token"]
    fetched = str(qa["long_context"]["memagent_eval_dir"] or "").startswith("hf://")
    return Work(
        text_words=(train_docs + eval_docs) * t["hotpotqa_tokens_per_doc"] * t["words_per_token"],
        download_mb=eval_docs * per_doc / 1e6 if fetched else 0.0,
        disk_bytes=(train_docs + eval_docs) * per_doc,
    )


def search_corpus(job: Job, config: Config, t: Throughputs) -> Work:
    """MEM1's retrieval corpus fetched (wiki-18 from the hub) and written as a table."""
    if config["qa"]["corpus"] == "offline":
        return Work()
    words = t["wiki18_passages"] * t["wiki18_words_per_passage"]
    size = words * t["bytes_per_word"]
    return Work(text_words=words, download_mb=size / 1e6, disk_bytes=size)


def search_index(job: Job, config: Config, t: Throughputs) -> Work:
    """The retriever's index: MEM1's published parts fetched when qa.index is set, else every corpus passage
    embedded with retriever.encoder and indexed like data.index."""
    reference = config["retriever"]["encoder"]
    encoder = t.model(reference, "retriever.encoder")
    count, dim = search_corpus_passages(config, t), _dim(encoder, reference, t)
    if config["qa"]["index"]:
        size = count * dim * FLOAT_BYTES
        return Work(download_mb=size / 1e6, disk_bytes=size)
    flops, size = index_work(count, dim, config["data"]["index"], t)
    return Work(embed_passages=count, encoder_params_b=encoder.params_b, cpu_flops=flops, disk_bytes=size)


def _dim(model: Model, reference: str, t: Throughputs) -> int:
    if model.dim is None:
        raise InputError(
            f"encoder {reference!r} needs `dim` (vector size)", file=t.files[-1], field=f"models.{reference}.dim"
        )
    return model.dim


def _split_size(dataset: str, split: str, t: Throughputs) -> float:
    name = f"{dataset}/{split}"
    if name not in t.values:
        raise InputError(
            f"no question count known for {name}: set qa.search.num_eval_questions or add it under qa_splits",
            file=t.files[-1],
            field=f"qa_splits.{name}",
        )
    return t[name]


FORMULAS: dict[str, Callable[[Job, Config, Throughputs], Work]] = {
    rules.WIKI_DOWNLOAD: wiki_download,
    rules.PASSAGES: passages,
    rules.NER: ner,
    rules.EMBED: embed,
    rules.INDEX: index,
    rules.ASSEMBLE: assemble,
    rules.PREPARE_MODEL: prepare_model,
    rules.MEMTRAIN_TRAIN: memtrain_training,
    rules.POSTTRAIN_TRAIN: posttraining,
    rules.POSTTRAIN_CONTINUE: posttraining,
    rules.EVAL_LONG_CONTEXT: long_context_evaluation,
    rules.EVAL_SCALING: long_context_evaluation,
    rules.EVAL_SEARCH_QA: search_evaluation,
    rules.CASE_STUDY: case_study,
    rules.QA_LONG_CONTEXT: qa_long_context,
    rules.SEARCH_CORPUS: search_corpus,
    rules.SEARCH_INDEX: search_index,
    **dict.fromkeys(
        (rules.TOKENIZER, rules.DATASET_CARD, rules.OFFLINE_QA, rules.QA_SEARCH, rules.FIGURES, rules.REPORT),
        bookkeeping,
    ),
}


def job_work(job: Job, config: Config, t: Throughputs) -> Work:
    if job.rule not in FORMULAS:
        raise ValueError(f"no work formula for rule {job.rule!r}: add one to memtrain/plan/work.py")
    return FORMULAS[job.rule](job, config, t)
