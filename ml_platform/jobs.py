"""Per-model jobs: ingest one batch partition, and train -> gate -> deploy."""

from __future__ import annotations

import dagster as dg

from ml_platform.assets.common import TAG_MODEL, TAG_TRAIN_LOCK, Chain


def ingest_job_name(chain: Chain) -> str:
    return f"{chain.name}_ingest"


def train_job_name(chain: Chain) -> str:
    return f"{chain.name}_train"


def build_jobs(chain: Chain) -> list:
    ingest = dg.define_asset_job(
        ingest_job_name(chain),
        selection=dg.AssetSelection.assets(*(chain.key(a) for a in (
            "raw_batch", "validated_batch", "batch_predictions", "drift_report", "champion_performance"))),
        partitions_def=chain.partitions,
        executor_def=dg.in_process_executor,  # one process per run: steps are small
        tags={TAG_MODEL: chain.name},
        description=f"Copy, validate and monitor one {chain.name} batch.",
    )
    train = dg.define_asset_job(
        train_job_name(chain),
        selection=dg.AssetSelection.assets(chain.key("training_set"), chain.key("candidate_model"),
                                           chain.key("deployed_model")),
        executor_def=dg.in_process_executor,
        tags={TAG_MODEL: chain.name, TAG_TRAIN_LOCK: chain.name},
        description=f"Train a {chain.name} candidate, run the gate, deploy if every blocking check passed.",
    )
    return [ingest, train]
