"""Batches from an upstream asset of the user's project (``source: {asset: ...}``): which of its
materializations are new batches, and the tags that carry one to its ingest run.

A partitioned upstream: each partition is a batch (once). An unpartitioned one: each new
materialization is a batch. The landing sensor's role for files is played here by the event log.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import dagster as dg

from ml_platform.control.chain import Chain
from ml_platform.names import TAG_ARRIVAL, TAG_SOURCE, TAG_SOURCE_EVENT, TAG_SOURCE_PARTITION

ASSET_PREFIX = "asset:"


@dataclass(frozen=True)
class SourceEvent:
    storage_id: int
    partition: str | None
    timestamp: float

    def batch_key(self, chain: Chain) -> str:
        """The model's batch (dynamic partition) for this materialization."""
        base = re.sub(r"[^A-Za-z0-9_.-]", "_", chain.cfg.source.asset)
        return f"{base}-{self.partition}" if self.partition is not None else f"{base}-{self.storage_id}"

    def tags(self, chain: Chain) -> dict[str, str]:
        return {
            TAG_SOURCE: f"{ASSET_PREFIX}{chain.cfg.source.asset}",
            TAG_SOURCE_PARTITION: self.partition or "",
            TAG_SOURCE_EVENT: str(self.storage_id),
            TAG_ARRIVAL: repr(self.timestamp),
        }


def upstream_key(chain: Chain) -> dg.AssetKey:
    return dg.AssetKey(chain.cfg.source.asset.split("/"))


def new_events(instance: dg.DagsterInstance, chain: Chain, after_storage_id: int = 0) -> list[SourceEvent]:
    """The upstream's materializations after ``after_storage_id``, oldest first, one per batch
    (a partition materialized twice is one batch), without those already a batch."""
    out: dict[str, SourceEvent] = {}
    cursor = None
    while True:
        res = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=upstream_key(chain), after_storage_id=after_storage_id or None),
            limit=500,
            cursor=cursor,
            ascending=True,
        )
        for r in res.records:
            e = SourceEvent(r.storage_id, r.partition_key, r.timestamp)
            out.setdefault(e.batch_key(chain), e)
        if not res.has_more:
            break
        cursor = res.cursor
    existing = set(instance.get_dynamic_partitions(chain.partitions.name))
    events = [e for key, e in out.items() if key not in existing]
    if events and events[-1].partition is None:
        # An unpartitioned asset holds only its newest value: older materializations cannot be
        # loaded any more, so a backlog is one batch (never N copies of the newest value).
        return events[-1:]
    return events
