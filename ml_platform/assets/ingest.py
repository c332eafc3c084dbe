"""raw_batch and validated_batch: one dynamic partition per landing file."""


import shutil
import time
from pathlib import Path

import dagster as dg
import pandas as pd

from ml_platform.assets.common import TAG_ARRIVAL, TAG_SHA, TAG_SOURCE, Chain, md_table
from ml_platform.core import catalog
from ml_platform.core.landing import BatchReadError, file_sha256, read_batch
from ml_platform.core.schema import BatchSchemaError, validate_batch


def _source_of(context: dg.AssetExecutionContext, chain: Chain) -> tuple[Path, str | None, float]:
    """Where this partition's file came from: the run's tags (sensor / CLI) or, when a
    user re-materializes a partition from the UI, the catalog record."""
    tags = context.run.tags
    if TAG_SOURCE in tags:
        return Path(tags[TAG_SOURCE]), tags.get(TAG_SHA), float(tags.get(TAG_ARRIVAL, time.time()))
    rec = catalog.read_record(chain.dir, context.partition_key)
    if rec is None:
        raise dg.Failure(f"partition {context.partition_key!r} has no source file: it was not "
                         "created by the landing sensor or `ml-platform run`")
    return Path(rec["file"]), rec.get("sha256"), float(rec.get("arrival", time.time()))


