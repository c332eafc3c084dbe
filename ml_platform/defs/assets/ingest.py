"""raw_batch and validated_batch: one dynamic partition per landing file."""

import shutil
import time
from pathlib import Path

import dagster as dg
import pandas as pd
import pyarrow as pa

from ml_platform.control import asset_source, ingest_claims
from ml_platform.control.chain import Chain
from ml_platform.control.champion import champion_classes
from ml_platform.core import catalog, files, raw_copy
from ml_platform.core.files import StateWriteError
from ml_platform.core.frames import category_array
from ml_platform.core.id_index import IdIndex
from ml_platform.core.landing import (
    BatchReadError,
    archive_landed,
    copy_regular_file,
    file_sha256,
    read_batch,
    refusal,
)
from ml_platform.core.schema import BatchSchemaError, required_columns, validate_batch
from ml_platform.defs.assets.per_partition import AlreadyIngested, each_partition, elsewhere
from ml_platform.defs.metadata import table
from ml_platform.names import (
    COL_REASON,
    COL_ROW,
    TAG_ARRIVAL,
    TAG_RANGE_START,
    TAG_SHA,
    TAG_SOURCE,
    TAG_SOURCE_EVENT,
    TAG_SOURCE_PARTITION,
)


class LandedFile(dg.Config):
    path: str
    sha256: str
    arrival: float


class IngestFiles(dg.Config):
    """A multi-file run's files, by partition (the landing sensor writes it); empty otherwise."""

    files: dict[str, LandedFile] = {}


def _source_of(
    context: dg.AssetExecutionContext, chain: Chain, partition: str, config: IngestFiles
) -> tuple[Path, str | None, float]:
    """Where this partition's file came from: the run's config (a multi-file run) or tags (one
    file: sensor / CLI) or, when a user re-materializes a partition from the UI, the catalog record."""
    if partition in config.files:
        f = config.files[partition]
        return Path(f.path), f.sha256, f.arrival
    tags = context.run.tags
    if TAG_SOURCE in tags and TAG_RANGE_START not in tags:  # a run of one file: its tags name it
        return Path(tags[TAG_SOURCE]), tags.get(TAG_SHA), float(tags.get(TAG_ARRIVAL, time.time()))
    rec = catalog.read_record(chain.dir, partition)
    if rec is None:
        raise dg.Failure(
            f"partition {partition!r} has no source file: it was not created by the landing sensor or `ml-platform run`"
        )
    return Path(rec.file), rec.sha256, float(rec.arrival if rec.arrival is not None else time.time())


def _column_summary(columns: list[str], chain: Chain) -> str:
    """Which configured columns a file has, and how many others: never the file's own header
    (a file that is not a batch, e.g. a secrets file, has its first line there)."""
    wanted = required_columns(chain.cfg)
    found = [c for c in wanted if c in columns]
    return (
        f"{len(found)} of {len(wanted)} configured: {', '.join(found) or 'none'}; "
        f"{len(columns) - len(found)} other column(s)"
    )


