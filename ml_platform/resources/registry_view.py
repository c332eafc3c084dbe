"""A read-only view of the MLflow registry for `ml-platform status`, straight from MLflow's
SQLite backend store: what `status` reads (versions and their tags, the champion alias, a run's
metrics and times) without importing MLflow, whose client costs seconds to import.

Only for ``sqlite:///`` tracking URIs, and only for reading: anything that writes (a repair)
goes through ``MlflowRegistry``. ``view_for`` returns None when the store is not SQLite or its
tables are not the ones read here (another MLflow version): the caller uses ``MlflowRegistry``.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from ml_platform.core import files
from ml_platform.names import BACKTEST_METRIC_PREFIX

DELETED = "Deleted_Internal"  # MLflow's stage of a deleted version (kept as a row)
BUSY_TIMEOUT_SECONDS = 30.0  # how long a read waits for a writer's lock before "database is locked"


def summary_metrics(latest: dict) -> dict:
    """A run's figures as status shows them: the holdout's under the metric's name, the backtest's
    mean and interval; not the backtest's per-batch series (``backtest_<metric>``), whose latest
    value is only its last batch's (the holdout's), shown beside the interval of the mean as if
    it were that mean."""
    return {
        k.removeprefix("holdout_"): v
        for k, v in latest.items()
        if not (k.startswith(BACKTEST_METRIC_PREFIX) and f"{k}_mean" in latest)
    }


@dataclass(frozen=True)
class VersionView:
    """The fields of ``mlflow.entities.model_registry.ModelVersion`` that status reads."""

    name: str
    version: str
    run_id: str | None
    creation_timestamp: int
    tags: dict = field(default_factory=dict)


class RegistryView:
    def __init__(self, db: Path):
        self.db = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_SECONDS)

    def versions(self, model: str) -> list[VersionView]:
        rows = self.db.execute(
            "SELECT version, run_id, creation_time FROM model_versions WHERE name=? AND "
            "(current_stage IS NULL OR current_stage != ?) ORDER BY version",
            (model, DELETED),
        ).fetchall()
        tags: dict[int, dict] = {}
        for version, key, value in self.db.execute(
            "SELECT version, key, value FROM model_version_tags WHERE name=?", (model,)
        ):
            tags.setdefault(int(version), {})[key] = value
        return [
            VersionView(model, str(v), run_id, int(created or 0), tags.get(int(v), {})) for v, run_id, created in rows
        ]

    def champion_alias(self, model: str) -> int | None:
        row = self.db.execute(
            "SELECT version FROM registered_model_aliases WHERE name=? AND alias='champion'", (model,)
        ).fetchone()
        return int(row[0]) if row else None

    def run_metrics(self, run_id: str) -> dict:
        rows = self.db.execute("SELECT key, value FROM latest_metrics WHERE run_uuid=?", (run_id,))
        return summary_metrics(dict(rows))

    def run_seconds(self, run_id: str) -> float | None:
        """As ``MlflowRegistry.run_seconds``: the run's parent (the retrain) from start to end."""
        parent = self.db.execute(
            "SELECT value FROM tags WHERE run_uuid=? AND key='mlflow.parentRunId'", (run_id,)
        ).fetchone()
        row = self.db.execute(
            "SELECT start_time, end_time FROM runs WHERE run_uuid=?", (parent[0] if parent else run_id,)
        ).fetchone()
        if row is None or not row[0] or not row[1]:
            return None
        return max(0.0, (row[1] - row[0]) / 1000)


def view_for(settings) -> RegistryView | None:
    uri = settings.tracking_uri
    if not uri.startswith("sqlite:///"):
        return None
    db = Path(uri.removeprefix("sqlite:///"))
    if not db.exists():
        return None
    try:
        view = RegistryView(db)
        view.versions("")  # the tables read here exist, with these columns
        view.champion_alias("")
        view.run_metrics("")
        view.run_seconds("")
    except sqlite3.Error as e:
        if files.storage_fault(e) is not None:  # locked by another process, a disk fault: said as such
            raise
        return None  # other tables (another MLflow version): through MLflow's client
    return view
