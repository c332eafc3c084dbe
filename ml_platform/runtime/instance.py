"""The persistent Dagster instance under storage_dir, the same however it is started:
`ml-platform up` / `run`, or `dagster dev` / `dagster asset materialize` in the config's folder
(they read the ``.env`` file written here, which sets DAGSTER_HOME and the config path)."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import yaml

from ml_platform.core import files
from ml_platform.names import TAG_SHA
from ml_platform.runtime import scale_out
from ml_platform.settings import CONFIG_ENV, ConfigError, Settings

LOCATION_NAME = "ml_platform"  # = workspace.yaml's location_name: one name, so run history and
MODULE = "ml_platform.defs.location"  # schedule state follow the code however it is started


def dagster_yaml(settings: Settings | None = None) -> dict:
    doc = {
        "telemetry": {"enabled": False},
        "run_coordinator": {
            "module": "dagster.core.run_coordinator",
            "class": "QueuedRunCoordinator",
            "config": {"dequeue_interval_seconds": 1},
        },
        "concurrency": {
            # 2-core machines: a few runs at once.
            "runs": {"max_concurrent_runs": 4},
            # Every step that trains or moves a champion is in its model's pool
            # (names.train_pool): one such run per model at a time, whoever launched it.
            "pools": {"granularity": "run", "default_limit": 1},
        },
        # A run worker killed before it started is failed after 180 s; a worker killed later is
        # found by the control-plane sensor (its PID is gone), and run_retries re-launches the
        # run from the failed step (gate failures are step failures: never retried).
        "run_monitoring": {"enabled": True, "start_timeout_seconds": 180, "poll_interval_seconds": 15},
        "run_retries": {"enabled": True, "max_retries": 2, "retry_on_asset_or_op_failure": False},
        "sensors": {"use_threads": True, "num_workers": 4},
        "schedules": {"use_threads": True, "num_workers": 2},
        # Every run, however launched (a sensor, the UI's Materialize, `dagster asset materialize`,
        # a backfill), prints INFO to the console `up` shows: what the assets say, not Dagster's
        # per-step DEBUG events (~60 lines a run). Dagster events still reach the event log.
        "python_logs": {"python_log_level": "INFO"},
    }
    if settings is not None and settings.scale_out.postgres is not None:
        doc["storage"] = scale_out.storage_section(settings)
    elif settings is not None:
        doc["storage"] = sqlite_storage_section(settings.dagster_home)
    if settings is not None and scale_out.enabled(settings):
        doc["run_launcher"] = scale_out.run_launcher_section(settings)
        # A launched run waits in the broker until a worker is free: STARTING is not "stuck".
        doc["run_monitoring"]["start_timeout_seconds"] = scale_out.START_TIMEOUT_SECONDS
    else:
        # Run workers forked from a process that imported the libraries once (run_launcher.py).
        doc["run_launcher"] = {"module": "ml_platform.runtime.run_launcher", "class": "ForkingRunLauncher"}
        # One machine: landed files are ingested one at a time. Run workers starting together
        # slow each other down on a small machine, and the retrain of the first drifted file
        # would wait behind them (benchmarks/README.md, time to recovery).
        doc["concurrency"]["runs"]["tag_concurrency_limits"] = [{"key": TAG_SHA, "limit": 1}]
    return doc


def sqlite_storage_section(home: Path) -> dict:
    """Dagster's SQLite files where ``storage: sqlite: base_dir: <home>`` puts them, written
    through one engine per file (runtime/sqlite_storage.py)."""
    return {
        "custom": {
            "module": "ml_platform.runtime.sqlite_storage",
            "class": "SqliteStorage",
            "config": {"base_dir": str(home)},
        }
    }


def workspace_yaml(settings: Settings) -> dict:
    """The code location: the platform's own module, or a `dg` project's definitions module (its
    ModelComponents build the chains there, next to the project's own assets)."""
    if settings.project is None:
        return {"load_from": [{"python_module": {"module_name": MODULE, "location_name": LOCATION_NAME}}]}
    root_module = project_root_module(settings.project)
    src = settings.project / "src"
    return {
        "load_from": [
            {
                "python_module": {
                    "module_name": f"{root_module}.definitions",
                    "location_name": project_location_name(settings.project),
                    "working_directory": str(src if src.is_dir() else settings.project),
                }
            }
        ]
    }


def project_location_name(project: Path) -> str:
    """The code location name `dg dev` gives the project (``code_location_name``, else the
    directory's name): one name, so `ml-platform up` and `dg dev` share run history."""
    dg = tomllib.loads((project / "pyproject.toml").read_text()).get("tool", {}).get("dg", {})
    return dg.get("project", {}).get("code_location_name") or project.name


def project_root_module(project: Path) -> str:
    """``[tool.dg.project] root_module`` of a `dg` project (its package)."""
    doc = tomllib.loads((project / "pyproject.toml").read_text())
    try:
        return doc["tool"]["dg"]["project"]["root_module"]
    except KeyError:
        raise ConfigError(f"{project / 'pyproject.toml'}: [tool.dg.project] root_module is missing") from None


def workspace_path(settings: Settings) -> Path:
    return settings.dagster_home / "workspace.yaml"


def _write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        files.write_atomic(path, text, "the generated Dagster settings")


def prepare_environment(settings: Settings) -> None:
    """Point DAGSTER_HOME at storage_dir (persistent storage) and pin the config path so every
    process (webserver, daemon, run workers, endpoint) loads the same file; write the ``.env``
    that `dagster dev` and the dagster CLI read in the config's folder."""
    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    scale_out.export_password(settings)  # environment only: never into the files written here
    _write_if_changed(home / "dagster.yaml", yaml.safe_dump(dagster_yaml(settings), sort_keys=False))
    _write_if_changed(workspace_path(settings), yaml.safe_dump(workspace_yaml(settings), sort_keys=False))
    env = {"DAGSTER_HOME": str(home), CONFIG_ENV: str(settings.source), "MLFLOW_TRACKING_URI": settings.tracking_uri}
    _write_if_changed(
        settings.source.parent / ".env",
        "# written by ml-platform: `dagster dev` here uses the platform's instance\n"
        + "".join(f"{k}={v}\n" for k, v in env.items()),
    )
    os.environ.update(env)


def get_instance(settings: Settings):
    from dagster import DagsterInstance

    prepare_environment(settings)
    # Two processes starting on a fresh state would both create the SQLite schema ("table
    # run_tags already exists"): the first creates it, the other waits and opens it.
    with files.file_lock(settings.dagster_home / ".create.lock", what="the instance's creation lock"):
        return DagsterInstance.get()