def build_raw_batch(chain: Chain) -> dg.AssetsDefinition:
    @dg.asset(
        key=chain.key("raw_batch"),
        partitions_def=chain.partitions,
        group_name=chain.name,
        kinds={"file"},
        output_required=False,  # a file another run ingested: nothing materialized, later steps skipped
        backfill_policy=chain.backfill_policy,
        description="Immutable copy of one landing file.",
    )
    def raw_batch(context: dg.AssetExecutionContext, config: IngestFiles):
        # one rule for every asset of the run (ingest_claims.ingested_elsewhere): a launchpad run
        # naming files without the sensor's / `run`'s tags is a person's re-materialization
        arriving = ingest_claims.arrival_run(context.run.tags)

        def other_run(rec: catalog.BatchRecord | None, sha: str | None) -> str | None:
            return ingest_claims.ingested_by(context.instance, rec, context.run_id, sha) if arriving else None

        def one(partition: str) -> dg.MaterializeResult:
            # Another run of this partition (a retry, the sensor's after `run`'s) waits here and
            # then finds this one's copy and record, never its copy in progress.
            with raw_copy.partition_lock(chain.raw_dir(partition)):
                return copy_and_record(partition)

        def copy_and_record(partition: str) -> dg.MaterializeResult:
            source, expected_sha, arrival = _source_of(context, chain, partition, config)
            other = other_run(catalog.read_record(chain.dir, partition), expected_sha)
            if other is not None:  # `run` and the landing sensor both saw the file: one ingest
                raise AlreadyIngested(other)
            dest_dir = chain.raw_dir(partition)
            stored = raw_copy.stored_copy(dest_dir)
            if stored is None:  # first materialization (a re-materialization keeps the immutable copy)
                refused = refusal(source, chain.settings.landing_dir(chain.name))
                if refused is not None:
                    # Never copied nor read: a link to /etc/passwd must not land in storage.
                    catalog.update_record(
                        chain.dir,
                        partition,
                        file=str(source),
                        arrival=arrival,
                        rows=0,
                        ingested_at=time.time(),
                        ingest_run=context.run_id,
                        status="failed",
                        reason=refused,
                        refused=True,
                    )
                    context.log.error(refused)
                    return dg.MaterializeResult(
                        metadata={"rows": 0, "readable": False, "refused": True, "read_error": refused}
                    )
                if not source.exists():
                    raise dg.Failure(f"{source}: landing file disappeared before it was copied")
                made_dir = not dest_dir.exists()
                dest_dir.mkdir(parents=True, exist_ok=True)
                stored = dest_dir / source.name
                try:
                    copy_regular_file(source, stored)  # atomic: complete or absent
                except StateWriteError:  # storage, not the file: one line, the run stops (cli/main.py)
                    if made_dir:
                        shutil.rmtree(dest_dir, ignore_errors=True)
                    raise
                except (OSError, BatchReadError) as e:
                    if made_dir:
                        shutil.rmtree(dest_dir, ignore_errors=True)
                    raise dg.Failure(
                        f"{source}: could not be copied into storage ({type(e).__name__}: "
                        f"{getattr(e, 'strerror', None) or e}); it will be retried"
                    ) from None
                sha = file_sha256(stored)
                if expected_sha and sha != expected_sha:
                    # The copy is not this partition's content: drop it (the landing file is kept and
                    # is picked up again as a new batch once it settles).
                    shutil.rmtree(dest_dir, ignore_errors=True)
                    raise dg.Failure(
                        f"{source}: content changed after it was detected (sha256 {sha[:12]} "
                        f"!= {expected_sha[:12]}); it will be picked up again as a new batch"
                    )
            else:
                sha = file_sha256(stored)
            try:
                df = read_batch(stored, display_name=str(source))
                rows, columns, error = len(df), list(df.columns), None
            except BatchReadError as e:
                rows, columns, error = 0, [], str(e)
            rec = catalog.update_record(
                chain.dir,
                partition,
                unless=lambda r: other_run(r, sha) is not None,  # another run got here first meanwhile
                file=str(source),
                stored_path=str(stored),
                sha256=sha,
                size=stored.stat().st_size,
                arrival=arrival,
                rows=rows,
                ingested_at=time.time(),
                ingest_run=context.run_id,
                status="raw",
                reason=error,
            )
            if rec.ingest_run != context.run_id:
                raise AlreadyIngested(rec.ingest_run)
            archived = None
            if chain.cfg.landing.archive and source.exists():
                # The raw copy is complete, fsynced and verified: the landing file may leave the zone.
                archived = archive_landed(source, chain.settings.landing_dir(chain.name), sha, stored)
            return dg.MaterializeResult(
                metadata={
                    **({"archived_to": dg.MetadataValue.path(str(archived))} if archived else {}),
                    "rows": rows,
                    "columns": len(columns),
                    "column_names": _column_summary(columns, chain),
                    "sha256": sha,
                    "source_path": dg.MetadataValue.path(str(source)),
                    "stored_path": dg.MetadataValue.path(str(stored)),
                    "readable": error is None,
                    **({"read_error": error} if error else {}),
                }
            )

        def failed(partition: str, message: str) -> dict:
            where = config.files.get(partition)
            origin = {"file": where.path, "arrival": where.arrival} if where else {}
            catalog.update_record(
                chain.dir, partition, **origin, rows=0, ingested_at=time.time(), status="failed", reason=message
            )
            return {"rows": 0, "readable": False, "read_error": message}

        yield from each_partition(context, lambda p: (one(p).metadata, []), failed, progress=True)

    return raw_batch


