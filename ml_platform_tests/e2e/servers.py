"""A throwaway PostgreSQL cluster and Redis server on free loopback ports, for the scale-out test
and benchmark. Each runs as a child process in its own process group, stopped by its PID.

PostgreSQL refuses to run as root: as root, the cluster belongs to Debian's ``postgres`` user
(created by the postgresql package) and its commands run through ``runuser``.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ml_platform_tests.conftest import free_port

PG_USER = "ml_platform"


def pg_bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def missing_servers() -> str | None:
    """Why the scale-out servers cannot be started here, or None."""
    missing = []
    if pg_bindir() is None:
        missing.append("PostgreSQL (initdb/postgres)")
    if shutil.which("redis-server") is None:
        missing.append("redis-server")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            missing.append("a 'postgres' user to run PostgreSQL as (running as root)")
    if missing:
        return f"{' and '.join(missing)} not installed: `apt-get install -y postgresql redis-server` (.ci/run does it)"
    libs = [
        m for m in ("dagster_postgres", "dagster_celery", "psycopg2", "redis") if importlib.util.find_spec(m) is None
    ]
    if libs:
        return f"Python packages {', '.join(libs)} not installed: pip install -e '.[scale]' (make does it)"
    return None


@dataclass
class Postgres:
    port: int
    password: str
    proc: subprocess.Popen
    root: Path


def _as_owner(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@contextmanager
def postgres(password: str, databases=("dagster", "mlflow")):
    """initdb + postgres on 127.0.0.1:<free port>, password (scram) auth, the databases created."""
    import psycopg2

    bindir = pg_bindir()
    root = Path(tempfile.mkdtemp(prefix="mlp-pg-"))
    data, pwfile = root / "data", root / "pw"
    pwfile.write_text(password)
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(root, pw.pw_uid, pw.pw_gid)
        os.chown(pwfile, pw.pw_uid, pw.pw_gid)
    os.chmod(pwfile, 0o600)
    subprocess.run(
        _as_owner(
            [
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                PG_USER,
                "-A",
                "scram-sha-256",
                f"--pwfile={pwfile}",
                "--no-sync",
                "-E",
                "UTF8",
            ]
        ),
        check=True,
        capture_output=True,
        timeout=120,
    )
    pwfile.unlink()
    port = free_port()
    log = open(root / "postgres.log", "wb")
    # durability off: a test database (fsync, WAL flushes), as many connections as runs need
    proc = subprocess.Popen(
        _as_owner(
            [
                str(bindir / "postgres"),
                "-D",
                str(data),
                "-p",
                str(port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                f"unix_socket_directories={root}",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=200",
            ]
        ),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 60
        while True:
            try:
                conn = psycopg2.connect(
                    host="127.0.0.1", port=port, user=PG_USER, password=password, dbname="postgres", connect_timeout=2
                )
                break
            except psycopg2.OperationalError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"postgres did not start: {(root / 'postgres.log').read_text()[-2000:]}")
                time.sleep(0.2)
        conn.autocommit = True
        with conn.cursor() as cur:
            for db in databases:
                cur.execute(f'CREATE DATABASE "{db}"')
        conn.close()
        yield Postgres(port, password, proc, root)
    finally:
        _stop(proc, signal.SIGINT)  # postgres: "fast" shutdown (SIGTERM waits for clients)
        log.close()
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def redis():
    """redis-server on 127.0.0.1:<free port>, nothing persisted; yields its URL."""
    port = free_port()
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "yes",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        import redis as redis_client

        deadline = time.time() + 20
        while True:
            try:
                redis_client.Redis(host="127.0.0.1", port=port, socket_timeout=1).ping()
                break
            except redis_client.ConnectionError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError("redis-server did not start")
                time.sleep(0.1)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen, sig=signal.SIGTERM) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
