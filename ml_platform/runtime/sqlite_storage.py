"""Dagster's embedded SQLite storage, the same files and schema, with one SQLAlchemy engine per
database file instead of one per statement.

Dagster's SQLite run, event-log and schedule storages call ``create_engine`` on every
``connect()``: every event a run writes builds a new engine, and SQLAlchemy's compiled-statement
cache lives on the engine, so every INSERT and SELECT is compiled again. Together that was about a
tenth of all CPU across a run's processes (benchmarks/README.md, "Embedded Dagster storage").
The engines here still use ``NullPool``: each ``connect()`` opens and closes its own SQLite
connection exactly as Dagster's does (no connection outlives a transaction, so several processes
share the files as before); only the engine object and its statement cache are kept.

Dagster also asks the schema on every event (``has_table``, column lists: is the instance
migrated?), each time by reflection on a fresh connection, ``has_table`` even on a new engine:
~7 % of an in-process run's CPU samples. A table or column that exists stays (only `dagster instance
migrate` changes the schema, and it only adds), so a yes is kept for the process; a no is asked
again.

`runtime/instance.py` selects this class in dagster.yaml (``storage: custom:``) with the
instance's directory as ``base_dir``: existing instances keep their files.
"""

from __future__ import annotations

import functools
import os
import sqlite3
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from dagster._core.storage.event_log.schema import SqlEventLogStorageMetadata
from dagster._core.storage.event_log.sqlite import sqlite_event_log
from dagster._core.storage.event_log.sqlite.sqlite_event_log import INDEX_SHARD_NAME, SqliteEventLogStorage
from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage
from dagster._core.storage.schedules.sqlite.sqlite_schedule_storage import SqliteScheduleStorage
from dagster._core.storage.sql import create_engine, get_alembic_config, safe_commit
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS, create_db_conn_string
from dagster._core.storage.sqlite_storage import (
    DagsterSqliteStorage,
    _event_logs_directory,
    _runs_directory,
    _schedule_directory,
)
from dagster._serdes import ConfigurableClassData
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool

EVENT_LOG_ENGINES = 64  # run shards with a kept engine; a daemon reads many runs over days


class _Engines:
    """One NullPool engine per connection string, the least recently used dropped past ``size``."""

    _all: weakref.WeakSet[_Engines] = weakref.WeakSet()

    def __init__(self, size: int, connect_args: dict | None = None):
        self._size = size
        self._connect_args = connect_args or {}
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        self._lock = threading.Lock()
        _Engines._all.add(self)

    @classmethod
    def _after_fork_in_child(cls) -> None:
        # A thread of the parent may have held a lock at the fork (Celery's prefork pool forks a
        # process that has an instance open): the child's copy would stay locked. The engines may
        # be kept: with NullPool they hold no connection.
        for engines in list(cls._all):
            engines._lock = threading.Lock()
        for storage in list(EventLogStorage._all):  # Dagster's lock, held for a whole transaction
            storage._db_lock = threading.Lock()

    def get(self, conn_string: str) -> Engine:
        with self._lock:
            engine = self._engines.pop(conn_string, None)
            if engine is None:
                engine = create_engine(conn_string, poolclass=NullPool, connect_args=self._connect_args)
            self._engines[conn_string] = engine
            while len(self._engines) > self._size:
                self._engines.popitem(last=False)[1].dispose()
            return engine


os.register_at_fork(after_in_child=_Engines._after_fork_in_child)


def _yes_once(method):
    """Keep a True answer of a schema check for the life of the storage object (whatever
    connection it was asked on)."""

    @functools.wraps(method)
    def checked(self, *args, **kwargs):
        key = (
            method.__name__,
            *(a for a in args if not isinstance(a, Connection)),
            *sorted((k, v) for k, v in kwargs.items() if not isinstance(v, Connection)),
        )
        known = self.__dict__.setdefault("_schema_yes", set())
        if key in known:
            return True
        answer = method(self, *args, **kwargs)
        if answer:
            known.add(key)
        return answer

    return checked


@contextmanager
def _transaction(engine: Engine) -> Iterator[Connection]:
    with engine.connect() as conn, conn.begin():
        yield conn


