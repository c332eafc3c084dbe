"""Earlier batches' Parquet files, read once per process.

The challenger check of each labelled batch refits on the batches before it (up to
``challenger.MAX_TRAIN_ROWS`` rows): in a run of 25 files, file k re-read the same k-1 earlier
files and every file of the history before them. Those files are written once (atomically: a
rewrite is a new inode), so a frame read here is keyed by the file's identity and reused; the
cache holds at most ``max_rows`` rows, the least recently used dropped first (files that left
the window, once the caller's window fits in ``max_rows`` with the next file).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import pandas as pd

_frames: OrderedDict[tuple, pd.DataFrame] = OrderedDict()
_rows = 0


def read(path: str | Path, columns: list[str], *, max_rows: int) -> pd.DataFrame:
    """``pd.read_parquet(path, columns=columns)``, from the cache when the file is unchanged.
    The frame is shared: callers must not modify it in place."""
    global _rows
    st = os.stat(path)
    key = (str(path), st.st_ino, st.st_mtime_ns, st.st_size, tuple(columns))
    df = _frames.get(key)
    if df is not None:
        _frames.move_to_end(key)
        return df
    df = pd.read_parquet(path, columns=columns)
    _frames[key] = df
    _rows += len(df)
    while _rows > max_rows and len(_frames) > 1:
        _, old = _frames.popitem(last=False)
        _rows -= len(old)
    return df


def clear() -> None:
    global _rows
    _frames.clear()
    _rows = 0
