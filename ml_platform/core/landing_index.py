"""The landing sensor's memory of a landing zone, so a tick costs what changed, not the zone.

An index (SQLite, under the model's storage) holds one row per file the sensor has seen: its
modification time, size, content hash and state. The sensor's cursor holds a few numbers (the
directory's modification time, when the zone was last listed in full): an idle tick is one
``stat`` of the directory. A changed directory is listed by name (no ``stat`` per entry); only
names not yet in the index are examined and hashed. Rows of files that left the zone (archived,
deleted, renamed) are forgotten once nothing waits on them.

The index is a cache: the batch catalog (``core/catalog``) stays the place of record of what was
ingested. Lost or corrupt, the index is rebuilt by one full listing (files are re-hashed and
checked against the catalog, so nothing is ingested twice).

Caveat: a file rewritten in place under the same name does not change its directory. The zone is
listed and every known file ``stat``-ed every ``FULL_RESCAN_SECONDS`` to notice one.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from ml_platform.core.landing import IN_PROGRESS_SUFFIXES, LandingFile, RefusedFile, file_sha256, refusal

FULL_RESCAN_SECONDS = 300.0
# A directory modified this recently may change again within its timestamp's granularity
# (1-2 s on some file systems): it is listed again next tick rather than trusted as seen.
MTIME_GRACE_SECONDS = 2.0
MAX_HASH_PER_TICK = 500  # a 10,000-file drop is hashed over several ticks; requests start at once

# Row states: examined but still being written / refused / hashed and waiting to be requested /
# requested (an ingest run will take it) / done (ingested, or its content already was).
UNSETTLED, REFUSED, NEW, REQUESTED, DONE = "unsettled", "refused", "new", "requested", "done"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    name TEXT PRIMARY KEY, mtime_ns INTEGER, size INTEGER, sha TEXT, state TEXT NOT NULL,
    partition TEXT, requested_at REAL, present INTEGER NOT NULL DEFAULT 1);
CREATE INDEX IF NOT EXISTS files_state ON files(state);
CREATE INDEX IF NOT EXISTS files_sha ON files(sha);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""


@dataclass
class ScanStats:
    """What one tick did: the figures the tick's log line and the tests read."""

    listed: int = 0  # directory entries read (0: the directory did not change)
    examined: int = 0  # entries stat-ed
    hashed: int = 0
    forgotten: int = 0  # rows dropped: files that left the zone with nothing waiting on them
    more: bool = False  # the hashing budget ran out: the next tick goes on
    skipped: list = field(default_factory=list)  # (name, reason), at most 20, for the log


@dataclass
class ZoneCursor:
    """The cursor: small and bounded whatever the zone's size."""

    index_id: str = ""  # which index the cursor belongs to (a new index -> a full listing)
    dir_ns: int = 0
    full_at: float = 0.0
    more: bool = False
    stamp: int = 0  # catalog stamp when in-flight requests were last matched with the catalog
    backlog_since: float = 0.0  # when the current backlog started (progress line)
    backlog_done: int = 0  # files done since then
    logged_at: float = 0.0

    @classmethod
    def from_dict(cls, d: dict) -> ZoneCursor:
        if d.get("v") != 2:  # an older cursor (every hash, every request): start from the index
            return cls()
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})

    def to_dict(self) -> dict:
        return {"v": 2, **self.__dict__}


def _skip_name(name: str) -> bool:
    return name.startswith((".", "_")) or name.endswith(IN_PROGRESS_SUFFIXES)


