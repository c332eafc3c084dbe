"""Shared fixtures: a real config in a temp dir (storage, landing zone, MLflow SQLite store)."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import textwrap
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from ml_platform.settings import Settings, load_settings

DEMO_FEATURES = """\
      tenure_months: {type: numeric, min: 0, max: 600}
      monthly_charges: {type: numeric, min: 0}
      support_calls: {type: numeric, min: 0}
      usage_gb: {type: numeric, min: 0}
      age: {type: numeric, min: 0, max: 130}
      plan: {type: categorical}
      contract: {type: categorical, values: [monthly, annual, two_year]}
      region: {type: categorical}
      payment_method: {type: categorical}
"""


# The tests' models: HistGradientBoosting with 30 iterations instead of the platform's 100 (a
# third of the fitting CPU; the suite fits ~200 models). The default itself is tested where a
# test gives its own `estimator`, and in unit/test_estimators.py.
FAST_ESTIMATOR = "estimator: {params: {max_iter: 30}}\n"


def land(landing: Path, name: str, data, age: float) -> Path:
    """A landing file written ``age`` seconds ago (its mtime): a DataFrame (CSV or Parquet by the
    name), a pyarrow Table, or raw bytes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = landing / name
    if isinstance(data, bytes):
        p.write_bytes(data)
    elif isinstance(data, pa.Table):
        pq.write_table(data, p)
    elif name.endswith(".parquet"):
        data.to_parquet(p, index=False)
    else:
        data.to_csv(p, index=False)
    t = time.time() - age
    os.utime(p, (t, t))
    return p


def write_config(
    root: Path,
    *,
    port: int = 8080,
    extra: str = "",
    ui_port: int = 3000,
    poll_seconds: float | None = 0.5,
    fresh: bool = False,
) -> Path:
    """A churn-model config like the committed one, with all state under ``root``
    (``poll_seconds=None`` keeps the serving default); ``fresh``: no MLflow store yet (the
    platform creates it), else a copy of an empty one (``empty_mlflow_db``)."""
    cfg = root / "ml_platform.yaml"
    poll = f", poll_seconds: {poll_seconds}" if poll_seconds is not None else ""
    cfg.write_text(
        textwrap.dedent(f"""\
        storage_dir: state
        serving: {{host: 127.0.0.1, port: {port}{poll}}}
        ui: {{host: 127.0.0.1, port: {ui_port}}}
        models:
          churn:
            landing_dir: landing
            target: churned
            task: classification
            id_column: customer_id
            timestamp_column: event_time
        """)
        + textwrap.indent(textwrap.dedent(extra) + FAST_ESTIMATOR * ("estimator" not in extra), "    ")
        + "    features:\n"
        + DEMO_FEATURES
    )
    (root / "landing").mkdir(exist_ok=True)
    db = root / "state" / "mlflow" / "mlflow.db"
    if not fresh and not db.exists():
        db.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(empty_mlflow_db(), db)
    return cfg


_EMPTY_MLFLOW_DB: Path | None = None
NO_COMPUTE_LOGS = {"module": "dagster._core.storage.noop_compute_log_manager", "class": "NoOpComputeLogManager"}


@contextmanager
def dagster_instance(temp_dir: Path | str | None = None, **kwargs):
    """Dagster's test instance (``instance_for_test``) on the storage the platform configures
    (runtime/instance.py): the tests' runs write events the way the platform's do. Without compute
    log capture (Dagster's NoOpComputeLogManager; no test reads a step's stdout): each step of an
    in-process run otherwise starts `tail -F` and a Python watcher per stream, ~8 % of
    test_closed_loop.py's time (measured Dec 3). `up`, the CLI and the daemons' runs keep Dagster's."""
    import dagster as dg

    from ml_platform.runtime.instance import sqlite_storage_section

    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp:
        home = Path(temp_dir or tmp)
        overrides = {
            "storage": sqlite_storage_section(home),
            "compute_logs": NO_COMPUTE_LOGS,
            **kwargs.pop("overrides", {}),
        }
        with dg.instance_for_test(temp_dir=str(home), overrides=overrides, **kwargs) as instance:
            yield instance


def empty_mlflow_db() -> Path:
    """An empty MLflow SQLite store, created by MLflow once per test process and copied into each
    test's state: creating one runs MLflow's ~50 schema migrations (0.7-1.7 CPU-s a store, paid
    by most integration and end-to-end tests). `up`'s test (and the dg project's) start from
    nothing."""
    global _EMPTY_MLFLOW_DB
    if _EMPTY_MLFLOW_DB is None or not _EMPTY_MLFLOW_DB.exists():
        from mlflow import MlflowClient

        path = Path(tempfile.mkdtemp(prefix="mlflow-template-")) / "mlflow.db"
        MlflowClient(f"sqlite:///{path}").search_experiments()
        _EMPTY_MLFLOW_DB = path
    return _EMPTY_MLFLOW_DB


SYSTEM_PACKAGES_ENV = "ML_PLATFORM_SYSTEM_PACKAGES_DONE"


def wait_for_system_packages(timeout: float = 900) -> None:
    """`.ci/run` installs PostgreSQL, Redis and the browser with apt while the tests already run;
    the tests that need them wait here for the file it writes once apt is done (unset: no wait)."""
    done = os.environ.get(SYSTEM_PACKAGES_ENV)
    deadline = time.time() + timeout
    while done and not os.path.exists(done) and time.time() < deadline:
        time.sleep(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# `make test` hands whole files to three pytest-xdist workers (--dist loadfile) in collection order
# (--no-loadscope-reorder). The slowest files (seconds under `make test`: --durations) go first,
# longest first, so that every worker starts on one at once and the many short files even out the
# end, instead of one worker being handed the last slow file when the other has nothing left.
SLOWEST_FILES = (
    "e2e/test_up.py",  # `up`, the first champion (a worker killed on the way), the browser
    "e2e/test_crash_consistency.py",
    "e2e/test_scale_out.py",
    "integration/test_closed_loop.py",
    "e2e/test_dg_project.py",
    "integration/test_candidates_mlflow.py",
    "e2e/test_staging.py",
    "e2e/test_run_and_serve.py",
    "integration/test_gate_paths.py",
    "e2e/test_concurrency.py",  # real `run`s racing for one batch
    "integration/test_approval.py",
    "integration/test_graph.py",
    "integration/test_user_inputs.py",
    "e2e/test_storage_faults.py",
)


def pytest_collection_modifyitems(config, items):
    if not hasattr(config, "workerinput"):  # an xdist worker's collection is the order files go out
        return
    rank = {f"ml_platform_tests/{f}": i for i, f in enumerate(SLOWEST_FILES)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))  # stable


@pytest.fixture
def config_dir(tmp_path) -> Path:
    write_config(tmp_path)
    return tmp_path


@pytest.fixture
def settings(config_dir) -> Settings:
    return load_settings(config_dir / "ml_platform.yaml")