def build_raw_batch_from_asset(chain: Chain) -> dg.AssetsDefinition:
    """raw_batch when the model's batches come from an upstream asset (``source``): the upstream
    value (one partition, or the materialization the sensor saw) stored as an immutable Parquet
    copy, then the same record as a landed file."""
    upstream = asset_source.upstream_key(chain)

    @dg.asset(
        key=chain.key("raw_batch"),
        deps=[upstream],
        partitions_def=chain.partitions,
        group_name=chain.name,
        kinds={"parquet"},
        description=f"Immutable copy of one batch of {upstream.to_user_string()} (a partition or a materialization).",
    )
    def raw_batch(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        partition = context.partition_key
        tags = context.run.tags
        upstream_partition = tags.get(TAG_SOURCE_PARTITION) or None
        label = f"{upstream.to_user_string()}" + (f"[{upstream_partition}]" if upstream_partition else "")
        dest_dir = chain.raw_dir(partition)
        with raw_copy.partition_lock(dest_dir):  # one run of the partition at a time (raw_copy)
            stored = raw_copy.stored_copy(dest_dir)
            if stored is None:
                if upstream_partition is None and tags.get(TAG_SOURCE_EVENT):
                    latest = context.instance.get_latest_materialization_event(upstream)
                    if latest is None or str(latest.storage_id) != tags[TAG_SOURCE_EVENT]:
                        raise dg.Failure(
                            f"{label}: materialized again since this batch was seen (event {tags[TAG_SOURCE_EVENT]}); "
                            "its value is gone: the newer materialization is its own batch"
                        )
                try:
                    value = context.load_asset_value(upstream, partition_key=upstream_partition)
                except Exception as e:  # noqa: BLE001 - the user's asset / IO manager: name it, retry later
                    raise dg.Failure(f"{label}: its value could not be loaded ({type(e).__name__}: {e})") from None
                if not isinstance(value, pd.DataFrame):
                    raise dg.Failure(f"{label}: its value is a {type(value).__name__}, expected a pandas DataFrame")
                stored = dest_dir / f"{partition}.parquet"
                files.write_with(stored, lambda tmp: value.to_parquet(tmp, index=False), f"the raw copy of {label}")
            sha = file_sha256(stored)
            df = read_batch(stored, display_name=label)
            arrival = float(tags.get(TAG_ARRIVAL, time.time()))
            catalog.update_record(
                chain.dir,
                partition,
                file=label,
                stored_path=str(stored),
                sha256=sha,
                size=stored.stat().st_size,
                arrival=arrival,
                rows=len(df),
                ingested_at=time.time(),
                status="raw",
                reason=None,
            )
            return dg.MaterializeResult(
                metadata={
                    "rows": len(df),
                    "columns": len(df.columns),
                    "column_names": _column_summary(list(df.columns), chain),
                    "sha256": sha,
                    "source": label,
                    "stored_path": dg.MetadataValue.path(str(stored)),
                    "readable": True,
                }
            )

    return raw_batch


def _duplicate_ids(chain: Chain, partition: str, arrival: float, valid: pd.DataFrame) -> tuple[int, int] | None:
    """(ids of this batch already seen in earlier batches, repeats within this batch), or None
    without an id column. Ids compare as categories (3, 3.0 and "3" are one id). Earlier =
    validated batches that arrived before this one (their valid rows' ids, in the id index)."""
    idc = chain.cfg.id_column
    if not idc or idc not in valid.columns:
        return None
    ids = category_array(valid[idc])
    within = int(pd.Series(ids).duplicated().sum())
    with IdIndex(chain.dir / "ids.sqlite") as index:
        if index.fresh:  # first use (or lost): from the validated batches of record
            for rec in catalog.read_records(chain.dir):
                path = Path(rec.validated_path or "")
                if rec.partition != partition and rec.is_validated and path.exists():
                    try:
                        earlier = category_array(pd.read_parquet(path, columns=[idc])[idc])
                    except (KeyError, ValueError, OSError, pa.ArrowException):
                        continue  # an older batch without the column: nothing to compare
                    index.put(rec.partition, rec.arrival or 0.0, earlier)
        seen = index.seen_before(ids, partition, arrival)
        index.put(partition, arrival, ids)
    return seen, within


def _to_parquet(frame: pd.DataFrame, path: Path) -> None:
    """Write a frame; object columns pyarrow cannot type (a mix of strings, numbers and lists
    from a bad file) are written as text, so a bad batch is still stored for inspection."""
    what = f"the {path.parent.name} rows of batch {path.stem}"
    try:
        files.write_with(path, lambda tmp: frame.to_parquet(tmp, index=False), what)
    except (pa.ArrowException, TypeError, ValueError):
        safe = frame.copy()
        for c in safe.columns:
            if safe[c].dtype == object:
                safe[c] = safe[c].map(lambda v: None if v is None else str(v))
        files.write_with(path, lambda tmp: safe.to_parquet(tmp, index=False), what)


def build_validated_batch(chain: Chain) -> dg.AssetsDefinition:
    vcfg = chain.cfg.validation
    key = chain.key("validated_batch")
    specs = [
        dg.AssetCheckSpec(
            "schema_conformance",
            asset=key,
            blocking=True,
            description=f"All configured columns present; invalid share <= {vcfg.max_invalid_share}",
        ),
        dg.AssetCheckSpec(
            "null_rates", asset=key, description=f"No feature has a null rate above {vcfg.max_null_rate}"
        ),
        dg.AssetCheckSpec("row_count", asset=key, description=f"At least {vcfg.min_rows} valid rows"),
    ]

    @dg.asset(
        key=key,
        deps=[chain.key("raw_batch")],
        partitions_def=chain.partitions,
        group_name=chain.name,
        backfill_policy=chain.backfill_policy,
        check_specs=specs,
        kinds={"pandera", "parquet"},
        description="Rows that pass the config's pandera schema; the rest quarantined with reasons.",
    )
    def validated_batch(context: dg.AssetExecutionContext):
        def one(partition: str):
            rec = catalog.read_record(chain.dir, partition) or catalog.BatchRecord(partition)
            stored = Path(rec.stored_path or "")
            source = rec.file if rec.file is not None else str(stored)
            try:
                if rec.refused:
                    raise BatchReadError(rec.reason or f"{source}: refused")
                if not rec.stored_path or not stored.is_file():
                    raise BatchReadError(f"{source}: no raw copy in storage (the copy failed)")
                # The target's classes: declared (target_values) or the serving champion's.
                classes = chain.cfg.target_values or (
                    champion_classes(chain.settings, chain.name) if chain.cfg.task == "classification" else None
                )
                outcome = validate_batch(
                    read_batch(stored, display_name=source),
                    chain.cfg,
                    keys=chain.settings.keys_of(chain.name),
                    source=source,
                    classes=classes,
                )
            except (BatchReadError, BatchSchemaError, FileNotFoundError) as e:
                # The batch is rejected as a whole; the raw copy stays for inspection.
                catalog.update_record(
                    chain.dir,
                    partition,
                    status="failed",
                    reason=str(e),
                    valid_rows=0,
                    quarantined_rows=0,
                    validated_at=time.time(),
                )
                context.log.error(str(e))
                yield dg.MaterializeResult(metadata={"status": "failed", "reason": str(e), "valid_rows": 0})
                yield dg.AssetCheckResult(check_name="schema_conformance", passed=False, metadata={"reason": str(e)})
                unreadable = {"reason": "batch unreadable"}
                yield dg.AssetCheckResult(check_name="null_rates", passed=False, metadata=unreadable)
                yield dg.AssetCheckResult(check_name="row_count", passed=False, metadata={"valid_rows": 0})
                return

            valid, bad = outcome.valid, outcome.quarantined
            for path, frame in ((chain.validated_path(partition), valid), (chain.quarantine_path(partition), bad)):
                _to_parquet(frame, path)
            flags = list(outcome.flags)
            dup = _duplicate_ids(chain, partition, rec.arrival or 0.0, valid)
            if dup and dup[0]:
                flags.append(f"{dup[0]} id(s) in {chain.cfg.id_column} already seen in earlier batches")
            share = outcome.invalid_share
            conform = share <= vcfg.max_invalid_share
            status = "validated" if conform and len(valid) >= vcfg.min_rows else "rejected"
            reason = None
            if not conform:
                reason = f"{share:.1%} of rows invalid (limit {vcfg.max_invalid_share:.0%})"
            elif len(valid) < vcfg.min_rows:
                reason = f"only {len(valid)} valid rows (minimum {vcfg.min_rows})"
            # The batch verdict carries what makes later verdicts moot (one class: no ROC AUC).
            reason = "; ".join([reason] * (reason is not None) + flags) or None
            nulls = valid[list(chain.cfg.features)].isna().mean() if len(valid) else pd.Series(dtype=float)
            ids = {"duplicate_ids": dup[0], "duplicate_ids_within_batch": dup[1]} if dup else {}
            catalog.update_record(
                chain.dir,
                partition,
                status=status,
                reason=reason,
                valid_rows=len(valid),
                labelled=outcome.labelled,
                flags=flags,
                single_class=outcome.single_class,
                quarantined_rows=len(bad),
                invalid_share=share,
                validated_path=str(chain.validated_path(partition)),
                quarantine_reasons=bad[COL_REASON].head(5).tolist(),
                validated_at=time.time(),
                **ids,
            )
            # Both counts a person checks: the rows the file held and the rows that passed.
            yield dg.MaterializeResult(
                metadata={
                    "status": status,
                    "file_rows": len(valid) + len(bad),
                    "valid_rows": len(valid),
                    "quarantined_rows": len(bad),
                    "labelled": outcome.labelled,
                    "invalid_share": float(share),
                    "flags": "; ".join(flags) or "none",
                    **ids,
                    "quarantined": table(bad[[COL_ROW, COL_REASON]].rename(columns={COL_ROW: "file row"})),
                    "quarantine_path": dg.MetadataValue.path(str(chain.quarantine_path(partition))),
                    **(
                        {
                            "label_balance": table(
                                valid[chain.cfg.target].value_counts().rename_axis("class").rename("rows").reset_index()
                            )
                        }
                        if chain.cfg.task == "classification" and outcome.labelled
                        else {}
                    ),
                }
            )
            yield dg.AssetCheckResult(
                check_name="schema_conformance",
                passed=conform,
                metadata={
                    "invalid_share": float(share),
                    "limit": vcfg.max_invalid_share,
                    "reason": reason or "all configured columns present, invalid share within limit",
                },
            )
            worst = nulls[nulls > vcfg.max_null_rate]
            yield dg.AssetCheckResult(
                check_name="null_rates",
                passed=worst.empty,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={
                    "null_rates": table(nulls.rename("null rate").rename_axis("feature").reset_index()),
                    "over_limit": ", ".join(worst.index) or "none",
                },
            )
            yield dg.AssetCheckResult(
                check_name="row_count",
                passed=len(valid) >= vcfg.min_rows,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={"valid_rows": len(valid), "min_rows": vcfg.min_rows},
            )

        def split(partition: str) -> tuple[dict, list]:
            materialized, *checks = one(partition)
            return materialized.metadata, checks

        def failed(partition: str, message: str) -> dict:
            catalog.update_record(chain.dir, partition, status="failed", reason=message, validated_at=time.time())
            return {"status": "failed", "reason": message, "valid_rows": 0}

        yield from each_partition(context, split, failed, skip=elsewhere(chain, context))

    return validated_batch
