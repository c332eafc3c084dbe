"""The platform's SQLite storage (runtime/sqlite_storage.py) is Dagster's, file for file: an
instance on one reads what the other wrote, new run shards get Dagster's schema and alembic
stamp, and a long-lived process keeps a bounded number of engines."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from contextlib import closing
from pathlib import Path

import dagster as dg
import sqlalchemy as sa
import yaml

from ml_platform.runtime import sqlite_storage
from ml_platform.runtime.instance import sqlite_storage_section


@dg.asset
def numbers() -> int:
    return 1


@dg.asset
def doubled(numbers: int) -> int:
    return 2 * numbers


@dg.asset_check(asset=doubled)
def positive() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=True)


def _open(home: Path, platform: bool) -> dg.DagsterInstance:
    doc = {"telemetry": {"enabled": False}}
    if platform:
        doc["storage"] = sqlite_storage_section(home)
    (home / "dagster.yaml").write_text(yaml.safe_dump(doc))
    return dg.DagsterInstance.from_config(str(home))


def _schema(db: Path) -> tuple[list, list]:
    with sqlite3.connect(db) as c:
        return (
            sorted(c.execute("select type, name, sql from sqlite_master").fetchall()),
            c.execute("select version_num from alembic_version").fetchall(),
        )


def test_same_files_both_ways_and_the_same_shard_schema(tmp_path):
    stock_home, ours_home = tmp_path / "stock", tmp_path / "ours"
    stock_home.mkdir(), ours_home.mkdir()
    with _open(stock_home, platform=False) as stock:
        first = dg.materialize([numbers, doubled, positive], instance=stock).run_id
    with _open(stock_home, platform=True) as ours:
        assert type(ours.event_log_storage) is sqlite_storage.EventLogStorage
        assert ours.get_run_by_id(first).is_success
        second = dg.materialize([numbers, doubled, positive], instance=ours).run_id
        mats = ours.fetch_materializations(dg.AssetKey("doubled"), limit=5).records
        assert [m.run_id for m in mats] == [second, first]
        assert ours.get_latest_asset_check_evaluation_record(positive.check_key).run_id == second
    with _open(stock_home, platform=False) as stock:  # and back: Dagster's own storage reads ours
        assert stock.get_run_by_id(second).is_success
        assert len(stock.all_logs(second)) == len(stock.all_logs(first))

    with _open(ours_home, platform=True) as ours:
        fresh = dg.materialize([numbers, doubled, positive], instance=ours).run_id
    runs = Path("history", "runs")
    assert _schema(ours_home / runs / f"{fresh}.db") == _schema(stock_home / runs / f"{first}.db")


def test_engines_are_bounded_and_reused():
    engines = sqlite_storage._Engines(size=2)
    a = engines.get("sqlite:///a.db")
    assert engines.get("sqlite:///a.db") is a
    engines.get("sqlite:///b.db"), engines.get("sqlite:///a.db"), engines.get("sqlite:///c.db")
    assert list(engines._engines) == ["sqlite:///a.db", "sqlite:///c.db"], "b was the least recently used"


def test_a_fork_while_another_thread_holds_the_engines_lock_does_not_deadlock_the_child(tmp_path):
    engines = sqlite_storage.RunStorage._engines
    held, release = threading.Event(), threading.Event()

    def hold():
        with engines._lock:
            held.set()
            release.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    assert held.wait(5), "the holder thread never took the lock"
    pid = os.fork()
    if pid == 0:  # the child: the holder thread does not exist here
        try:
            engines.get(f"sqlite:///{tmp_path / 'child.db'}")
        finally:
            os._exit(0)
    status = None
    try:
        deadline = time.monotonic() + 10
        while status is None and time.monotonic() < deadline:
            wpid, st = os.waitpid(pid, os.WNOHANG)
            status = st if wpid else None
            time.sleep(0.05)
    finally:
        release.set()
        t.join()
        if status is None:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
    assert status == 0, "the forked child blocked on the engines' lock its parent's thread held"


def test_the_event_logs_own_lock_is_fresh_in_a_forked_child(tmp_path):
    storage = sqlite_storage.EventLogStorage(str(tmp_path / "events"))
    storage._db_lock.acquire()  # as a thread mid-transaction at the fork
    try:
        pid = os.fork()
        if pid == 0:
            os._exit(0 if storage._db_lock.acquire(timeout=5) else 1)
        _, status = os.waitpid(pid, 0)
    finally:
        storage._db_lock.release()
    assert status == 0, "the child's copy of the event log's lock stayed held"


def test_schema_checks_are_asked_until_yes_then_kept(tmp_path, monkeypatch):
    """Dagster asks "is this table / column there?" on every event; a yes is kept, a no is asked
    again (a `dagster instance migrate` in another process may add it)."""
    instance = _open(tmp_path, platform=True)
    try:
        events, runs = instance.event_log_storage, instance.run_storage
        assert isinstance(events, sqlite_storage.EventLogStorage), type(events)
        assert isinstance(runs, sqlite_storage.RunStorage), type(runs)
        for storage in (events, runs):  # what the instance's start asked already
            storage.__dict__.pop("_schema_yes", None)
        reflected: list[object] = []
        real_inspect = sa.inspect
        monkeypatch.setattr(sa, "inspect", lambda conn: reflected.append(conn) or real_inspect(conn))
        tables: list[str] = []
        dialect = type(events._engines.get(events.conn_string_for_shard("index")).dialect)
        real_has_table = dialect.has_table
        monkeypatch.setattr(
            dialect,
            "has_table",
            lambda self, conn, name, *a, **kw: tables.append(name) or real_has_table(self, conn, name, *a, **kw),
        )

        assert events.has_asset_key_col("last_materialization_timestamp")
        assert events.has_asset_key_col("last_materialization_timestamp")
        assert not events.has_asset_key_col("no_such_column")
        assert not events.has_asset_key_col("no_such_column")
        assert len(reflected) == 3, f"{len(reflected)} reflections: a yes asked again, or a no kept"
        reflected.clear()
        assert runs.has_run_stats_index_cols() and runs.has_run_stats_index_cols()
        assert runs.has_backfill_tags_table() and runs.has_backfill_tags_table()
        assert len(reflected) == 2, f"{len(reflected)} reflections for two checks asked twice each"

        assert events.has_table("dynamic_partitions") and events.has_table("dynamic_partitions")
        assert not events.has_table("no_such_table")
        with closing(sqlite3.connect(events.path_for_shard("index"))) as db, db:  # what a migration would do
            db.execute("CREATE TABLE no_such_table (id INTEGER)")
        assert events.has_table("no_such_table") and events.has_table("no_such_table")
        assert tables == ["dynamic_partitions", "no_such_table", "no_such_table"], tables
    finally:
        instance.dispose()
