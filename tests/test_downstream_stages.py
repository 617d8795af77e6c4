"""Downstream stages run through `python -m memtrain`'s entry point on small local files (no snakemake)."""

from __future__ import annotations

import gzip
import json

import pyarrow.parquet as pq
import pytest

from memtrain import cli
from memtrain.downstream import flashrag_file
from memtrain.errors import InputError


def run_stage(tmp_path, stage: str, params: dict, *arguments: str) -> int:
    return cli.main([stage, "--params", json.dumps(params), "--results-dir", str(tmp_path / "results"), *arguments])


def test_search_corpus_streams_a_gzipped_wiki18_file_into_the_corpus_table(tmp_path):
    source = tmp_path / "wiki-18.jsonl.gz"
    with gzip.open(source, "wt", encoding="utf-8") as handle:
        for i in range(5):
            handle.write(json.dumps({"id": str(i), "contents": f'"Title {i}"\nText of passage {i}.'}) + "\n")
    output = tmp_path / "corpus.parquet"
    assert run_stage(tmp_path, "search_corpus", {"corpus": str(source), "allow_downloads": False},
                     "--output", str(output)) == 0
    table = pq.read_table(output).to_pylist()
    assert table[3] == {"id": "3", "title": "Title 3", "text": "Text of passage 3."} and len(table) == 5


def test_search_corpus_names_a_missing_source_and_leaves_no_output(tmp_path, capsys):
    output = tmp_path / "corpus.parquet"
    assert run_stage(tmp_path, "search_corpus", {"corpus": str(tmp_path / "nope.jsonl"), "allow_downloads": False},
                     "--output", str(output)) == 2
    assert "nope.jsonl" in capsys.readouterr().err and not output.exists()


def test_flashrag_files_follow_the_published_layout(tmp_path):
    (tmp_path / "nq").mkdir()
    (tmp_path / "nq" / "test.jsonl").write_text("{}\n")
    assert flashrag_file(str(tmp_path), "nq", "test", None, False) == tmp_path / "nq" / "test.jsonl"
    assert flashrag_file("offline", "offline", "dev", str(tmp_path), False) == tmp_path / "flashrag_dev.jsonl"
    with pytest.raises(InputError, match="allow_downloads is false"):
        flashrag_file("hf://datasets/RUC-NLPIR/FlashRAG_datasets", "bamboogle", "test", None, False)


def _corpus(tmp_path, passages: int):
    import pyarrow as pa

    path = tmp_path / "corpus.parquet"
    pq.write_table(pa.table({"id": [str(i) for i in range(passages)], "title": ["T"] * passages,
                             "text": [f"passage {i}" for i in range(passages)]}), path)
    return path


def _index_in_parts(tmp_path, vectors: int) -> list[str]:
    """A flat index written to one file, then cut in two as MEM1 publishes its e5 index (part_aa, part_ab)."""
    import faiss
    import numpy as np

    index = faiss.IndexFlatIP(8)
    index.add(np.random.default_rng(0).standard_normal((vectors, 8)).astype("float32"))
    whole = tmp_path / "whole.index"
    faiss.write_index(index, str(whole))
    data = whole.read_bytes()
    (tmp_path / "part_aa").write_bytes(data[:len(data) // 2])
    (tmp_path / "part_ab").write_bytes(data[len(data) // 2:])
    return [str(tmp_path / "part_aa"), str(tmp_path / "part_ab")]


def test_search_index_puts_a_prebuilt_index_together_from_its_parts(tmp_path):
    parts, output = _index_in_parts(tmp_path, 6), tmp_path / "index.faiss"
    params = {"prebuilt": parts, "allow_downloads": False, "retriever": {}, "index": {}}
    assert run_stage(tmp_path, "search_index", params, "--corpus", str(_corpus(tmp_path, 6)), "--output", str(output)) == 0
    assert output.read_bytes() == (tmp_path / "whole.index").read_bytes()


def test_search_index_refuses_a_prebuilt_index_of_another_corpus(tmp_path, capsys):
    parts, output = _index_in_parts(tmp_path, 6), tmp_path / "index.faiss"
    params = {"prebuilt": parts, "allow_downloads": False, "retriever": {}, "index": {}}
    assert run_stage(tmp_path, "search_index", params, "--corpus", str(_corpus(tmp_path, 5)), "--output", str(output)) == 2
    error = capsys.readouterr().err
    assert "6 vectors but the corpus has 5 passages" in error and "part_aa" in error and "qa.index" in error
    assert not output.exists()
