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
        return (
            parquet.schema_arrow.empty_table()
            if columns is None
            else parquet.schema_arrow.empty_table().select(columns)
        )
    table = parquet.read_row_groups(groups, columns=columns)
    return table.slice(start - first, stop - start)


def shard_bounds(num_rows: int, shard: int, num_shards: int) -> tuple[int, int]:
    """Contiguous, balanced row range of 0-based `shard` among `num_shards`; concatenating shards restores row order."""
    if not 0 <= shard < num_shards:
        raise InputError(f"shard {shard} is outside 0..{num_shards - 1}", field="shard")
    base, extra = divmod(num_rows, num_shards)
    start = shard * base + min(shard, extra)
    return start, start + base + (1 if shard < extra else 0)


def _utf8(data: bytes, path: str | os.PathLike, record: str | None = None) -> str:
    """UTF-8 text of `data`; other bytes (a Latin-1 or Windows export) are named by their byte offset.

    The offset counts from the start of the record's line when `record` is given, else of the file.
    """
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        where = "of the line" if record else "of the file"
        raise InputError(
            f"not UTF-8 text: {error.reason} ({data[error.start : error.end].hex(' ')}) at byte offset "
            f"{error.start} {where}; re-encode the file as UTF-8",
            file=path,
            record=record,
        ) from error


def _json_position(error: json.JSONDecodeError) -> str:
    """Line and column in a document of several lines; a character offset in a one-line document, where
    "line 1" says nothing (HotpotQA and MemAgent publish whole lists on a single line)."""
    if "\n" in error.doc.strip():
        return f"line {error.lineno}, column {error.colno}"
    return f"character {error.pos}"


def _more_lines(error: json.JSONDecodeError) -> bool:
    """Whether the "extra data" after the first value is a second JSON value on a later line: JSON lines."""
    gap = error.doc[: error.pos]
    if "\n" not in gap[len(gap.rstrip()) :]:
        return False
    try:
        json.JSONDecoder().raw_decode(error.doc, error.pos)
    except json.JSONDecodeError:
        return False
    return True


def _file_text(path: str | os.PathLike) -> str:
    """A whole file as UTF-8 text; its bytes are freed on return, before a large file (HotpotQA's train
    JSON is 566 MB) is parsed."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise InputError(f"cannot open: {error}", file=path) from error
    return _utf8(data, path)


def read_json(path: str | os.PathLike, expected: str = "one JSON document") -> Any:
    """The one JSON value of a file; errors name the file and the position, and say when it is JSON lines.

    `expected` (e.g. "a JSON list of records") completes the message for a file of JSON lines.
    """
    text = _file_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        if error.msg == "Extra data" and _more_lines(error):
            raise InputError(
                f"holds JSON lines (a second value starts at line {error.lineno}), expected {expected}", file=path
            ) from error
        raise InputError(f"not valid JSON ({error.msg} at {_json_position(error)})", file=path) from error


def _numbered_lines(handle: Any, path: str | os.PathLike) -> Iterator[tuple[int, bytes]]:
    """(line number, bytes) of an open binary file; a failed read (a truncated or corrupt .gz) names the line."""
    line_number = 0
    try:
        for line_number, line in enumerate(handle, start=1):
            yield line_number, line
    except (OSError, EOFError) as error:
        raise InputError(f"cannot read: {error}", file=path, record=f"line {line_number + 1}") from error


def read_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) of each non-blank line; a bad line is named by its number.

    A `.gz` file is read as published (Search-R1 and MEM1 ship the wiki-18 corpus as wiki-18.jsonl.gz).
    Lines are decoded one at a time, so that a non-UTF-8 byte is named by its line; a first line that
    opens a JSON list is reported as such, the usual mix-up of a JSON list for JSON lines.
    """
    try:
        # opened here, closed by the `with` below: only the opening is wrapped, so that its OSError names the file
        handle = gzip.open(path, "rb") if str(path).endswith(".gz") else open(path, "rb")  # noqa: SIM115
    except OSError as error:
        raise InputError(f"cannot open: {error}", file=path) from error
    first = True
    with handle:
        for line_number, raw in _numbered_lines(handle, path):
            if not raw.strip():
                continue
            where = f"line {line_number}"
            line = _utf8(raw, path, where)
            try:
                value = json.loads(line)
            except json.JSONDecodeError as error:
                if first and line.lstrip().startswith("["):
                    raise InputError(
                        "not valid JSON lines: the file opens a JSON list over several lines; expected "
                        "JSON lines (one JSON object per line)",
                        file=path,
                        record=where,
                    ) from error
                raise InputError(
                    f"not valid JSON ({error.msg} at character {error.pos} of the line)", file=path, record=where
                ) from error
            first = False
            yield line_number, value