def build_raw_batch(chain: Chain) -> dg.AssetsDefinition:
    @dg.asset(key=chain.key("raw_batch"), partitions_def=chain.partitions, group_name=chain.name,
              kinds={"file"}, description="Immutable copy of one landing file.")
    def raw_batch(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        partition = context.partition_key
        source, expected_sha, arrival = _source_of(context, chain)
        dest_dir = chain.raw_dir(partition)
        existing = list(dest_dir.glob("*")) if dest_dir.is_dir() else []
        if existing:  # re-materialization: the copy is immutable, keep it
            stored = existing[0]
        else:
            if not source.exists():
                raise dg.Failure(f"{source}: landing file disappeared before it was copied")
            dest_dir.mkdir(parents=True, exist_ok=True)
            stored = dest_dir / source.name
            tmp = dest_dir / f".{source.name}.tmp"
            shutil.copy2(source, tmp)
            tmp.replace(stored)
        sha = file_sha256(stored)
        if expected_sha and sha != expected_sha:
            raise dg.Failure(f"{source}: content changed after it was detected (sha256 {sha[:12]} "
                             f"!= {expected_sha[:12]}); it will be picked up again as a new batch")
        try:
            df = read_batch(stored, display_name=str(source))
            rows, columns, error = len(df), list(df.columns), None
        except BatchReadError as e:
            rows, columns, error = 0, [], str(e)
        catalog.update_record(chain.dir, partition, file=str(source), stored_path=str(stored), sha256=sha,
                              size=stored.stat().st_size, arrival=arrival, rows=rows, ingested_at=time.time(),
                              status="raw", reason=error)
        return dg.MaterializeResult(metadata={
            "rows": rows, "columns": len(columns), "column_names": ", ".join(columns),
            "sha256": sha, "source_path": dg.MetadataValue.path(str(source)),
            "stored_path": dg.MetadataValue.path(str(stored)),
            "readable": error is None, **({"read_error": error} if error else {}),
        })

    return raw_batch


def build_validated_batch(chain: Chain) -> dg.AssetsDefinition:
    vcfg = chain.cfg.validation
    key = chain.key("validated_batch")
    specs = [
        dg.AssetCheckSpec("schema_conformance", asset=key, blocking=True,
                          description=f"All configured columns present; invalid share <= {vcfg.max_invalid_share}"),
        dg.AssetCheckSpec("null_rates", asset=key,
                          description=f"No feature has a null rate above {vcfg.max_null_rate}"),
        dg.AssetCheckSpec("row_count", asset=key, description=f"At least {vcfg.min_rows} valid rows"),
    ]

    @dg.asset(key=key, deps=[chain.key("raw_batch")], partitions_def=chain.partitions,
              group_name=chain.name, check_specs=specs, kinds={"pandera", "parquet"},
              description="Rows that pass the config's pandera schema; the rest quarantined with reasons.")
    def validated_batch(context: dg.AssetExecutionContext):
        partition = context.partition_key
        rec = catalog.read_record(chain.dir, partition) or {}
        stored = Path(rec.get("stored_path", ""))
        source = rec.get("file", str(stored))
        try:
            outcome = validate_batch(read_batch(stored, display_name=source), chain.cfg,
                                     model_name=chain.name, source=source)
        except (BatchReadError, BatchSchemaError, FileNotFoundError) as e:
            # The batch is rejected as a whole; the raw copy stays for inspection.
            catalog.update_record(chain.dir, partition, status="failed", reason=str(e),
                                  valid_rows=0, quarantined_rows=0, validated_at=time.time())
            context.log.error(str(e))
            yield dg.MaterializeResult(metadata={"status": "failed", "reason": str(e), "valid_rows": 0})
            yield dg.AssetCheckResult(check_name="schema_conformance", passed=False,
                                      metadata={"reason": str(e)})
            yield dg.AssetCheckResult(check_name="null_rates", passed=False, metadata={"reason": "batch unreadable"})
            yield dg.AssetCheckResult(check_name="row_count", passed=False, metadata={"valid_rows": 0})
            return

        valid, bad = outcome.valid, outcome.quarantined
        for path, frame in ((chain.validated_path(partition), valid), (chain.quarantine_path(partition), bad)):
            path.parent.mkdir(parents=True, exist_ok=True)
            frame.to_parquet(path, index=False)
        share = outcome.invalid_share
        conform = share <= vcfg.max_invalid_share
        status = "validated" if conform and len(valid) >= vcfg.min_rows else "rejected"
        reason = None
        if not conform:
            reason = f"{share:.1%} of rows invalid (limit {vcfg.max_invalid_share:.0%})"
        elif len(valid) < vcfg.min_rows:
            reason = f"only {len(valid)} valid rows (minimum {vcfg.min_rows})"
        nulls = valid[list(chain.cfg.features)].isna().mean() if len(valid) else pd.Series(dtype=float)
        catalog.update_record(chain.dir, partition, status=status, reason=reason, valid_rows=len(valid),
                              labelled=outcome.labelled,
                              quarantined_rows=len(bad), invalid_share=share,
                              validated_path=str(chain.validated_path(partition)),
                              quarantine_reasons=bad["_reason"].head(5).tolist(), validated_at=time.time())
        yield dg.MaterializeResult(metadata={
            "status": status, "valid_rows": len(valid), "quarantined_rows": len(bad), "labelled": outcome.labelled,
            "invalid_share": float(share),
            "quarantined": md_table(bad[["_row", "_reason"]]),
            "quarantine_path": dg.MetadataValue.path(str(chain.quarantine_path(partition))),
            **({"label_balance": md_table(valid[chain.cfg.target].value_counts().rename_axis("class")
                                          .reset_index())}
               if chain.cfg.task == "classification" and outcome.labelled else {}),
        })
        yield dg.AssetCheckResult(
            check_name="schema_conformance", passed=conform,
            metadata={"invalid_share": float(share), "limit": vcfg.max_invalid_share,
                      "reason": reason or "all configured columns present, invalid share within limit"})
        worst = nulls[nulls > vcfg.max_null_rate]
        yield dg.AssetCheckResult(
            check_name="null_rates", passed=worst.empty,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"null_rates": md_table(nulls.rename("null_rate").rename_axis("feature").reset_index()),
                      "over_limit": ", ".join(worst.index) or "none"})
        yield dg.AssetCheckResult(check_name="row_count", passed=len(valid) >= vcfg.min_rows,
                                  severity=dg.AssetCheckSeverity.WARN,
                                  metadata={"valid_rows": len(valid), "min_rows": vcfg.min_rows})

    return validated_batch