@functools.cache
def _event_log_scripts() -> ScriptDirectory:
    # Dagster builds this (reading every migration file, ~90) each time it checks a run shard.
    return ScriptDirectory.from_config(get_alembic_config(sqlite_event_log.__file__))


def _concurrent_init(exc: Exception) -> bool:
    """Another process is creating the same shard (Dagster's own test, in its _initdb)."""
    msg = str(exc)
    return "already exists" in msg or "database is locked" in msg or "alembic_version.version_num" in msg


class RunStorage(SqliteRunStorage):
    _engines = _Engines(4)

    has_run_stats_index_cols = _yes_once(SqliteRunStorage.has_run_stats_index_cols)
    has_bulk_actions_selector_cols = _yes_once(SqliteRunStorage.has_bulk_actions_selector_cols)
    has_backfill_id_column = _yes_once(SqliteRunStorage.has_backfill_id_column)
    has_bulk_action_job_name_column = _yes_once(SqliteRunStorage.has_bulk_action_job_name_column)
    has_backfill_tags_table = _yes_once(SqliteRunStorage.has_backfill_tags_table)

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        with _transaction(self._engines.get(self._conn_string)) as conn:
            yield conn


class ScheduleStorage(SqliteScheduleStorage):
    _engines = _Engines(4)

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        with _transaction(self._engines.get(self._conn_string)) as conn:
            yield conn


class EventLogStorage(SqliteEventLogStorage):
    """Run-sharded like Dagster's: one file per run plus the index shard."""

    _all: weakref.WeakSet[EventLogStorage] = weakref.WeakSet()

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None):
        self._engines = _Engines(EVENT_LOG_ENGINES, {"timeout": SQLITE_BUSY_TIMEOUT_SECONDS})
        super().__init__(base_dir, inst_data)  # its first start creates the index shard through _connect
        EventLogStorage._all.add(self)

    @_yes_once
    def has_table(self, table_name: str) -> bool:
        # Dagster's, on the kept engine; not through _connect: callers may hold its lock
        engine = self._engines.get(self.conn_string_for_shard(INDEX_SHARD_NAME))
        with engine.connect() as conn:
            return bool(engine.dialect.has_table(conn, table_name))

    @_yes_once
    def _has_asset_key_col_on_connection(self, conn: Connection, column_name: str) -> bool:
        return super()._has_asset_key_col_on_connection(conn, column_name)

    has_asset_key_col = _yes_once(SqliteEventLogStorage.has_asset_key_col)  # no index connection once known

    def _initdb(self, engine: Engine, for_index_shard: bool = False) -> None:
        if for_index_shard:  # only when the index file is new: Dagster's path, with its back-compat stamping
            super()._initdb(engine, for_index_shard=True)
            return
        # A run shard: created and stamped at head when new, left as it is otherwise (as Dagster
        # does), with the migration scripts read once per process.
        for attempt in range(10):
            try:
                with engine.connect() as conn:
                    context = MigrationContext.configure(conn)
                    if context.get_current_revision() is not None:
                        return
                    SqlEventLogStorageMetadata.create_all(conn)
                    conn.execute(sa.text("PRAGMA journal_mode=WAL;"))
                    context.stamp(_event_log_scripts(), "head")
                    safe_commit(conn)
                return
            except (sa.exc.DatabaseError, sqlite3.DatabaseError) as exc:
                if attempt == 9 or not _concurrent_init(exc):
                    raise
                time.sleep(0.2)

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        # Dagster's _connect body, minus the engine it built and disposed each time.
        with self._db_lock:
            engine = self._engines.get(create_db_conn_string(self._base_dir, shard))
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with _transaction(engine) as conn:
                yield conn


class SqliteStorage(DagsterSqliteStorage):
    """``DagsterSqliteStorage`` (the default ``storage: sqlite:``) built from the classes above."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None):
        self.base_dir = base_dir
        self._run_storage = RunStorage.from_local(_runs_directory(base_dir))
        self._event_log_storage = EventLogStorage(_event_logs_directory(base_dir))
        self._schedule_storage = ScheduleStorage.from_local(_schedule_directory(base_dir))
        self._inst_data = inst_data
        super(DagsterSqliteStorage, self).__init__()

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData, config_value) -> SqliteStorage:  # type: ignore[override]
        return cls.from_local(inst_data=inst_data, **config_value)
