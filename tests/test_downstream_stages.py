"""Downstream stages run through `python -m memtrain`'s entry point on small local files (no snakemake)."""

from __future__ import annotations

import gzip
import json

import pyarrow.parquet as pq
import pytest

from memtrain import stages
from memtrain.errors import InputError
from memtrain.stages.downstream import flashrag_file
from memtrain.stages.job import files_json, settings_json


def run_stage(tmp_path, rule: str, config: dict, input: dict | None = None, **output: str) -> int:
    """The rule's stage through the command line a rule runs, with its named files and config slice."""
    settings = settings_json(config, {}, {}, str(tmp_path / "results"), "memtrain")
    return stages.main([rule, "--settings", settings, "--files", files_json(input or {}, output)])


def test_search_corpus_streams_a_gzipped_wiki18_file_into_the_corpus_table(tmp_path):
    source = tmp_path / "wiki-18.jsonl.gz"
    with gzip.open(source, "wt", encoding="utf-8") as handle:
        for i in range(5):
            handle.write(json.dumps({"id": str(i), "contents": f'"Title {i}"\nText of passage {i}.'}) + "\n")
    output = tmp_path / "corpus.parquet"
    assert (
        run_stage(
            tmp_path, "search_corpus", {"qa": {"corpus": str(source)}, "allow_downloads": False}, corpus=str(output)
        )
        == 0
    )
    table = pq.read_table(output).to_pylist()
    assert table[3] == {"id": "3", "title": "Title 3", "text": "Text of passage 3."} and len(table) == 5