class LandingIndex:
    """One model's index; open it per tick (``with LandingIndex(path) as ix``)."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = self._open(path)
        except sqlite3.DatabaseError:  # corrupt: a cache, start again
            path.unlink(missing_ok=True)
            self.db = self._open(path)

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection:
        db = sqlite3.connect(path, timeout=30)
        db.executescript(_SCHEMA)
        if db.execute("SELECT value FROM meta WHERE key='id'").fetchone() is None:
            db.execute("INSERT INTO meta VALUES ('id', ?)", (uuid.uuid4().hex,))
            db.commit()
        return db

    def __enter__(self) -> LandingIndex:
        return self

    def __exit__(self, *exc) -> None:
        self.db.commit()
        self.db.close()

    @property
    def index_id(self) -> str:
        return self.db.execute("SELECT value FROM meta WHERE key='id'").fetchone()[0]

    # ------------------------------------------------------------------ scanning
    def scan(
        self,
        landing_dir: Path,
        cur: ZoneCursor,
        *,
        settle_seconds: float,
        now: float | None = None,
        max_hash: int = MAX_HASH_PER_TICK,
    ) -> ScanStats:
        """Bring the index up to date with ``landing_dir``; ``cur`` is updated in place."""
        now = time.time() if now is None else now
        stats = ScanStats()
        try:
            dir_ns = landing_dir.stat().st_mtime_ns
        except FileNotFoundError:
            return stats
        full = now - cur.full_at >= FULL_RESCAN_SECONDS or cur.index_id != self.index_id
        todo: list[str] = []
        if full or cur.more or dir_ns != cur.dir_ns:
            listed = {e.name for e in os.scandir(landing_dir) if not _skip_name(e.name)}
            stats.listed = len(listed)
            rows = dict(self.db.execute("SELECT name, state FROM files WHERE present=1"))
            gone = [n for n in rows if n not in listed]
            stats.forgotten = self._forget(gone)
            if full:
                todo += self._changed_in_place(landing_dir, [n for n in rows if n in listed], stats)
                cur.full_at = now
            todo += sorted(n for n in listed if n not in rows)
            cur.index_id = self.index_id
        # Files seen still being written are looked at again every tick (few: writes in progress).
        todo += [n for (n,) in self.db.execute("SELECT name FROM files WHERE state=? AND present=1", (UNSETTLED,))]
        for name in dict.fromkeys(todo):
            if stats.hashed >= max_hash:
                stats.more = True
                break
            self._examine(landing_dir, name, now, settle_seconds, stats)
        cur.more = stats.more
        # A directory changed within its timestamp's granularity is listed again next tick.
        cur.dir_ns = dir_ns if now - dir_ns / 1e9 > MTIME_GRACE_SECONDS else 0
        self.db.commit()
        return stats

    def _forget(self, gone: list[str]) -> int:
        """Files no longer in the zone: a requested one is kept (marked absent) until its run
        is done, so a rename in the meantime is not ingested again; the others are dropped."""
        dropped = 0
        for name in gone:
            cur = self.db.execute("DELETE FROM files WHERE name=? AND state!=?", (name, REQUESTED))
            dropped += cur.rowcount
            self.db.execute("UPDATE files SET present=0 WHERE name=? AND state=?", (name, REQUESTED))
        return dropped

    def _changed_in_place(self, landing_dir: Path, names: list[str], stats: ScanStats) -> list[str]:
        """Known files whose size or modification time changed (the periodic full rescan)."""
        changed = []
        known = {n: (m, s) for n, m, s in self.db.execute("SELECT name, mtime_ns, size FROM files WHERE present=1")}
        for name in names:
            try:
                st = (landing_dir / name).lstat()
            except FileNotFoundError:
                continue
            stats.examined += 1
            if known.get(name) != (st.st_mtime_ns, st.st_size):
                self.db.execute("DELETE FROM files WHERE name=? AND state!=?", (name, REQUESTED))
                changed.append(name)
        return changed

    def _examine(self, landing_dir: Path, name: str, now: float, settle: float, stats: ScanStats) -> None:
        path = landing_dir / name
        why = refusal(path, landing_dir)
        try:
            st = path.lstat()
        except FileNotFoundError:
            self.db.execute("DELETE FROM files WHERE name=? AND state!=?", (name, REQUESTED))
            return
        stats.examined += 1
        if stat.S_ISDIR(st.st_mode):
            why = why or "a directory"
            self._put(name, st, None, REFUSED)
            return
        if why is not None:
            self._put(name, st, None, REFUSED)
            self._skip(stats, name, why)
            return
        if now - st.st_mtime < settle:
            self._put(name, st, None, UNSETTLED)
            self._skip(stats, name, f"{name}: still being written (modified {now - st.st_mtime:.1f}s ago)")
            return
        try:
            sha = file_sha256(path)
        except (FileNotFoundError, RefusedFile):
            return
        stats.hashed += 1
        self._put(name, st, sha, NEW)

    @staticmethod
    def _skip(stats: ScanStats, name: str, why: str) -> None:
        if len(stats.skipped) < 20:
            stats.skipped.append((name, why))

    def _put(self, name: str, st: os.stat_result, sha: str | None, state: str) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO files (name, mtime_ns, size, sha, state, present) VALUES (?, ?, ?, ?, ?, 1)",
            (name, st.st_mtime_ns, st.st_size, sha, state),
        )

    # ------------------------------------------------------------------ what the sensor asks
    def ready(self, landing_dir: Path) -> list[LandingFile]:
        """Hashed, settled files not yet requested, in arrival order (modification time, then
        name); a content already requested or done, or twice among them, is marked done."""
        rows = self.db.execute(
            "SELECT name, mtime_ns, size, sha FROM files WHERE state=? AND present=1 ORDER BY mtime_ns, name", (NEW,)
        ).fetchall()
        out, seen = [], set()
        for name, mtime_ns, size, sha in rows:
            taken = (
                sha in seen
                or self.db.execute(
                    "SELECT 1 FROM files WHERE sha=? AND state IN (?, ?) LIMIT 1", (sha, REQUESTED, DONE)
                ).fetchone()
            )
            if taken:
                self.mark_done([name])
                continue
            seen.add(sha)
            out.append(LandingFile(landing_dir / name, sha, mtime_ns / 1e9, size))
        return out

    def mark_done(self, names: list[str]) -> None:
        self.db.executemany("UPDATE files SET state=? WHERE name=?", [(DONE, n) for n in names])

    def mark_requested(self, files: list[LandingFile], now: float) -> None:
        self.db.executemany(
            "UPDATE files SET state=?, partition=?, requested_at=? WHERE name=?",
            [(REQUESTED, f.partition_key, now, f.path.name) for f in files],
        )

    def in_flight(self) -> list[tuple[str, str]]:
        """(name, partition) of every requested file whose ingestion is not yet seen done."""
        return self.db.execute("SELECT name, partition FROM files WHERE state=?", (REQUESTED,)).fetchall()

    def settle_requests(self, landing_dir: Path, done_names: list[str]) -> None:
        """Requests seen done: absent files are forgotten; a present file changed since it was
        hashed (its copy was refused as not its content) is looked at again, as a new batch."""
        for name in done_names:
            row = self.db.execute("SELECT mtime_ns, size, present FROM files WHERE name=?", (name,)).fetchone()
            if row is None:
                continue
            try:
                st = (landing_dir / name).lstat() if row[2] else None
            except FileNotFoundError:
                st = None
            if st is None:
                self.db.execute("DELETE FROM files WHERE name=?", (name,))
            elif (st.st_mtime_ns, st.st_size) != (row[0], row[1]):
                self.db.execute("UPDATE files SET state=?, sha=NULL WHERE name=?", (UNSETTLED, name))
            else:
                self.mark_done([name])

    def counts(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT state, COUNT(*) FROM files GROUP BY state").fetchall())


@dataclass(frozen=True)
class SensorRequest:
    """The landing sensor's request of a file's ingest, as `ml-platform run` sees it."""

    at: float  # when it was requested; an unreadable index: when the index was last written
    unreadable: str | None = None  # why the index could not be read (then it may hold a request)


def requested_at(path: Path, sha: str, *, timeout: float = 5.0) -> SensorRequest | None:
    """The sensor's pending request of this content. None: there is no index (no sensor ran),
    no files table yet, or no pending request. An index that exists but cannot be read (the
    sensor commits: a rollback journal locks readers out; a hot journal after a sensor died
    mid-commit; corrupt until the sensor rebuilds it) may hold a request: it counts as one made
    when the index was last written. Read-only: `run` never writes the sensor's index."""
    if not path.exists():
        return None
    try:
        db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=timeout)
        try:
            row = db.execute("SELECT MAX(requested_at) FROM files WHERE sha=? AND state=?", (sha, REQUESTED)).fetchone()
        finally:
            db.close()
    except sqlite3.Error as e:
        if "no such table" in str(e):  # created, not yet an index
            return None
        return SensorRequest(_last_written(path), str(e))
    return SensorRequest(float(row[0])) if row and row[0] is not None else None


def _last_written(path: Path) -> float:
    """The newest modification time of the index and its journal (now, if neither is there)."""
    times = []
    for p in (path, path.with_name(path.name + "-journal"), path.with_name(path.name + "-wal")):
        with contextlib.suppress(OSError):
            times.append(p.stat().st_mtime)
    return max(times, default=time.time())
