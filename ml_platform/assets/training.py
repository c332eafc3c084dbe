"""training_set and candidate_model."""


import shutil

import dagster as dg
import numpy as np
import pandas as pd

from ml_platform import faults
from ml_platform.assets.common import TAG_REGIME_START, TAG_TRIGGER, Chain, md_table, train_pool
from ml_platform.core import catalog, training, version_files
from ml_platform.core.candidate import Candidate, build_candidate
from ml_platform.core.frames import model_inputs
from ml_platform.core.version_files import VersionFiles
from ml_platform.sensors import record_retrain_decision
from ml_platform.resources.registry import MlflowRegistry


def training_batches(chain: Chain, regime_start: str | None = None) -> tuple[list[dict], str]:
    """Validated, labelled batches to train on, in arrival order, and why these.

    After drift (``regime_start`` given) the batches from the start of the new regime on,
    when they hold at least ``training.min_regime_rows`` rows; otherwise the configured
    window (the newest N batches, or all)."""
    recs = [r for r in catalog.read_records(chain.dir)
            if r.get("status") == "validated" and r.get("labelled", True)]
    tcfg = chain.cfg.training
    if regime_start and tcfg.drift_window == "regime":
        keys = [r["partition"] for r in recs]
        if regime_start in keys:
            regime = recs[keys.index(regime_start):]
            rows = sum(int(r.get("valid_rows") or 0) for r in regime)
            if rows >= tcfg.min_regime_rows:
                return regime, f"new regime since {regime_start} ({rows} rows)"
    window = tcfg.window_batches
    return (recs[-window:], f"newest {window} batches") if window else (recs, "all batches")


def build_training_set(chain: Chain) -> dg.AssetsDefinition:
    @dg.asset(key=chain.key("training_set"), deps=[chain.key("validated_batch")], group_name=chain.name,
              kinds={"parquet"}, pool=train_pool(chain),
              description="Validated batches in the training window with a deterministic holdout.")
    def training_set(context: dg.AssetExecutionContext) -> dg.Output[dict]:
        cfg = chain.cfg
        record_retrain_decision(chain, context.run.tags, context.run_id)
        batches, why = training_batches(chain, context.run.tags.get(TAG_REGIME_START))
        if not batches:
            raise dg.Failure("no validated, labelled batch to train on yet")
        frames = [pd.read_parquet(b["validated_path"]).assign(_batch=b["partition"]) for b in batches]
        df = pd.concat(frames, ignore_index=True)
        df["_holdout"] = training.holdout_mask(df, cfg)
        path = chain.dir / "training_sets" / f"{context.run_id}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        df.to_parquet(path, index=False)
        value = {"path": str(path), "rows": len(df), "holdout_rows": int(df["_holdout"].sum()),
                 "batches": {b["partition"]: b["sha256"] for b in batches}}
        meta = {
            "rows": len(df), "holdout_rows": value["holdout_rows"], "batch_count": len(batches), "window": why,
            "batches": md_table(pd.DataFrame(
                [{"partition": b["partition"], "sha256": b["sha256"][:16], "rows": b.get("valid_rows")}
                 for b in batches]), max_rows=50),
            "holdout": "newest rows by " + cfg.timestamp_column if cfg.timestamp_column
            else "stable hash of " + (cfg.id_column or "the row"),
            "path": dg.MetadataValue.path(str(path)),
        }
        if cfg.task == "classification":
            bal = df[cfg.target].value_counts(normalize=True).rename("share").rename_axis("class").reset_index()
            meta["label_balance"] = md_table(bal)
        return dg.Output(value, metadata=meta)

    return training_set


def load_training_set(value: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    df = pd.read_parquet(value["path"])
    mask = df.pop("_holdout").to_numpy(bool)
    return df[~mask], df[mask]


def build_candidate_model(chain: Chain) -> dg.AssetsDefinition:
    @dg.asset(key=chain.key("candidate_model"), group_name=chain.name, kinds={"sklearn", "mlflow", "onnx"},
              ins={"training_set": dg.AssetIn(chain.key("training_set"))}, pool=train_pool(chain),
              description="sklearn pipeline -> MLflow run + registry version (alias challenger) + ONNX.")
    def candidate_model(context: dg.AssetExecutionContext, registry: MlflowRegistry,
                        training_set: dict) -> dg.Output[Candidate]:
        cfg = chain.cfg
        train, holdout = load_training_set(training_set)
        if cfg.task == "classification" and train[cfg.target].nunique() < 2:
            raise dg.Failure("the training window holds a single class; cannot train a classifier")
        context.log.info(f"fitting {cfg.estimator.name} on {len(train)} rows")
        faults.point("train:fitting")
        art = build_candidate(train, holdout, cfg, name=chain.name)
        trigger = context.run.tags.get(TAG_TRIGGER, "manual")
        # Write the files first (a staging folder), log them, then move the folder under the
        # version number the registry assigned.
        staging = VersionFiles(chain.dir / "candidates" / f".staging-{context.run_id}")
        art.write(staging)
        tags = {"dagster_run_id": context.run_id, "trigger": trigger, "training_set": training_set["path"]}
        # The MLflow signature takes doubles (what JSON and pandas give MLflow's own tools).
        sample = model_inputs(train.head(50), cfg).astype({c: "float64" for c in cfg.numeric_features})
        version, run_id = registry.log_candidate(chain.name, training.for_mlflow(art.pipe, cfg), staging,
                                                 params=art.params, metrics=art.metrics, tags=tags,
                                                 input_sample=sample, batches=training_set["batches"])
        files = version_files.local(chain.dir, version)
        if files.dir.exists():  # a stale cache of the same number (registry recreated): replace it
            shutil.rmtree(files.dir)
        staging.dir.rename(files.dir)
        value = Candidate(version=version, run_id=run_id, metrics=art.metrics, dir=str(files.dir),
                          training_set=training_set["path"], trigger=trigger, batches=training_set["batches"])
        metrics = art.metrics
        meta = {
            "version": version, "mlflow_run_id": run_id, "trigger": trigger,
            "metrics": md_table(pd.DataFrame([{"metric": k, "holdout": round(v, 5)} for k, v in metrics.items()])),
            "train_rows": art.train_rows, "holdout_rows": art.holdout_rows,
            **{f"holdout_{k}": float(v) for k, v in metrics.items()},
        }
        if cfg.task == "classification":
            pred = art.pipe.classes_[np.asarray(art.holdout_outputs).argmax(axis=1)]
            meta["confusion_matrix"] = dg.MetadataValue.md(
                training.confusion(training.target_values(holdout, cfg), pred, art.pipe.classes_).to_markdown())
        return dg.Output(value, metadata=meta)

    return candidate_model