def test_search_corpus_names_a_missing_source_and_leaves_no_output(tmp_path, capsys):
    output = tmp_path / "corpus.parquet"
    assert (
        run_stage(
            tmp_path,
            "search_corpus",
            {"qa": {"corpus": str(tmp_path / "nope.jsonl")}, "allow_downloads": False},
            corpus=str(output),
        )
        == 2
    )
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
    pq.write_table(
        pa.table(
            {
                "id": [str(i) for i in range(passages)],
                "title": ["T"] * passages,
                "text": [f"passage {i}" for i in range(passages)],
            }
        ),
        path,
    )
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
    (tmp_path / "part_aa").write_bytes(data[: len(data) // 2])
    (tmp_path / "part_ab").write_bytes(data[len(data) // 2 :])
    return [str(tmp_path / "part_aa"), str(tmp_path / "part_ab")]


def test_search_index_puts_a_prebuilt_index_together_from_its_parts(tmp_path):
    parts, output = _index_in_parts(tmp_path, 6), tmp_path / "index.faiss"
    params = {"qa": {"index": parts}, "allow_downloads": False, "retriever": {}, "data": {"index": {}}}
    assert run_stage(tmp_path, "search_index", params, {"corpus": str(_corpus(tmp_path, 6))}, index=str(output)) == 0
    assert output.read_bytes() == (tmp_path / "whole.index").read_bytes()


def test_search_index_refuses_a_prebuilt_index_of_another_corpus(tmp_path, capsys):
    parts, output = _index_in_parts(tmp_path, 6), tmp_path / "index.faiss"
    params = {"qa": {"index": parts}, "allow_downloads": False, "retriever": {}, "data": {"index": {}}}
    assert run_stage(tmp_path, "search_index", params, {"corpus": str(_corpus(tmp_path, 5))}, index=str(output)) == 2
    error = capsys.readouterr().err
    assert "6 vectors but the corpus has 5 passages" in error and "part_aa" in error and "qa.index" in error
    assert not output.exists()


def _leftovers(folder, name):
    """The output and any temporary sibling of it that a failed stage might have left."""
    return sorted(p.name for p in folder.iterdir() if p.name == name or p.name.startswith(f".{name}."))


def test_search_corpus_refuses_an_empty_corpus_before_writing(tmp_path, capsys):
    source, output = tmp_path / "wiki-18.jsonl", tmp_path / "out" / "corpus.parquet"
    source.write_text("\n")
    assert (
        run_stage(
            tmp_path, "search_corpus", {"qa": {"corpus": str(source)}, "allow_downloads": False}, corpus=str(output)
        )
        == 2
    )
    error = capsys.readouterr().err
    assert "holds no passage" in error and "wiki-18.jsonl" in error and "qa.corpus" in error
    assert not output.parent.exists() or _leftovers(output.parent, "corpus.parquet") == []


def test_qa_long_context_names_an_empty_hotpotqa_train_file_and_writes_nothing(tmp_path, capsys):
    empty = tmp_path / "hotpot_train_v1.1.json"
    empty.write_text("[]\n")
    params = {"qa": {"hotpotqa_train": [str(empty)]}, "allow_downloads": False, "seed": 0}
    train, evaluation = tmp_path / "train.parquet", tmp_path / "eval.parquet"
    assert run_stage(tmp_path, "qa_long_context", params, train=str(train), evaluation=str(evaluation)) == 2
    error = capsys.readouterr().err
    assert f"file {empty}" in error and "field qa.hotpotqa_train" in error and "holds no question" in error
    assert _leftovers(tmp_path, "train.parquet") == _leftovers(tmp_path, "eval.parquet") == []


def test_qa_search_reads_verl_parquet_and_plain_lists_next_to_flashrag(tmp_path):
    import pyarrow as pa

    from memtrain.data import qa_builders

    verl = tmp_path / "nq_hotpotqa_train" / "train.parquet"
    verl.parent.mkdir()
    pq.write_table(
        pa.Table.from_pylist(
            [
                {
                    "data_source": "nq",
                    "prompt": [{"role": "user", "content": f"Question: question {i}?\n"}],
                    "reward_model": {"style": "rule", "ground_truth": {"target": [f"answer {i}"]}},
                    "extra_info": {"split": "train", "index": i},
                }
                for i in range(5)
            ]
        ),
        verl,
    )
    plain = tmp_path / "mine.json"
    plain.write_text(
        json.dumps(
            [
                {"question": "Who wrote Hamlet", "answer": "Shakespeare"},
                {"question": "Capital of France?", "answer": ["Paris", "City of Paris"]},
            ]
        )
    )
    flashrag = tmp_path / "flashrag" / "nq" / "test.jsonl"
    flashrag.parent.mkdir(parents=True)
    flashrag.write_text(
        "".join(
            json.dumps({"id": f"test_{i}", "question": f"q{i}", "golden_answers": [f"a{i}"]}) + "\n" for i in range(2)
        )
    )
    params = {
        "qa": {
            "search": {
                "flashrag": str(tmp_path / "flashrag"),
                "train_datasets": {"searchr1": str(verl)},
                "eval_datasets": {"mine": str(plain), "nq": "test"},
                "objectives": 2,
                "num_train_questions": None,
                "num_eval_questions": None,
            }
        },
        "allow_downloads": False,
    }
    train, evaluation = tmp_path / "train.parquet", tmp_path / "eval.parquet"
    assert run_stage(tmp_path, "qa_search", params, train=str(train), evaluation=str(evaluation)) == 0
    composed = qa_builders.read_multi_objective(train)
    assert [(c.id, c.dataset) for c in composed] == [("nq-0+nq-1", "searchr1"), ("nq-2+nq-3", "searchr1")]
    assert composed[0].question == "Question: question 0?; Question: question 1?"
    assert composed[0].targets == (("answer 0",), ("answer 1",))
    assert [(c.id, c.question, c.targets, c.dataset) for c in qa_builders.read_multi_objective(evaluation)] == [
        ("0+1", "Who wrote Hamlet?; Capital of France?", (("Shakespeare",), ("Paris", "City of Paris")), "mine"),
        ("test_0+test_1", "q0?; q1?", (("a0",), ("a1",)), "nq"),
    ]


def test_qa_search_names_a_bad_question_file_and_its_config_key(tmp_path, capsys):
    bad = tmp_path / "mine.json"
    bad.write_text(json.dumps([{"question": "q?", "answer": "a"}]) + "\n" + json.dumps([{"question": "r?"}]) + "\n")
    params = {
        "qa": {
            "search": {
                "flashrag": "offline",
                "train_datasets": {"mine": str(bad)},
                "eval_datasets": {},
                "objectives": 2,
                "num_train_questions": None,
                "num_eval_questions": None,
            }
        },
        "allow_downloads": False,
    }
    assert (
        run_stage(
            tmp_path,
            "qa_search",
            params,
            train=str(tmp_path / "train.parquet"),
            evaluation=str(tmp_path / "eval.parquet"),
        )
        == 2
    )
    assert "holds JSON lines" in capsys.readouterr().err and not (tmp_path / "train.parquet").exists()
    assert (
        run_stage(
            tmp_path,
            "qa_search",
            {
                **params,
                "qa": {
                    "search": {**params["qa"]["search"], "train_datasets": {"mine": str(tmp_path / "absent.parquet")}}
                },
            },
            train=str(tmp_path / "train.parquet"),
            evaluation=str(tmp_path / "eval.parquet"),
        )
        == 2
    )
    assert "qa.search.train_datasets.mine" in capsys.readouterr().err
