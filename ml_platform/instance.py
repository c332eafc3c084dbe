"""The persistent Dagster instance under storage_dir, shared by `up` (UI + daemon) and `run`."""

from __future__ import annotations

import os

import yaml

from ml_platform.assets.common import TAG_TRAIN_LOCK
from ml_platform.settings import CONFIG_ENV, Settings


def dagster_yaml() -> dict:
    return {
        "telemetry": {"enabled": False},
        "run_coordinator": {
            "module": "dagster.core.run_coordinator",
            "class": "QueuedRunCoordinator",
            "config": {
                # 2-core machines: a few runs at once; training is serialized per model.
                "max_concurrent_runs": 4,
                "dequeue_interval_seconds": 1,
                "tag_concurrency_limits": [
                    {"key": TAG_TRAIN_LOCK, "value": {"applyLimitPerUniqueValue": True}, "limit": 1},
                ],
            },
        },
        "sensors": {"use_threads": True, "num_workers": 4},
        "schedules": {"use_threads": True, "num_workers": 2},
    }


def prepare_environment(settings: Settings) -> None:
    """Point DAGSTER_HOME at storage_dir (persistent SQLite storage) and pin the config path
    so that every process (webserver, daemon, run workers, endpoint) loads the same file."""
    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump(dagster_yaml(), sort_keys=False))
    os.environ["DAGSTER_HOME"] = str(home)
    os.environ[CONFIG_ENV] = str(settings.source)
    os.environ["MLFLOW_TRACKING_URI"] = settings.tracking_uri


def get_instance(settings: Settings):
    from dagster import DagsterInstance

    prepare_environment(settings)
    return DagsterInstance.get()
