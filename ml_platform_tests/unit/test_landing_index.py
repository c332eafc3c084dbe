"""`ml-platform run`'s read of the landing sensor's index (``requested_at``): an index that
exists but cannot be read may hold a request, so it counts as one (was: "not requested")."""

import os
import sqlite3
import subprocess
import sys
import textwrap
import time

from ml_platform.core.landing_index import REQUESTED, LandingIndex, requested_at


def _index(tmp_path, rows=()):
    path = tmp_path / "landing_index.sqlite"
    with LandingIndex(path) as ix:
        ix.db.executemany(
            "INSERT INTO files (name, sha, state, requested_at) VALUES (?, ?, ?, ?)",
            [(f"f{i}.csv", sha, state, at) for i, (sha, state, at) in enumerate(rows)],
        )
    return path


def test_no_index_no_table_no_request_is_not_requested(tmp_path):
    path = tmp_path / "landing_index.sqlite"
    assert requested_at(path, "abc") is None  # no sensor ever ran
    sqlite3.connect(path).execute("CREATE TABLE other (x)").connection.commit()
    assert requested_at(path, "abc") is None  # not an index yet
    path.unlink()
    path = _index(tmp_path, [("abc", "done", 5.0), ("def", REQUESTED, 7.0)])
    assert requested_at(path, "abc") is None
    req = requested_at(path, "def")
    assert (req.at, req.unreadable) == (7.0, None)


def test_a_locked_index_counts_as_requested(tmp_path):
    """The sensor commits (rollback journal: readers are locked out): not "not requested"."""
    path = _index(tmp_path, [("def", REQUESTED, 7.0)])
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN EXCLUSIVE")
    try:
        req = requested_at(path, "abc", timeout=0.1)
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert req is not None and "locked" in req.unreadable
    assert abs(req.at - path.stat().st_mtime) < 1  # when the index was last written
    assert requested_at(path, "abc") is None  # readable again


def test_a_hot_journal_or_a_corrupt_index_counts_as_requested(tmp_path):
    """A sensor killed mid-commit leaves a hot journal a read-only reader cannot roll back."""
    path = _index(tmp_path, [(f"s{i}", REQUESTED, 1.0) for i in range(3000)])
    crash = textwrap.dedent(f"""
        import os, sqlite3
        db = sqlite3.connect({str(path)!r})
        db.execute("PRAGMA cache_size=2")  # pages spill into the file before the commit
        db.execute("UPDATE files SET name = name || '-renamed'")
        os._exit(0)
    """)
    subprocess.run([sys.executable, "-c", crash], check=True)
    assert path.with_name(path.name + "-journal").stat().st_size > 0
    req = requested_at(path, "abc")
    assert req is not None and req.unreadable and time.time() - req.at < 60
    path.unlink()
    path.with_name(path.name + "-journal").unlink()
    path.write_bytes(b"not a database" * 100)
    old = time.time() - 3600
    os.utime(path, (old, old))
    req = requested_at(path, "abc")
    assert req is not None and req.unreadable and req.at == old  # `run` takes the file once that is old
