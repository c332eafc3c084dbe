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

    def key(self, asset: str) -> dg.AssetKey:
        return dg.AssetKey([self.name, asset])

    def raw_dir(self, partition: str) -> Path:
        return self.dir / "raw" / partition

    def validated_path(self, partition: str) -> Path:
        return self.dir / "validated" / f"{partition}.parquet"

    def quarantine_path(self, partition: str) -> Path:
        return self.dir / "quarantine" / f"{partition}.parquet"
