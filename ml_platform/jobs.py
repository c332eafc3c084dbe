"""Per-model jobs: ingest one batch partition; train -> gate -> deploy; roll back."""

from typing import Optional

import dagster as dg
import pandas as pd

from ml_platform.assets.common import TAG_MODEL, Chain, table, train_pool
from ml_platform.core import audit
from ml_platform.promotion import PromotionError, rollback
from ml_platform.resources.endpoint import EndpointClient
from ml_platform.resources.registry import MlflowRegistry


def ingest_job_name(chain: Chain) -> str:
    return f"{chain.name}_ingest"


def train_job_name(chain: Chain) -> str:
    return f"{chain.name}_train"


# Runs launched by the automation sensor: tagged as the platform's.
RUN_TAGS = {"ml_platform/launched_by": "automation"}


def live_drift_job_name(chain: Chain) -> str:
    return f"{chain.name}_live_drift"


def _v(version) -> str:
    return "no previous champion" if version is None else f"v{version}"


def audit_table(chain: Chain, last: int = 20) -> dg.MetadataValue:
    """The newest alias moves (who, when, from -> to, why), for the UI."""
    rows = [{"at": a.at[:19], "from": _v(a.previous), "to": _v(a.to), "kind": a.kind, "by": a.actor,
             "trigger": a.trigger, "why": a.reason, "endpoint": a.endpoint}
            for a in audit.read(chain.dir)[-last:]]
    return table(pd.DataFrame(rows[::-1]), max_rows=last, empty="no champion move yet")


class RollbackConfig(dg.Config):
    to_version: Optional[int] = None  # default: the newest gate-passed version below the champion


def build_rollback_job(chain: Chain) -> dg.JobDefinition:
    @dg.op(name=f"{chain.name}_rollback_champion", pool=train_pool(chain))
    def rollback_champion(context: dg.OpExecutionContext, config: RollbackConfig, registry: MlflowRegistry,
                          endpoint: EndpointClient):
        try:
            p = rollback(chain.settings, registry, endpoint, chain.name, config.to_version,
                         actor=f"dagster run {context.run_id}")
        except PromotionError as e:
            raise dg.Failure(str(e)) from None
        context.log.info(f"champion v{p.previous} -> v{p.version}; endpoint: {p.endpoint}")
        yield dg.AssetMaterialization(asset_key=chain.key("deployed_model"), metadata={
            "served_version": p.version, "previous_version": _v(p.previous),
            "endpoint_status": p.endpoint, "trigger": "manual rollback", "alias_moves": audit_table(chain)})
        yield dg.Output(None)

    @dg.job(name=f"{chain.name}_rollback", tags={TAG_MODEL: chain.name},
            description=f"Move the {chain.name} champion back to an earlier gate-passed version (live swap).")
    def rollback_job():
        rollback_champion()

    return rollback_job


def build_jobs(chain: Chain) -> list:
    ingest = dg.define_asset_job(
        ingest_job_name(chain),
        selection=dg.AssetSelection.assets(*(chain.key(a) for a in (
            "raw_batch", "validated_batch", "batch_predictions", "drift_report", "champion_performance"))),
        partitions_def=chain.partitions,
        tags={TAG_MODEL: chain.name},
        description=f"Copy, validate and monitor one {chain.name} batch.",
    )
    train = dg.define_asset_job(
        train_job_name(chain),
        selection=dg.AssetSelection.assets(chain.key("training_set"), chain.key("candidate_model"),
                                           chain.key("deployed_model")),
        tags={TAG_MODEL: chain.name},
        description=f"Train a {chain.name} candidate, run the gate, deploy if every blocking check passed.",
    )
    live = dg.define_asset_job(
        live_drift_job_name(chain), selection=dg.AssetSelection.assets(chain.key("live_drift")),
        tags={TAG_MODEL: chain.name},
        description=f"Drift of the {chain.name} endpoint's live traffic (its live sample).",
    )
    return [ingest, train, live, build_rollback_job(chain)]
