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
