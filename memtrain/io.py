"""Atomic, deterministic writers: a stage's output either exists complete or not at all."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from memtrain.errors import InputError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _share(path: Path, mode: int) -> None:
    """Give a temporary file or folder the permissions a plain open() or mkdir() would have.

    mkstemp and mkdtemp create 0600 / 0700 entries, which would leave outputs on a shared cluster
    filesystem unreadable to the rest of a group.
    """
    os.chmod(path, mode & ~_umask())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of `path`, renamed onto it only if the block succeeds.

    A killed or failing stage thus never leaves a half-written file that snakemake or a later
    stage could take for a finished output.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    _share(Path(tmp), 0o666)
    try:
        yield Path(tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Like atomic_path, for an output folder (a saved model or tokenizer): moved into place only when complete."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    _share(tmp, 0o777)
    try:
        yield tmp
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def link_if_identical(path: str | os.PathLike, original: str | os.PathLike) -> bool:
    """Replace `path` by a hard link to `original` when both hold the same bytes; True when it did.

    Exports are never written in place (atomic_dir swaps whole folders), so a shared inode cannot be
    changed through one of its names. On another file system, or without the original, the copy stays.
    """
    import filecmp

    path, original = Path(path), Path(original)
    if not original.is_file() or not filecmp.cmp(path, original, shallow=False):  # sizes first, then bytes
        return False
    link = path.with_name(f".{path.name}.link")
    try:
        os.link(original, link)
    except OSError:
        return False
    os.replace(link, path)
    return True


def write_parquet(table: pa.Table, path: str | os.PathLike, row_group_size: int = 4096) -> None:
    """Write without pandas index or wall-clock metadata, so the same rows give the same bytes."""
    table = table.replace_schema_metadata(None)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, row_group_size=row_group_size, compression="zstd")


def write_json(obj: Mapping[str, Any] | list, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_parquet_rows(path: str | os.PathLike, start: int, stop: int, columns: list[str] | None = None) -> pa.Table:
    """Rows [start, stop) reading only the row groups that hold them (a shard job must not load the whole corpus)."""
    parquet = pq.ParquetFile(path)
    groups, offset, first = [], 0, None
    for index in range(parquet.num_row_groups):
        rows = parquet.metadata.row_group(index).num_rows
        if offset < stop and offset + rows > start:
            groups.append(index)
            first = offset if first is None else first
        offset += rows
    if not groups:
        return parquet.schema_arrow.empty_table() if columns is None else parquet.schema_arrow.empty_table().select(columns)
    table = parquet.read_row_groups(groups, columns=columns)
    return table.slice(start - first, stop - start)


def shard_bounds(num_rows: int, shard: int, num_shards: int) -> tuple[int, int]:
    """Contiguous, balanced row range of 0-based `shard` among `num_shards`; concatenating shards restores row order."""
    if not 0 <= shard < num_shards:
        raise InputError(f"shard {shard} is outside 0..{num_shards - 1}", field="shard")
    base, extra = divmod(num_rows, num_shards)
    start = shard * base + min(shard, extra)
    return start, start + base + (1 if shard < extra else 0)


def read_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) of each non-blank line; a bad line is named by its number.

    A `.gz` file is read as published (Search-R1 and MEM1 ship the wiki-18 corpus as wiki-18.jsonl.gz).
    """
    try:
        handle = gzip.open(path, "rt", encoding="utf-8") if str(path).endswith(".gz") else open(path, encoding="utf-8")
    except OSError as error:
        raise InputError(f"cannot open: {error}", file=path) from error
    with handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield line_number, json.loads(line)
            except json.JSONDecodeError as error:
                raise InputError(f"not valid JSON ({error.msg})", file=path, record=f"line {line_number}") from error
