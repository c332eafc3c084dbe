"""Per-model jobs: ingest one batch partition; train -> gate -> deploy; roll back."""

from typing import Optional

import dagster as dg

from ml_platform import names
from ml_platform.control.chain import Chain
from ml_platform.control.operator_actions import rollback
from ml_platform.control.promotion import PromotionError
from ml_platform.defs.metadata import audit_table, version_label
from ml_platform.defs.staging import build_stage_job, live_check_key, staged_strategy
from ml_platform.names import TAG_MODEL
from ml_platform.resources.endpoint import EndpointClient
from ml_platform.resources.registry import MlflowRegistry
from ml_platform.runtime import console


class RollbackConfig(dg.Config):
    to_version: Optional[int] = None  # default: the newest gate-passed version below the champion


def build_rollback_job(chain: Chain) -> dg.JobDefinition:
    @dg.op(name=f"{chain.name}_rollback_champion", pool=names.train_pool(chain.name))
    def rollback_champion(
        context: dg.OpExecutionContext,
        config: RollbackConfig,
        ml_platform_registry: MlflowRegistry,
        ml_platform_endpoint: EndpointClient,
    ):
        try:
            p = rollback(
                chain.settings,
                ml_platform_registry,
                ml_platform_endpoint,
                chain.name,
                config.to_version,
                actor=f"dagster run {context.run_id}",
            )
        except PromotionError as e:
            raise dg.Failure(str(e)) from None
        if p.version == p.previous:  # a staged candidate's release rolled back; the champion stays
            context.log.info(p.endpoint)
            yield dg.AssetObservation(asset_key=chain.key("deployed_model"), metadata={"rollback": p.endpoint})
            yield dg.Output(None)
            return
        context.log.info(f"champion v{p.previous} -> v{p.version}; endpoint: {p.endpoint}")
        yield dg.AssetMaterialization(
            asset_key=chain.key("deployed_model"),
            metadata={
                "served_version": p.version,
                "previous_version": version_label(p.previous),
                "endpoint_status": p.endpoint,
                "trigger": "manual rollback",
                "alias_moves": audit_table(chain.dir),
            },
        )
        yield dg.Output(None)

    @dg.job(
        name=names.rollback_job(chain.name),
        tags={TAG_MODEL: chain.name, **names.TRAIN_RUN_TAGS},
        executor_def=dg.in_process_executor,
        config=console.JOB_CONFIG,
        description=f"Move the {chain.name} champion back to an earlier gate-passed version (live swap).",
    )
    def rollback_job():
        rollback_champion()

    return rollback_job


def build_jobs(chain: Chain) -> list:
    """The platform's jobs run their steps in the run worker's process: the steps are small, and a
    process per step would re-import sklearn, MLflow and Dagster (seconds of CPU each)."""
    ingest = dg.define_asset_job(
        names.ingest_job(chain.name),
        selection=dg.AssetSelection.assets(
            *(
                chain.key(a)
                for a in ("raw_batch", "validated_batch", "batch_predictions", "drift_report", "champion_performance")
            )
        ),
        partitions_def=chain.partitions,
        tags={TAG_MODEL: chain.name},
        executor_def=dg.in_process_executor,
        config=console.JOB_CONFIG,
        description=f"Copy, validate and monitor {chain.name} batches: one file, or a range of them (a backlog).",
    )
    train_selection = dg.AssetSelection.assets(
        chain.key("training_set"), chain.key("candidate_model"), chain.key("deployed_model")
    )
    if staged_strategy(chain):  # judged on live traffic later, by the stage job
        train_selection = train_selection - dg.AssetSelection.checks(live_check_key(chain))
    train = dg.define_asset_job(
        names.train_job(chain.name),
        selection=train_selection,
        tags={TAG_MODEL: chain.name, **names.TRAIN_RUN_TAGS},
        executor_def=dg.in_process_executor,
        config=console.JOB_CONFIG,
        description=f"Train a {chain.name} candidate, run the gate, deploy if every blocking check passed.",
    )
    live = dg.define_asset_job(
        names.live_drift_job(chain.name),
        selection=dg.AssetSelection.assets(chain.key("live_drift")),
        tags={TAG_MODEL: chain.name},
        executor_def=dg.in_process_executor,
        config=console.JOB_CONFIG,
        description=f"Drift of the {chain.name} endpoint's live traffic (its live sample).",
    )
    jobs = [ingest, train, live, build_rollback_job(chain)]
    return jobs + ([build_stage_job(chain)] if staged_strategy(chain) else [])
