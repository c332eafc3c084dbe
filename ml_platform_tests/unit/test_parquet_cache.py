"""core/parquet_cache: a file read once per process, a rewritten file read again, rows bounded."""

import os

import pandas as pd

from ml_platform.core import parquet_cache


def test_read_once_reread_when_rewritten_and_bounded(tmp_path):
    parquet_cache.clear()
    paths = []
    for i in range(3):
        p = tmp_path / f"b{i}.parquet"
        pd.DataFrame({"x": range(10 * (i + 1)), "y": 1}).to_parquet(p, index=False)
        paths.append(p)
    first = parquet_cache.read(paths[0], ["x"], max_rows=100)
    assert list(first.columns) == ["x"] and len(first) == 10
    assert parquet_cache.read(paths[0], ["x"], max_rows=100) is first  # from the cache
    tmp = tmp_path / ".tmp"
    pd.DataFrame({"x": range(5), "y": 2}).to_parquet(tmp, index=False)
    os.replace(tmp, paths[0])  # rewritten atomically, as the platform writes: read again
    assert len(parquet_cache.read(paths[0], ["x"], max_rows=100)) == 5
    parquet_cache.read(paths[1], ["x"], max_rows=40)
    parquet_cache.read(paths[2], ["x"], max_rows=40)  # 5 + 20 + 30 > 40: the least recently used go
    assert parquet_cache._rows <= 40  # noqa: SLF001
    parquet_cache.clear()
