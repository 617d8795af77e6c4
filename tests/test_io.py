import itertools

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from memtrain import io
from memtrain.errors import InputError


def test_atomic_path_leaves_nothing_when_the_writer_fails(tmp_path):
    target = tmp_path / "out.parquet"
    with pytest.raises(RuntimeError), io.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_replaces_only_on_success(tmp_path):
    target = tmp_path / "model"
    with io.atomic_dir(target) as tmp:
        (tmp / "weights").write_text("v1")
    with pytest.raises(RuntimeError), io.atomic_dir(target) as tmp:
        (tmp / "weights").write_text("v2-partial")
        raise RuntimeError
    assert (target / "weights").read_text() == "v1"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_write_parquet_is_byte_deterministic(tmp_path):
    table = pa.table({"a": list(range(1000)), "b": [str(i) for i in range(1000)]})
    io.write_parquet(table, tmp_path / "x.parquet")
    io.write_parquet(table, tmp_path / "y.parquet")
    assert (tmp_path / "x.parquet").read_bytes() == (tmp_path / "y.parquet").read_bytes()


@pytest.mark.parametrize("rows, shards", [(10, 3), (3, 5), (100, 7), (0, 2)])
def test_shards_cover_all_rows_in_order(rows, shards):
    bounds = [io.shard_bounds(rows, s, shards) for s in range(shards)]
    assert bounds[0][0] == 0 and bounds[-1][1] == rows
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
    assert max(b - a for a, b in bounds) - min(b - a for a, b in bounds) <= 1
    with pytest.raises(InputError):
        io.shard_bounds(rows, shards, shards)


def test_read_parquet_rows_spans_row_groups(tmp_path):
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"i": list(range(100))}), path, row_group_size=7)
    assert io.read_parquet_rows(path, 5, 23, ["i"]).column("i").to_pylist() == list(range(5, 23))
    assert io.read_parquet_rows(path, 98, 100).num_rows == 2
    assert io.read_parquet_rows(path, 100, 100).num_rows == 0


def test_atomic_outputs_get_umask_permissions_not_private_ones(tmp_path):
    import os
    import stat

    from memtrain.io import atomic_dir, atomic_path

    old = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "out.txt") as tmp:
            tmp.write_text("x")
        with atomic_dir(tmp_path / "folder") as tmp:
            (tmp / "f").write_text("y")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "folder").stat().st_mode) == 0o755


# --- JSON and JSON-lines readers: every failure an InputError naming the file and where in it -----------


def _raises(call, *parts):
    with pytest.raises(InputError) as error:
        call()
    for part in parts:
        assert part in str(error.value), (part, str(error.value))
    return error.value


def test_read_jsonl_names_a_non_utf8_line_and_its_byte_offset(tmp_path):
    path = tmp_path / "dev.jsonl"
    path.write_bytes(b'{"id": "a"}\n{"id": "b", "question": "caf\xe9?"}\n')  # Latin-1 e-acute at byte 28 of line 2
    error = _raises(lambda: list(io.read_jsonl(path)), str(path), "record line 2", "not UTF-8", "byte offset 28", "e9")
    assert error.file == path and error.record == "line 2"


def test_read_jsonl_names_a_bad_line_by_character_and_a_json_list_as_such(tmp_path):
    path = tmp_path / "dev.jsonl"
    path.write_text('{"id": "a"}\n\n{"id" "b"}\n')
    _raises(lambda: list(io.read_jsonl(path)), "record line 3", "Expecting ':' delimiter at character 6 of the line")
    path.write_text('[\n  {"id": "a"},\n  {"id": "b"}\n]\n')
    _raises(lambda: list(io.read_jsonl(path)), "record line 1", "JSON list", "expected JSON lines")


def test_read_jsonl_names_a_truncated_gzip_file(tmp_path):
    import gzip

    path = tmp_path / "wiki-18.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"id": "0", "contents": "x"}\n' * 1000)[:-30])
    _raises(lambda: list(io.read_jsonl(path)), str(path), "cannot read", "record line")


def test_read_json_gives_a_character_offset_for_one_line_and_line_and_column_otherwise(tmp_path):
    one_line = tmp_path / "eval_50.json"
    one_line.write_text('[{"a": 1}, {"a" 2}]')  # the missing ':' is at character 16
    error = _raises(lambda: io.read_json(one_line), str(one_line), "Expecting ':' delimiter at character 16")
    assert "line 1" not in str(error)
    several = tmp_path / "pretty.json"
    several.write_text('[\n  {"a": 1},\n  {"a" 2}\n]\n')
    _raises(lambda: io.read_json(several), "Expecting ':' delimiter at line 3, column 8")


def test_read_json_names_json_lines_non_utf8_bytes_and_missing_files(tmp_path):
    path = tmp_path / "questions.json"
    path.write_text('{"question": "a?"}\n{"question": "b?"}\n')
    _raises(
        lambda: io.read_json(path, "a JSON list of records"),
        str(path),
        "holds JSON lines",
        "line 2",
        "expected a JSON list of records",
    )
    path.write_bytes(b'[{"question": "caf\xe9"}]')  # the byte is the file's 19th
    _raises(lambda: io.read_json(path), str(path), "not UTF-8", "byte offset 18 of the file")
    _raises(lambda: io.read_json(tmp_path / "absent.json"), "absent.json", "cannot open")
    path.write_text('{"a": [1, 2]}\n')
    assert io.read_json(path) == {"a": [1, 2]}
