"""What every asset factory of one model chain shares: its name, config and storage paths."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pandas as pd

from ml_platform.settings import ModelConfig, Settings

# Run tags: written by sensors / the CLI, read by assets and by `status`.
TAG_SOURCE = "ml_platform/source_path"
TAG_SHA = "ml_platform/sha256"
TAG_ARRIVAL = "ml_platform/arrival"
TAG_TRIGGER = "ml_platform/trigger"
TAG_REASON = "ml_platform/reason"
TAG_BATCH = "ml_platform/batch"
TAG_REGIME_START = "ml_platform/regime_start"  # first batch of a drifted regime (train on it alone)
TAG_MODEL = "ml_platform/model"
TAG_RETRY_OF = "ml_platform/retry_of"  # a train run re-launched after its worker died


def train_pool(chain: "Chain") -> str:
    """The Dagster concurrency pool of every step that trains or moves this model's champion.
    The instance runs pools at run granularity with limit 1, so train/deploy/rollback runs of
    one model are serialized whoever launches them (sensor, UI, backfill, CLI)."""
    return f"{chain.name}_train"


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
        return dg.DynamicPartitionsDefinition(name=f"{self.name}_batches")

    def key(self, asset: str) -> dg.AssetKey:
        return dg.AssetKey([self.name, asset])

    def raw_dir(self, partition: str) -> Path:
        return self.dir / "raw" / partition

    def validated_path(self, partition: str) -> Path:
        return self.dir / "validated" / f"{partition}.parquet"

    def quarantine_path(self, partition: str) -> Path:
        return self.dir / "quarantine" / f"{partition}.parquet"


def md_table(df: pd.DataFrame, max_rows: int = 20) -> dg.MetadataValue:
    """A small DataFrame as a markdown table (the UI renders it)."""
    shown = df.head(max_rows)
    text = shown.to_markdown(index=False) if len(shown) else "_none_"
    if len(df) > max_rows:
        text += f"\n\n… {len(df) - max_rows} more rows"
    return dg.MetadataValue.md(text)
