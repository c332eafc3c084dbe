"""One ingest step over several batch partitions (a multi-file run), each file still its own.

A run over a range of the batch partitions executes each asset once for all of them (Dagster
emits one materialization per partition). Each partition's body runs on its own: its metadata
goes on its own materialization (``add_asset_metadata(..., partition_key=)``), its check results
become check evaluations of that partition, and an error in one file is recorded on that file
alone while the others go on. In a multi-file run the checks cannot block the run's later steps
(they would stop every file's): the later assets skip a batch its record says was not
validated, which is what a blocking check does in a run of one file.

A run of one partition keeps Dagster's plain path: the body's error fails the step and a failed
blocking check stops the run's later steps.
"""

from __future__ import annotations

import traceback
import warnings
from collections.abc import Callable, Iterator

import dagster as dg

from ml_platform.control import ingest_claims
from ml_platform.control.chain import Chain
from ml_platform.core.files import StateWriteError

# The ingest assets' backfill policy is a Dagster beta parameter: said once here, not per load.
warnings.filterwarnings("ignore", message="Parameter `backfill_policy`", category=dg.BetaWarning)

PROGRESS_EVERY = 10
Body = Callable[[str], tuple[dict, list]]  # partition -> (metadata, [AssetCheckResult])
OnError = Callable[[str, str], dict]  # (partition, message) -> metadata (records the failure)


class AlreadyIngested(Exception):
    """This partition's file was ingested by another run (``control/ingest_claims``)."""

    def __init__(self, run_id: str):
        super().__init__(f"already ingested by run {run_id}")
        self.run_id = run_id


def elsewhere(chain: Chain, context: dg.AssetExecutionContext) -> Callable[[str], str | None]:
    """``each_partition``'s ``skip`` for the assets after raw_batch in an ingest run."""
    return ingest_claims.ingested_elsewhere(chain, context.instance, context.run_id, context.run.tags)


def each_partition(
    context: dg.AssetExecutionContext,
    body: Body,
    on_error: OnError,
    *,
    progress: bool = False,
    skip: Callable[[str], str | None] | None = None,
) -> Iterator:
    """``skip``: in a run of several partitions, the run that ingested a partition if not this
    one (its later assets leave it alone). A body raising ``AlreadyIngested`` in a run of one
    partition yields nothing: the asset (raw_batch: ``output_required=False``) is not
    materialized and Dagster skips the run's later steps."""
    keys = list(context.partition_keys)
    if len(keys) == 1:
        try:
            metadata, checks = body(keys[0])
        except AlreadyIngested as e:
            context.log.info(f"{keys[0]}: {e}: nothing copied, validated or materialized again")
            return
        yield dg.MaterializeResult(metadata=metadata)
        yield from checks
        return
    key = context.assets_def.key
    evaluations = []
    for i, partition in enumerate(keys, 1):
        try:
            other = skip(partition) if skip is not None else None
            if other is not None:
                raise AlreadyIngested(other)
            metadata, checks = body(partition)
        except AlreadyIngested as e:  # this file's batch is another run's: said on it, nothing redone
            context.log.info(f"{partition}: {e}: left as it is")
            metadata, checks = {"skipped": str(e), "ingested_by_run": e.run_id}, []
        except StateWriteError:
            raise  # storage, not the file: every later file would fail alike; the run stops
        except Exception as e:  # noqa: BLE001 - a bad file fails alone: recorded on its batch
            message = str(e) if isinstance(e, dg.Failure) else f"{type(e).__name__}: {e}"
            context.log.error(f"{partition}: {message}")
            if not isinstance(e, dg.Failure):
                context.log.debug(traceback.format_exc())
            metadata, checks = on_error(partition, message), []
        _add_metadata(context, metadata, partition)
        evaluations += [
            dg.AssetCheckEvaluation(
                asset_key=key,
                check_name=c.check_name,
                passed=c.passed,
                metadata=c.metadata,
                severity=c.severity,
                description=c.description,
                blocking=False,
                partition=partition,
            )
            for c in checks
        ]
        if progress and (i % PROGRESS_EVERY == 0 or i == len(keys)):  # a log line is an event write
            context.log.info(f"{i}/{len(keys)} files of this run done (last: {partition})")
    yield dg.MaterializeResult()
    for check_key in context.selected_asset_check_keys:
        yield dg.Output(None, output_name=context.assets_def.get_output_name_for_asset_check_key(check_key))
    yield from evaluations


def _add_metadata(context: dg.AssetExecutionContext, metadata: dict, partition: str) -> None:
    """``context.add_asset_metadata(metadata, partition_key=partition)`` without its check that the
    partition is one of the run's, which reads every key of the dynamic partitions on each call
    (Dagster 1.13: O(all batches) per file and asset, seconds per run at a few thousand batches).
    ``partition`` comes from ``context.partition_keys``, so the check holds by construction. Falls
    back to the checked call if Dagster's internals differ."""
    step = context.get_step_execution_context()
    acc = getattr(step, "_metadata_accumulator", None)
    if acc is None or not hasattr(acc, "with_additional_asset_metadata"):
        context.add_asset_metadata(metadata, partition_key=partition)
        return
    step._metadata_accumulator = acc.with_additional_asset_metadata(  # noqa: SLF001
        asset_key=context.assets_def.key, metadata=metadata, partition_key=partition
    )
