"""One configured model as every layer sees it: its name, config and storage paths."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from ml_platform import names
from ml_platform.settings import ModelConfig, Settings


@dataclass(frozen=True)
class Chain:
    """One configured model: the context every asset of its chain is built with."""

    name: str
    cfg: ModelConfig
    settings: Settings

    @property
    def dir(self) -> Path:
        return self.settings.model_dir(self.name)

    @property
    def partitions(self) -> dg.DynamicPartitionsDefinition:
        return dg.DynamicPartitionsDefinition(name=names.partitions(self.name))

    @property
    def backfill_policy(self) -> dg.BackfillPolicy | None:
        """Ingest assets of landed files: a backfill from the UI runs ``landing.max_files_per_run``
        batches per run, as the landing sensor's backlog runs do (None for an upstream ``source``)."""
        if self.cfg.source is not None:
            return None
        return dg.BackfillPolicy.multi_run(self.cfg.landing.max_files_per_run)

    def key(self, asset: str) -> dg.AssetKey:
        return dg.AssetKey([self.name, asset])

    def raw_dir(self, partition: str) -> Path:
        return self.dir / "raw" / partition

    def validated_path(self, partition: str) -> Path:
        return self.dir / "validated" / f"{partition}.parquet"

    def quarantine_path(self, partition: str) -> Path:
        return self.dir / "quarantine" / f"{partition}.parquet"
