"""training_set and candidate_model."""

import json
import shutil
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd

from ml_platform import names
from ml_platform.control.chain import Chain
from ml_platform.control.code_on_disk import stale_import
from ml_platform.control.decisions import record_retrain_decision
from ml_platform.core import (
    catalog,
    code_version,
    compute,
    drift_reference,
    files,
    selection,
    training,
    transform,
    version_files,
)
from ml_platform.core.candidate import SCORE, Candidate, build_candidate, scores_of
from ml_platform.core.frames import model_inputs
from ml_platform.core.version_files import VersionFiles
from ml_platform.defs.metadata import VERDICT, figures, md_table, rounded
from ml_platform.names import (
    TAG_CHECK_ONLY,
    TAG_REGIME_START,
    TAG_TRIGGER,
    VERSION_CHECK_ONLY,
    VERSION_CODE,
    VERSION_CODE_MANIFEST,
    VERSION_PROJECT_COMMIT,
    VERSION_PROJECT_DIRTY,
)
from ml_platform.resources.registry import MlflowRegistry
from ml_platform.resources.tracking import end_mlflow_hooks, link_tags
from ml_platform.runtime import faults


def training_batches(chain: Chain) -> tuple[list[catalog.BatchRecord], str]:
    """Validated, labelled batches every candidate window draws from, in arrival order, and
    why these: all of them, or the newest ``training.window_batches``."""
    recs = [r for r in catalog.read_records(chain.dir) if r.trainable]
    window = chain.cfg.training.window_batches
    return (recs[-window:], f"newest {window} batches") if window else (recs, "all batches")


def build_training_set(chain: Chain) -> dg.AssetsDefinition:
    @dg.asset(
        io_manager_key=names.RESOURCE_IO,
        key=chain.key("training_set"),
        deps=[chain.key("validated_batch")],
        group_name=chain.name,
        kinds={"parquet"},
        pool=names.train_pool(chain.name),
        hooks=end_mlflow_hooks(),
        description="Validated, labelled batches with one holdout drawn from the newest of them "
        "(no candidate trains on it).",
    )
    def training_set(context: dg.AssetExecutionContext) -> dg.Output[dict]:
        cfg = chain.cfg
        record_retrain_decision(chain, context.run.tags, context.run_id)
        batches, why = training_batches(chain)
        if not batches:
            raise dg.Failure("no validated, labelled batch to train on yet")
        frames = [
            pd.read_parquet(b.validated_path)
            .assign(**{selection.BATCH: b.partition})
            .pipe(lambda f: f.assign(**{selection.ROW: np.arange(len(f))}))
            for b in batches
        ]
        df = pd.concat(frames, ignore_index=True)
        df[selection.HOLDOUT] = selection.mark_holdout(df, cfg)
        path = chain.dir / "training_sets" / f"{context.run_id}.parquet"
        files.write_with(path, lambda tmp: df.to_parquet(tmp, index=False), "the training set")
        pool = list(dict.fromkeys(df.loc[df[selection.HOLDOUT], selection.BATCH]))
        value = {
            "path": str(path),
            "rows": len(df),
            "holdout_rows": int(df[selection.HOLDOUT].sum()),
            "batches": {b.partition: b.sha256 for b in batches},
        }
        meta = {
            "rows": len(df),
            "holdout_rows": value["holdout_rows"],
            "batch_count": len(batches),
            "window": why,
            "batches": md_table(
                pd.DataFrame(
                    [{"partition": b.partition, "sha256": b.sha256[:16], "rows": b.valid_rows} for b in batches]
                ),
                max_rows=50,
            ),
            "holdout": (
                f"newest {cfg.training.holdout_fraction:.0%} of the rows of {', '.join(pool)} by "
                + (cfg.timestamp_column if cfg.timestamp_column else f"a stable hash of {cfg.id_column or 'the row'}")
            ),
            "path": dg.MetadataValue.path(str(path)),
        }
        if cfg.task == "classification":
            bal = df[cfg.target].value_counts(normalize=True).rename("share").rename_axis("class").reset_index()
            meta["label_balance"] = md_table(bal)
        return dg.Output(value, metadata=meta)

    return training_set


