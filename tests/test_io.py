import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from memtrain import io
from memtrain.errors import InputError


def test_atomic_path_leaves_nothing_when_the_writer_fails(tmp_path):
    target = tmp_path / "out.parquet"
    with pytest.raises(RuntimeError):
        with io.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_replaces_only_on_success(tmp_path):
    target = tmp_path / "model"
    with io.atomic_dir(target) as tmp:
        (tmp / "weights").write_text("v1")
    with pytest.raises(RuntimeError):
        with io.atomic_dir(target) as tmp:
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
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
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
