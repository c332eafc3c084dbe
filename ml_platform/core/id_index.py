"""Which row ids earlier batches had: an index (SQLite, under the model's storage) so that
counting a batch's already-seen ids reads that batch, not every validated batch before it.

Validation puts each batch's valid ids here (replacing the batch's earlier entry when it is
validated again). The validated Parquet files stay the place of record: an index that is missing
or unreadable is rebuilt from them (``rebuild``), once.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path

import numpy as np

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ids (id TEXT NOT NULL, partition TEXT NOT NULL, arrival REAL NOT NULL);
CREATE INDEX IF NOT EXISTS ids_id ON ids(id);
CREATE INDEX IF NOT EXISTS ids_partition ON ids(partition);
"""


class IdIndex:
    def __init__(self, path: Path):
        self.fresh = not path.exists()
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(path, timeout=60)
            self.db.executescript(_SCHEMA)
        except sqlite3.DatabaseError:  # corrupt: rebuilt from the validated files
            path.unlink(missing_ok=True)
            self.fresh = True
            self.db = sqlite3.connect(path, timeout=60)
            self.db.executescript(_SCHEMA)

    def __enter__(self) -> IdIndex:
        return self

    def __exit__(self, *exc) -> None:
        self.db.commit()
        self.db.close()

    def put(self, partition: str, arrival: float, ids: Iterable[str]) -> None:
        self.db.execute("DELETE FROM ids WHERE partition=?", (partition,))
        self.db.executemany(
            "INSERT INTO ids VALUES (?, ?, ?)", ((str(i), partition, arrival) for i in dict.fromkeys(ids))
        )
        self.db.commit()

    def seen_before(self, ids: np.ndarray, partition: str, arrival: float) -> int:
        """How many of ``ids`` (one per row) a batch that arrived before this one had."""
        self.db.execute("CREATE TEMP TABLE IF NOT EXISTS probe (id TEXT)")
        self.db.execute("DELETE FROM probe")
        self.db.executemany("INSERT INTO probe VALUES (?)", ((str(i),) for i in ids))
        (n,) = self.db.execute(
            "SELECT COUNT(*) FROM probe WHERE EXISTS (SELECT 1 FROM ids WHERE ids.id = probe.id AND "
            "ids.partition != ? AND (ids.arrival < ? OR (ids.arrival = ? AND ids.partition < ?)))",
            (partition, arrival, arrival, partition),
        ).fetchone()
        return int(n)
