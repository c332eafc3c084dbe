"""Scale-out on an existing engine: Dagster's storage and MLflow's backend store on PostgreSQL,
runs executed by Celery workers (`ml-platform worker`). Pure configuration: what goes into the
generated dagster.yaml, the Celery app's settings, and the password's one path into a process.

The password never lands in a file, run config, snapshot or log: dagster.yaml names an
environment variable (``{env: VAR}``), the MLflow URI carries none (libpq reads ``PGPASSWORD``),
and :func:`export_password` puts it in this process's environment, inherited by the children
`ml-platform` starts (daemon, webserver, run workers).
"""

from __future__ import annotations

import os
import socket

from ml_platform import names
from ml_platform.names import TAG_WORKER, TAG_WORKER_HOST
from ml_platform.settings import Settings

PG_PASSWORD_ENV = "PGPASSWORD"  # libpq's own variable: psycopg2 (MLflow, dagster-postgres) reads it
CELERY_QUEUE = names.CELERY_QUEUE  # dagster_celery routes a task here unless its run names a queue
TRAIN_QUEUE = names.CELERY_TRAIN_QUEUE  # train / deploy / rollback runs (names.TRAIN_RUN_TAGS)
START_TIMEOUT_SECONDS = 1800  # a run may wait this long in the broker for a free worker


def enabled(settings: Settings) -> bool:
    return settings.scale_out.celery is not None


def password(settings: Settings) -> str | None:
    pg = settings.scale_out.postgres
    if pg is None:
        return None
    if pg.password_env is not None:
        return os.environ.get(pg.password_env)
    if pg.password_file is not None:
        return (settings.source.parent / pg.password_file).read_text().strip()
    return None


def export_password(settings: Settings) -> None:
    """Make the configured password visible to libpq in this process and its children."""
    pw = password(settings)
    if pw is not None:
        os.environ[PG_PASSWORD_ENV] = pw


def storage_section(settings: Settings) -> dict:
    """dagster.yaml's ``storage``: runs, event log and schedules on PostgreSQL (dagster-postgres)."""
    pg = settings.scale_out.postgres
    # psycopg2 named: SQLAlchemy 2.1 defaults to psycopg 3, which dagster-postgres does not install
    db = {
        "username": pg.user,
        "hostname": pg.host,
        "port": pg.port,
        "db_name": pg.dagster_db,
        "scheme": "postgresql+psycopg2",
    }
    if pg.password_env is not None or pg.password_file is not None:
        # an indirection, never the value; a password_file is exported as PGPASSWORD
        db["password"] = {"env": pg.password_env or PG_PASSWORD_ENV}
    return {"postgres": {"postgres_db": db}}


def celery_app_config(settings: Settings) -> dict:
    """Celery settings shared by the launcher (daemon side) and the workers."""
    return {
        # A worker takes a run only when it is free: a SIGKILLed worker loses the run it was
        # executing (found and retried by the control-plane sensor), never runs queued behind it.
        "worker_disable_prefetch": True,
        "worker_prefetch_multiplier": 1,
        "broker_connection_retry_on_startup": True,
        "task_default_queue": CELERY_QUEUE,
    }


def run_launcher_section(settings: Settings) -> dict:
    """dagster.yaml's ``run_launcher``: each run is one Celery task (dagster-celery)."""
    c = settings.scale_out.celery
    return {
        "module": "dagster_celery.launcher",
        "class": "CeleryRunLauncher",
        "config": {
            "broker": c.broker_url,
            "backend": c.backend_url or c.broker_url,
            "default_queue": CELERY_QUEUE,
            "config_source": celery_app_config(settings),
        },
    }


def worker_tags() -> dict:
    host = socket.gethostname()
    return {TAG_WORKER: f"{host}:{os.getpid()}", TAG_WORKER_HOST: host}
