import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from memtrain.data import sources
from memtrain.errors import InputError


def source(**overrides) -> dict:
    base = {
        "kind": "vital_articles",
        "path": None,
        "hf_repo": "wikimedia/wikipedia",
        "hf_config": "20231101.en",
        "hf_num_shards": 3,
        "max_articles": None,
        "min_chars": 10,
    }
    return {**base, **overrides}


def test_bundled_vital_articles_are_real_wikipedia_summaries():
    table = sources.articles(source(max_articles=50), allow_downloads=False)
    assert table.schema == sources.ARTICLE_SCHEMA and table.num_rows == 50
    assert len(set(table.column("id").to_pylist())) == 50
    assert all(len(text) >= 10 for text in table.column("text").to_pylist())


def test_jsonl_source_reads_records_and_skips_short_ones(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {"id": 1, "title": "A", "text": "  Alpha text that is long enough.  "},
                {"id": "2", "title": "B", "text": "short"},
            ]
        )
        + "\n\n"
    )
    table = sources.articles(source(kind="jsonl", path=str(path)), allow_downloads=False)
    assert table.to_pylist() == [{"id": "1", "title": "A", "text": "Alpha text that is long enough."}]


@pytest.mark.parametrize(
    "content, expected",
    [
        ('{"id": "1", "title": "A", "text": "x"}\n{"id": 2, "title": "B"\n', "record line 2"),
        ('{"id": "1", "title": "A"}\n', "field text"),
        ("[1, 2]\n", "expected a JSON object"),
        (
            '{"id": "1", "title": "A", "text": "long enough text"}\n{"id": "1", "title": "B", "text": "long enough text"}\n',
            "duplicate article id",
        ),
    ],
)
def test_malformed_jsonl_names_file_line_and_field(tmp_path, content, expected):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(InputError) as error:
        sources.articles(source(kind="jsonl", path=str(path)), allow_downloads=False)
    assert expected in str(error.value) and (str(path) in str(error.value) or "duplicate" in expected)


def test_empty_corpus_is_an_error(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    with pytest.raises(InputError, match="no article"):
        sources.articles(source(kind="jsonl", path=str(path)), allow_downloads=False)


def test_jsonl_without_path_and_missing_file_are_errors(tmp_path):
    with pytest.raises(InputError, match="data.source.path"):
        sources.articles(source(kind="jsonl"), allow_downloads=False)
    with pytest.raises(InputError, match="nope.jsonl"):
        sources.articles(source(kind="jsonl", path=str(tmp_path / "nope.jsonl")), allow_downloads=False)


def test_malformed_summaries_json_is_named(tmp_path):
    path = tmp_path / "summaries.json"
    path.write_text(json.dumps({"Paris": {"title": "Paris"}}))
    with pytest.raises(InputError, match="record Paris, field extract"):
        sources.articles(source(path=str(path)), allow_downloads=False)


def write_wikipedia_shards(folder, per_shard: int, num_shards: int) -> None:
    """Local shards in the wikimedia/wikipedia layout and schema ({id, url, title, text})."""
    for shard in range(num_shards):
        ids = [str(shard * per_shard + i) for i in range(per_shard)]
        table = pa.table(
            {
                "id": ids,
                "url": [f"https://en.wikipedia.org/wiki?curid={i}" for i in ids],
                "title": [f"Title {i}" for i in ids],
                "text": [f"Article {i} body text." for i in ids],
            }
        )
        pq.write_table(table, folder / sources.hf_shard_name("20231101.en", shard, num_shards).split("/")[-1])


def test_huggingface_source_streams_local_shards_in_order_up_to_the_cap(tmp_path):
    write_wikipedia_shards(tmp_path, per_shard=4, num_shards=3)
    table = sources.articles(source(kind="huggingface", path=str(tmp_path), max_articles=6), allow_downloads=False)
    assert table.column("id").to_pylist() == [str(i) for i in range(6)]
    full = sources.articles(source(kind="huggingface", path=str(tmp_path)), allow_downloads=False)
    assert full.num_rows == 12


def test_huggingface_source_only_opens_the_shards_it_needs(tmp_path):
    write_wikipedia_shards(tmp_path, per_shard=4, num_shards=3)
    (tmp_path / "train-00002-of-00003.parquet").unlink()
    table = sources.articles(source(kind="huggingface", path=str(tmp_path), max_articles=5), allow_downloads=False)
    assert table.num_rows == 5
    with pytest.raises(InputError, match="train-00002-of-00003.parquet is missing"):
        sources.articles(source(kind="huggingface", path=str(tmp_path)), allow_downloads=False)


def test_huggingface_source_refuses_the_hub_when_downloads_are_disabled():
    with pytest.raises(InputError, match="allow_downloads"):
        sources.articles(source(kind="huggingface"), allow_downloads=False)


def test_hf_shard_names_match_the_published_layout():
    assert sources.hf_shard_name("20231101.en", 0, 41) == "20231101.en/train-00000-of-00041.parquet"


def test_dataset_files_are_local_paths_or_hub_files_fetched_only_when_allowed(tmp_path, monkeypatch):
    import huggingface_hub

    from memtrain.assets import dataset_file

    local = tmp_path / "dev.jsonl"
    local.write_text("{}\n")
    assert dataset_file(str(local), allow_downloads=False, field="qa.x") == local
    with pytest.raises(InputError, match="no such file"):
        dataset_file(str(tmp_path / "missing.json"), allow_downloads=True, field="qa.x")
    reference = "hf://datasets/RUC-NLPIR/FlashRAG_datasets/nq/test.jsonl"
    with pytest.raises(InputError, match="allow_downloads is false") as error:
        dataset_file(reference, allow_downloads=False, field="qa.search.flashrag")
    assert error.value.field == "qa.search.flashrag"
    with pytest.raises(InputError, match="not hf://datasets"):
        dataset_file("hf://datasets/only-owner", allow_downloads=True, field="qa.x")
    fetched = []
    monkeypatch.setattr(
        huggingface_hub,
        "hf_hub_download",
        lambda repo, name, repo_type: fetched.append((repo, name, repo_type)) or str(local),
    )
    assert dataset_file(reference, allow_downloads=True, field="qa.x") == local
    assert fetched == [("RUC-NLPIR/FlashRAG_datasets", "nq/test.jsonl", "dataset")]