def input_drift_reference(art, raw_train: pd.DataFrame, model_train: pd.DataFrame, mcfg, cfg) -> dict:
    """A transform model's drift reference: its input columns (what lands and what callers send)
    and its own scores on its training rows."""
    x = model_inputs(model_train, mcfg)
    scored = raw_train.assign(**{SCORE: scores_of(compute.outputs(art.pipe, x, cfg.task), cfg.task)})
    return drift_reference.build_reference_from_config(scored, cfg.features, cfg.drift, score_column=SCORE).to_dict()


def load_training_set(value: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, holdout): the rows no candidate may train on are the holdout."""
    df = pd.read_parquet(value["path"])
    mask = df.pop(selection.HOLDOUT).to_numpy(bool)
    return df[~mask], df[mask]


def comparison_table(sel: selection.Selection) -> dg.TableMetadataValue:
    """The candidates side by side (UI): the winner first marked, every figure a column, the
    backtest's one per scored batch (blank where the candidate was not scored)."""
    df = selection.table(sel)
    m = sel.metric
    per_batch = [
        dg.TableColumn(
            f"backtest {b}",
            "float",
            description=f"{m} on the holdout ({sel.holdout_rows} rows)"
            if b == selection.HOLDOUT_ORIGIN
            else f"{m} on {b}'s training rows of the window refitted on the batches before {b}",
        )
        for b in sel.origins
    ]
    schema = dg.TableSchema(
        columns=[
            dg.TableColumn("winner", "bool", description="registered as the version"),
            dg.TableColumn("window", "string", description="the batches it trained on"),
            dg.TableColumn("estimator", "string"),
            dg.TableColumn("params", "string"),
            dg.TableColumn("search", "bool", description="from the parameter search"),
            dg.TableColumn("train_rows", "int"),
            dg.TableColumn(m, "float", description=f"{m} on the shared holdout ({sel.holdout_rows} newest rows)"),
            *per_batch,
            dg.TableColumn("backtest_mean", "float", description=f"mean {m} over the batches it was scored on"),
            dg.TableColumn("backtest_low", "float", description="bootstrap interval of that mean (gate.confidence)"),
            dg.TableColumn("backtest_high", "float"),
            dg.TableColumn("fit_seconds", "float", description="its fit + the backtest refits it was first to need"),
            dg.TableColumn("note", "string"),
        ]
    )
    figures_ = [m, *(c.name for c in per_batch), "backtest_mean", "backtest_low", "backtest_high"]
    records = []
    for r in df.to_dict("records"):
        shown = {k: rounded(r[k]) if _finite(r[k]) else ("undefined" if k == m else "") for k in figures_}
        records.append(dg.TableRecord({**r, **shown, "train_rows": int(r["train_rows"])}))
    return dg.MetadataValue.table(records, schema=schema)


def _finite(v) -> bool:
    return v is not None and bool(np.isfinite(v))


def backtest_record(sel: selection.Selection, t: selection.Trial) -> dict:
    """A candidate's backtest for its MLflow run (``MlflowRegistry`` logs it)."""
    lo, hi = t.backtest_interval
    return {
        "metric": sel.metric,
        "batches": list(sel.origins),
        "values": [t.backtest.get(b) for b in sel.origins],
        "mean": t.backtest_mean,
        "low": lo,
        "high": hi,
    }


def build_candidate_model(chain: Chain) -> dg.AssetsDefinition:
    # Dagster's own staleness ("code version changed") follows everything that shapes a candidate.
    parts = code_version.manifest(chain.cfg)
    version_of_code = code_version.code_version(parts)

    @dg.asset(
        io_manager_key=names.RESOURCE_IO,
        code_version=version_of_code,
        key=chain.key("candidate_model"),
        group_name=chain.name,
        kinds={"sklearn", "mlflow", "onnx"},
        ins={"training_set": dg.AssetIn(chain.key("training_set"))},
        pool=names.train_pool(chain.name),
        hooks=end_mlflow_hooks(),
        description="Candidates (training windows x estimators) judged by a rolling-origin backtest over the "
        "last training.backtest_batches batches (the newest: the holdout); the best -> MLflow run + registry "
        "version (alias challenger) + ONNX.",
    )
    def candidate_model(
        context: dg.AssetExecutionContext,
        ml_platform_registry: MlflowRegistry,
        ml_platform_mlflow: dg.ResourceParam[Any],
        training_set: dict,
    ) -> dg.Output[Candidate]:
        # dagster-mlflow's run for this Dagster run: the candidates are its child runs.
        parent = ml_platform_mlflow.active_run().info.run_id
        try:
            out = _train(context, ml_platform_registry, parent, training_set)
        except BaseException:
            ml_platform_mlflow.end_run(status="FAILED")
            raise
        # The training part of the run is over. In the train job the hook also ends it after the
        # last op (deploy); in a run without the hook (a UI click), or when a failed gate check
        # skips the deploy step, nothing else would.
        ml_platform_mlflow.end_run()
        return out

    def _train(
        context: dg.AssetExecutionContext, registry: MlflowRegistry, parent: str, training_set: dict
    ) -> dg.Output[Candidate]:
        if context.run.tags.get(TAG_TRIGGER) == "code":  # launched for the files on disk: train those
            stale = stale_import(chain, version_of_code)
            if stale:
                raise dg.Failure(stale)
        cfg = chain.cfg
        train, holdout = load_training_set(training_set)
        raw_train, raw_holdout = train, holdout
        spec = transform.version_meta(cfg)
        if spec is not None:  # the estimator sees the transform's output (and the version keeps its source)
            fn = transform.load_from_source(spec["source"], spec["path"], spec["package"], spec["file"])
            keep = tuple(c for c in train.columns if c not in cfg.features)
            try:
                inputs = list(cfg.features)  # what callers send: the transform sees the same columns everywhere
                train = transform.apply(fn, train, cfg.transform, where="training rows: ", keep=keep, inputs=inputs)
                holdout = transform.apply(fn, holdout, cfg.transform, where="holdout rows: ", keep=keep, inputs=inputs)
                cfg = transform.model_config(cfg, transform.derived_features(train, cfg))
            except transform.TransformError as e:
                raise dg.Failure(f"{e} (batches {', '.join(training_set['batches'])})") from None
        order = list(training_set["batches"])
        records = catalog.read_records(chain.dir)
        regime = selection.regime_start(records, upto=order[-1])
        rows = train[selection.BATCH].value_counts().to_dict()
        windows = selection.candidate_windows(order, rows, cfg, regime)
        tagged = context.run.tags.get(TAG_REGIME_START)
        if tagged and tagged != regime:
            context.log.info(f"regime start from the batch verdicts: {regime}; the run's tag said {tagged}")
        context.log.info(
            f"{len(windows)} window(s) x {len(cfg.estimator_list)} estimator(s), "
            f"search budget {cfg.training.search_budget}, holdout {len(holdout)} rows, "
            f"backtest over the last {cfg.training.backtest_batches} batch(es)"
        )
        faults.point("train:fitting")
        try:
            sel = selection.select(
                train,
                holdout,
                cfg,
                windows,
                regime,
                log=context.log.info,
                regime_drifted=selection.regime_drifted(records, regime),
            )
        except ValueError as e:
            raise dg.Failure(str(e)) from None
        win = sel.winner
        if sel.note:
            context.log.info(sel.note)
        trigger = context.run.tags.get(TAG_TRIGGER, "manual")
        links = link_tags(chain.settings, context.run_id)
        for i, t in enumerate(sel.trials):
            if i != sel.best and not t.skipped:
                registry.log_trial(
                    chain.name,
                    parent_run_id=parent,
                    run_name=t.name,
                    metrics=t.metrics,
                    params=_trial_params(t, len(holdout)),
                    tags={**links, "trigger": trigger, "winner": "false"},
                    backtest=backtest_record(sel, t),
                )
        wcfg = cfg.model_copy(update={"estimator": win.estimator})
        wtrain = train[train[selection.BATCH].isin(win.window.batches)]
        art = build_candidate(wtrain, holdout, wcfg, name=chain.name, pipe=win.pipe, window=win.window.label)
        if spec is not None:
            art.serving_meta = transform.raw_metadata(art.serving_meta, chain.cfg, spec, raw_holdout)
            # drift compares batches as they land (the input columns) with the data the version trained on
            art.drift_reference = input_drift_reference(art, raw_train.loc[wtrain.index], wtrain, wcfg, chain.cfg)
        # Write the files first (a staging folder), log them, then move the folder under the
        # version number the registry assigned.
        staging = VersionFiles(chain.dir / "candidates" / f".staging-{context.run_id}")
        art.write(staging)
        batches = {b: training_set["batches"][b] for b in win.window.batches}
        commit, dirty = code_version.git_state(chain.settings.project or chain.settings.source.parent)
        tags = {
            "dagster_run_id": context.run_id,
            VERSION_CODE: version_of_code,
            VERSION_CODE_MANIFEST: json.dumps(parts, sort_keys=True),
            VERSION_PROJECT_COMMIT: commit,
            VERSION_PROJECT_DIRTY: "unknown" if dirty is None else str(dirty).lower(),
            **({VERSION_CHECK_ONLY: "true"} if context.run.tags.get(TAG_CHECK_ONLY) else {}),
            "trigger": trigger,
            "training_set": training_set["path"],
            "train_window": win.window.label,
            **({"selection_note": sel.note[:4000]} if sel.note else {}),
        }
        # The MLflow signature takes doubles (what JSON and pandas give MLflow's own tools).
        sample = model_inputs(wtrain.head(50), cfg).astype({c: "float64" for c in cfg.numeric_features})
        version, run_id = registry.log_candidate(
            chain.name,
            training.for_mlflow(art.pipe, wcfg),
            staging,
            params={**art.params, **_trial_params(win, len(holdout))},
            metrics=art.metrics,
            tags=tags,
            input_sample=sample,
            batches=batches,
            parent_run_id=parent,
            run_name=win.name,
            run_tags={**links, "winner": "true"},
            backtest=backtest_record(sel, win),
            config=chain.cfg.model_copy(update={"estimator": win.estimator}).model_dump(
                mode="json", by_alias=True, exclude_none=True
            ),
        )
        files = version_files.local(chain.dir, version)
        if files.dir.exists():  # a stale cache of the same number (registry recreated): replace it
            shutil.rmtree(files.dir)
        staging.dir.rename(files.dir)
        value = Candidate(
            version=version,
            run_id=run_id,
            metrics=art.metrics,
            dir=str(files.dir),
            training_set=training_set["path"],
            trigger=trigger,
            batches=batches,
            window=win.window.label,
        )
        metrics = art.metrics
        score = metrics.get(sel.metric)
        fitted = sum(1 for t in sel.trials if not t.skipped)
        meta = {
            VERDICT: (
                f"v{version}: {sel.metric} "
                + (f"{score:.4f}" if score is not None and np.isfinite(score) else "undefined")
                + f" on {art.holdout_rows} holdout rows, best of {fitted} candidate(s) "
                f"({win.estimator.label} on {win.window.label}); the gate's checks decide whether it serves"
            ),
            "version": version,
            "mlflow_run_id": run_id,
            "mlflow_parent_run_id": parent,
            "trigger": trigger,
            "window": win.window.label,
            "estimator": win.estimator.label,
            "regime_start": regime or "none (the newest batch is not shifted)",
            "candidates": comparison_table(sel),
            "selection": sel.note or f"the best mean {sel.metric} of the backtest over {', '.join(sel.origins)}",
            "backtest_fits": sel.backtest_fits,
            "backtest_seconds": round(sel.backtest_seconds, 2),
            "metrics": md_table(pd.DataFrame([{"metric": k, "holdout": rounded(v)} for k, v in metrics.items()])),
            "train_rows": art.train_rows,
            "holdout_rows": art.holdout_rows,
            **figures({f"holdout_{k}": float(v) for k, v in metrics.items()}),
        }
        if cfg.task == "classification":
            pred = art.pipe.classes_[np.asarray(art.holdout_outputs).argmax(axis=1)]
            meta["confusion_matrix"] = dg.MetadataValue.md(
                training.confusion(training.target_values(holdout, cfg), pred, art.pipe.classes_).to_markdown()
            )
        return dg.Output(value, metadata=meta)

    return candidate_model


def _trial_params(t: selection.Trial, holdout_rows: int) -> dict:
    return {
        "window": t.window.label,
        "window_kind": t.window.kind,
        "estimator": t.estimator.label,
        **{f"estimator.{k}": v for k, v in t.estimator.params.items()},
        "train_rows": t.train_rows,
        "holdout_rows": holdout_rows,
        "search": t.search,
        "fit_seconds": round(t.fit_seconds, 3),
        "backtest_seconds": round(t.backtest_seconds, 3),
    }
