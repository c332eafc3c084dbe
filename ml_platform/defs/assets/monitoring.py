"""Per-batch monitoring against the champion serving at that moment: batch_predictions,
drift_report and champion_performance. Each writes its verdict on the batch record, where
the retrain policy (sensor or `ml-platform run`) reads it."""

import json
import time
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd

from ml_platform.control.chain import Chain
from ml_platform.control.champion import champion_model, store
from ml_platform.core import (
    catalog,
    challenger,
    drift,
    drift_chart,
    drift_reference,
    estimate,
    export,
    files,
    parquet_cache,
    training,
    transform,
    version_files,
)
from ml_platform.core.candidate import SCORE, scores_of
from ml_platform.core.frames import category_array
from ml_platform.core.schema import unknown_labels
from ml_platform.defs.assets.per_partition import each_partition, elsewhere
from ml_platform.defs.metadata import VERDICT, bar, display_name, figures, plot, rounded, table, version_label

BOOTSTRAP_MAX_ROWS = 20_000


def monitoring_failed(chain: Chain, field: str):
    """A multi-file run's error on one batch: written where that verdict goes on its record."""

    def record(partition: str, message: str) -> dict:
        why = f"failed: {message}"
        value = {"verdict": "skipped", "reason": why} if field == "drift" else {"skipped": why}
        # champion_performance writes both: an estimate left from an earlier attempt would name
        # the version that scored the batch then (decisions.stale_evidence reads every figure)
        extra = {"estimate": {"method": "none", "reason": why}} if field == "performance" else {}
        catalog.update_record(chain.dir, partition, **{field: value}, **extra)
        return {"skipped": why}

    return record


def serving_champion(chain: Chain) -> tuple[int | None, bytes | None, dict | None]:
    """(version, onnx, meta) of the champion, or Nones (``champion.champion_model``)."""
    return champion_model(chain.settings, chain.name)


def scored_by(chain: Chain, rec: catalog.BatchRecord) -> tuple[int | None, dict | None]:
    """(version, meta) of the champion that scored the batch (batch_predictions records it), else
    of the champion now. The steps after batch_predictions judge the batch against the model that
    scored it: a champion moved by another run meanwhile would otherwise leave one run's figures
    against two versions (the retrain decision refuses such evidence, decisions.stale_evidence)."""
    version = (rec.predictions or {}).get("model_version")
    if isinstance(version, int):
        try:
            return version, store(chain.settings).read_meta(chain.name, version)
        except (OSError, ValueError):
            pass  # that version's files are gone: the champion now, as before
    version, _, meta = serving_champion(chain)
    return version, meta


def reference_path(chain: Chain, version: int) -> Path:
    return version_files.local(chain.dir, version).drift_reference


def load_reference(chain: Chain, version: int) -> drift_reference.DriftReference:
    return drift_reference.DriftReference.from_dict(json.loads(reference_path(chain, version).read_text()))


def drift_summary(result: drift.DriftResult) -> dict:
    """The verdict figures kept on a batch record (and in live_drift's summary)."""
    return {
        "verdict": result.verdict,
        "share_drifted": round(result.share_drifted, 4),
        "drifted_features": result.drifted_features,
        "rows": result.rows,
        "score_drifted": bool(result.score and result.score.drifted),
    }


def _validated(chain: Chain, partition: str) -> tuple[catalog.BatchRecord, pd.DataFrame | None]:
    rec = catalog.read_record(chain.dir, partition) or catalog.BatchRecord(partition)
    path = rec.validated_rows_path
    return rec, None if path is None else pd.read_parquet(path)


def predictions_path(chain: Chain, partition: str) -> Path:
    return chain.dir / "predictions" / f"{partition}.parquet"


def build_batch_predictions(chain: Chain) -> dg.AssetsDefinition:
    cfg = chain.cfg

    @dg.asset(
        key=chain.key("batch_predictions"),
        deps=[chain.key("validated_batch")],
        partitions_def=chain.partitions,
        backfill_policy=chain.backfill_policy,
        group_name=chain.name,
        kinds={"onnx", "parquet"},
        description="The serving champion's predictions for the batch (ONNX Runtime, in chunks).",
    )
    def batch_predictions(context: dg.AssetExecutionContext):
        def one(partition: str) -> dg.MaterializeResult:
            rec, df = _validated(chain, partition)
            version, onnx_bytes, meta = serving_champion(chain)
            if df is None or version is None:
                why = "no champion serving yet" if version is None else f"batch {rec.status}"
                catalog.update_record(chain.dir, partition, predictions={"skipped": why})
                return dg.MaterializeResult(metadata={"skipped": why})
            sess = export.session(onnx_bytes)
            t = time.perf_counter()
            fn, mcfg = transform.for_version(meta, cfg)
            out = export.onnx_predict(sess, transform.model_rows(df, fn, meta), mcfg)
            seconds = time.perf_counter() - t
            frame = pd.DataFrame({"model_version": version}, index=df.index)
            if cfg.id_column:
                frame.insert(0, cfg.id_column, df[cfg.id_column].to_numpy())
            if cfg.task == "classification":
                classes = meta["classes"]
                frame["label"] = np.asarray(classes, dtype=object)[out.argmax(axis=1)]
                for i, c in enumerate(classes):
                    frame[f"p_{c}"] = out[:, i]
            frame[SCORE] = scores_of(out, cfg.task)
            path = predictions_path(chain, partition)
            files.write_with(path, lambda tmp: frame.to_parquet(tmp, index=False), f"batch {partition}'s predictions")
            rate = len(df) / seconds if seconds > 0 else float("inf")
            hist, edges = np.histogram(frame[SCORE], bins=10)
            catalog.update_record(
                chain.dir,
                partition,
                predictions={"path": str(path), "model_version": version, "rows_per_second": round(rate)},
            )
            return dg.MaterializeResult(
                metadata={
                    "model_version": version,
                    "rows": len(df),
                    "rows_per_second": float(rate),
                    "path": dg.MetadataValue.path(str(path)),
                    "score_distribution": table(
                        pd.DataFrame({"model score from": edges[:-1].round(3), "to": edges[1:].round(3), "rows": hist})
                    ),
                }
            )

        failed = monitoring_failed(chain, "predictions")
        yield from each_partition(context, lambda p: (one(p).metadata, []), failed, skip=elsewhere(chain, context))

    return batch_predictions


def build_drift_report(chain: Chain) -> dg.AssetsDefinition:
    cfg = chain.cfg

    @dg.asset(
        key=chain.key("drift_report"),
        deps=[chain.key("validated_batch"), chain.key("batch_predictions")],
        partitions_def=chain.partitions,
        backfill_policy=chain.backfill_policy,
        group_name=chain.name,
        kinds={"pandas"},
        description="Feature and score drift against the training data of the serving champion.",
    )
    def drift_report(context: dg.AssetExecutionContext):
        def one(partition: str) -> dg.MaterializeResult:
            rec, df = _validated(chain, partition)
            version, _ = scored_by(chain, rec)
            summary = {"champion_version": version}
            if df is None:
                summary.update(verdict="skipped", reason=f"batch {rec.status}")
            elif version is None:
                summary.update(verdict="no champion", reason="no champion serving yet: nothing to compare with")
            elif not reference_path(chain, version).exists():
                summary.update(
                    verdict="no reference",
                    reason=(
                        f"drift reference of champion v{version} is missing ({reference_path(chain, version)}); "
                        "drift cannot be judged, retraining falls back to the schedule"
                    ),
                )
                context.log.error(summary["reason"])
            if "verdict" in summary:
                catalog.update_record(chain.dir, partition, drift=summary)
                return dg.MaterializeResult(metadata=skipped_metadata(summary))

            ref = load_reference(chain, version)
            pred = predictions_path(chain, partition)
            if pred.exists() and (rec.predictions or {}).get("model_version") == version:  # that model's scores
                df = df.assign(**{SCORE: pd.read_parquet(pred, columns=[SCORE])[SCORE].to_numpy()})
            result = drift.compute_drift_from_config(ref, df, cfg.drift)
            summary.update(drift_summary(result))
            catalog.update_record(chain.dir, partition, drift=summary)
            meta = drift_metadata(result, version, chain.dir / "drift" / f"{partition}.png")
            if rec.rows is not None:  # the file's rows beside the valid rows compared
                meta["file_rows"] = int(rec.rows)
            return dg.MaterializeResult(metadata=meta)

        failed = monitoring_failed(chain, "drift")
        yield from each_partition(context, lambda p: (one(p).metadata, []), failed, skip=elsewhere(chain, context))

    return drift_report


def skipped_metadata(summary: dict) -> dict:
    """A drift report that compared nothing: what it would have compared with, in words."""
    version = summary.get("champion_version")
    return {
        VERDICT: f"{summary.get('verdict')}: {summary.get('reason')}",
        **{k: str(v) for k, v in summary.items() if v is not None and k != "champion_version"},
        "champion_version": "no champion serving" if version is None else f"v{version}",
    }


def per_feature_table(result: drift.DriftResult) -> dg.MetadataValue:
    """One row per feature (the model score last), drifted ones first: the verdict, a bar of
    statistic / threshold (1.0 = the threshold) and the figures behind it."""
    rows = []
    for f in result.features + ([result.score] if result.score is not None else []):
        ratio, tag = f.threshold_ratio()
        numeric = f.statistic != "jensen_shannon"
        rows.append(
            {
                "feature": "model score" if f.kind == "score" else display_name(f.feature),
                "drift": "DRIFTED" if f.drifted else "stable",
                "vs threshold": bar(ratio),
                "by": tag,  # the statistic nearest its threshold
                "PSI or JS": rounded(f.value) if np.isfinite(f.value) else None,
                "its threshold": rounded(f.threshold),
                "W1 distance": rounded(f.distance) if numeric and f.distance is not None else None,
                "W1 threshold": rounded(f.distance_threshold) if numeric and f.distance_threshold else None,
                "unseen categories": None if numeric else int(f.unseen),
                "null rate": rounded(f.null_rate, "share"),
                "rows": f.rows,
            }
        )
    df = pd.DataFrame(rows)
    order = df["drift"].ne("DRIFTED").astype(int)  # drifted first, then config order
    return table(df.assign(_o=order).sort_values("_o", kind="stable").drop(columns="_o"), max_rows=200)


def drift_verdict(result: drift.DriftResult, version: int) -> str:
    """The drift verdict in one line, e.g. "drifted: 4 of 9 features drifted (44% >= drift.drifted_share
    30%) against champion v1's training data: tenure_months, ..."."""
    if result.verdict == "not enough data":
        return f"not enough data: {result.rows} rows, drift needs {result.min_rows} (drift.min_rows)"
    judged = [f for f in result.features if f.rows > 0]
    names = ", ".join(display_name(f) for f in result.drifted_features) or "none"
    op = ">=" if result.verdict == "drifted" else "<"
    line = (
        f"{result.verdict}: {len(result.drifted_features)} of {len(judged)} features drifted "
        f"({result.share_drifted:.0%} {op} drift.drifted_share {result.drifted_share:.0%}) against "
        f"champion v{version}'s training data: {names}"
    )
    if result.score is not None and result.score.drifted:
        line += "; the model score drifted too"
    return line


def drift_metadata(result: drift.DriftResult, version: int, chart: Path) -> dict:
    """Verdict, per-feature table (inline in the UI, with bars) and the bar chart (PNG, also
    saved at ``chart``)."""
    meta = {
        VERDICT: drift_verdict(result, version),
        "drift": result.verdict,  # the bare value (stable / drifted) beside the sentence
        "share_drifted": rounded(result.share_drifted, "share"),
        "drifted_features": ", ".join(display_name(f) for f in result.drifted_features) or "none",
        "champion_version": version_label(version),
        "rows": result.rows,
    }
    if result.features:
        png = drift_chart.drift_bar_chart_png(result)
        files.write_atomic(chart, png, "the drift chart", fsync=False)
        meta["per_feature"] = per_feature_table(result)
        meta["chart"] = plot(png, "drift per feature")
        meta["chart_path"] = dg.MetadataValue.path(str(chart))
    return meta


def batch_outputs(preds: pd.DataFrame, cfg, meta: dict) -> np.ndarray:
    """The champion's outputs as the metrics take them: probabilities [N, classes] or predictions."""
    if cfg.task == "classification":
        return preds[[f"p_{c}" for c in meta["classes"]]].to_numpy()
    return preds[SCORE].to_numpy()


def performance_verdict(perf: estimate.Performance, word: str = "measured") -> str:
    """A Performance in one line, e.g. "measured roc_auc 0.8123 [0.7901, 0.8345] vs holdout
    0.8356: no significant drop"."""
    if perf.value is None:
        return f"not {word}: {perf.reason}"
    line = f"{word} {perf.metric} {perf.value:.4f}"
    if perf.ci_low is not None and perf.ci_high is not None:
        line += f" [{perf.ci_low:.4f}, {perf.ci_high:.4f}]"
    if perf.baseline is not None:
        line += f" vs holdout {perf.baseline:.4f}"
    line += ": significant drop" if perf.significant else ": no significant drop"
    if perf.concept and perf.concept.get("significant"):
        line += f"; concept moved (p = {float(perf.concept['p_value']):.3g})"
    if perf.challenger and perf.challenger.get("pays"):
        line += "; a retrain would pay (challenger)"
    return line


def performance_metadata(perf: estimate.Performance, prefix: str = "") -> dict:
    """A Performance as UI metadata (``prefix`` tells estimated from measured)."""
    if perf.value is None:
        return {f"{prefix}skipped": perf.reason}
    lo, hi = perf.baseline_ci or [perf.baseline, perf.baseline]
    md = {
        f"{prefix}metric": perf.metric,
        f"{prefix}value": perf.value,
        f"{prefix}ci_low": perf.ci_low,
        f"{prefix}ci_high": perf.ci_high,
        f"{prefix}drop": perf.drop,
        f"{prefix}significant_drop": perf.significant,
        "holdout_baseline": perf.baseline,
        "holdout_ci_low": float(lo),
        "holdout_ci_high": float(hi),
    }
    if perf.challenger and "error" not in perf.challenger:  # would a retrain have paid on this batch
        ch = perf.challenger
        md.update(
            challenger_value=float(ch["challenger"]),
            challenger_gain=float(ch["delta"]),
            challenger_gain_ci_low=float(ch["ci_low"]),
            challenger_gain_ci_high=float(ch["ci_high"]),
            retraining_pays=bool(ch["pays"]),
        )
    if perf.concept:  # labels against the champion's calibration, per score bin (a reliability table)
        c = perf.concept
        md.update(
            concept_moved=bool(c["significant"]),
            concept_p_value=float(c["p_value"]),
            concept_bins=table(
                pd.DataFrame(c["bins"]).rename(
                    columns={
                        "score": "champion score",
                        "expected": f"expected share of class {c['cls']}",
                        "observed": f"observed share of class {c['cls']}",
                    }
                )
            ),
        )
    return figures(md)


def _challenger(
    chain: Chain, partition: str, df: pd.DataFrame, outputs: np.ndarray, meta: dict, run_partitions
) -> dict | None:
    """``core.challenger.check`` of this labelled batch: a refit on the labelled batches that
    arrived before it (before its run's first file: ``challenger.prior_records``) against the
    champion's outputs on it."""
    cfg = chain.cfg
    if cfg.task != "classification" or cfg.retrain.challenger_min_gain is None:
        return None
    recs = catalog.read_records(chain.dir)
    rec = next((r for r in recs if r.partition == partition), None)
    if rec is None or rec.status != "validated":
        return None  # a rejected batch is measured, never a reason to retrain
    prior = challenger.prior_records(recs, partition, run_partitions, cfg.training.window_batches)
    if not prior:
        return None
    columns = [*cfg.features, cfg.target]
    # The next file's window is this one's plus itself: with room for a batch of up to a quarter
    # of it, only files out of the window leave the cache.
    cached_rows = challenger.MAX_TRAIN_ROWS + challenger.MAX_TRAIN_ROWS // 4
    try:  # a failed refit loses only this check, never the batch's figures or the decisions after it
        frames, rows = [], 0
        for r in reversed(prior):  # the newest first, up to challenger.MAX_TRAIN_ROWS
            frames.insert(0, parquet_cache.read(r.validated_path, columns, max_rows=cached_rows))
            rows += len(frames[0])
            if rows >= challenger.MAX_TRAIN_ROWS:
                break
        got = challenger.check(
            pd.concat(frames, ignore_index=True).tail(challenger.MAX_TRAIN_ROWS),
            df,
            outputs,
            meta.get("classes"),
            cfg,
            train_batches=len(frames),
            seed=cfg.training.seed,
            fit_key=(chain.name, tuple(r.validated_path for r in prior), cfg.model_dump_json()),
        )
    except Exception as e:  # noqa: BLE001 - recorded on the batch and in the log
        dg.get_dagster_logger().warning(f"challenger check of {partition} failed: {type(e).__name__}: {e}")
        return {"error": f"{type(e).__name__}: {e}"[:500]}
    return got.to_dict() if got is not None else None


def _unknown_classes(labels: pd.Series, meta: dict) -> str:
    """The labels of a validated batch that are not the champion's classes, shown ('' if none)."""
    cats = pd.Series(category_array(labels.dropna()), dtype=object)
    bad = sorted(set(cats[unknown_labels(cats, meta.get("classes"))]))
    return ", ".join(repr(b) for b in bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")


def build_champion_performance(chain: Chain) -> dg.AssetsDefinition:
    cfg = chain.cfg
    metric_name = cfg.gate_metric

    @dg.asset(
        key=chain.key("champion_performance"),
        deps=[chain.key("validated_batch"), chain.key("batch_predictions")],
        partitions_def=chain.partitions,
        backfill_policy=chain.backfill_policy,
        group_name=chain.name,
        description=f"The champion's {metric_name} on the batch: measured on labels (bootstrap interval) "
        "and estimated without them (CBPE), both against its holdout; with labels also the "
        "concept check (labels vs its calibrated probabilities, `concept_*`) and the challenger "
        "check (a refit on the earlier batches scored on this one, `challenger_*`).",
    )
    def champion_performance(context: dg.AssetExecutionContext):
        def one(partition: str) -> dg.MaterializeResult:
            rec, df = _validated(chain, partition)
            version, meta = scored_by(chain, rec)
            pred = predictions_path(chain, partition)
            # the predictions file is this version's only when this run's batch_predictions wrote it
            scored = (rec.predictions or {}).get("model_version") == version
            if df is None or version is None or not scored or not pred.exists():
                why = f"batch {rec.status}" if df is None else "no champion predictions for this batch"
                catalog.update_record(
                    chain.dir, partition, performance={"skipped": why}, estimate={"method": "none", "reason": why}
                )
                return dg.MaterializeResult(metadata={VERDICT: f"skipped: {why}", "skipped": why})
            preds = pd.read_parquet(pred)
            if len(df) > BOOTSTRAP_MAX_ROWS:  # bounds bootstrap time; the CI widens a little
                keep = np.random.default_rng(0).choice(len(df), BOOTSTRAP_MAX_ROWS, replace=False)
                df, preds = df.iloc[keep], preds.iloc[keep]
            outputs = batch_outputs(preds, cfg, meta)
            alpha = cfg.retrain.performance_alpha
            # The estimate never looks at the labels, so on a labelled batch it shows how well it tracks.
            est = estimate.estimate(outputs, meta, metric_name, cfg.task, alpha=alpha, version=version)
            why = None
            if cfg.target not in df or df[cfg.target].isna().all():
                why = "batch carries no labels"
            elif rec.single_class is not None and metric_name in ("roc_auc", "f1"):
                why = f"single class {rec.single_class!r} in target {cfg.target}: {metric_name} is undefined"
            elif cfg.task == "classification" and (unknown := _unknown_classes(df[cfg.target], meta)):
                # a batch validated before the champion knew its classes: never a crash, never a
                # metric over a class the champion cannot predict
                why = (
                    f"label(s) {unknown} in target {cfg.target} are not classes of champion v{version} "
                    f"({', '.join(map(str, meta.get('classes') or []))}): {metric_name} is undefined"
                )
            elif metric_name not in (meta.get("metrics") or {}):
                why = f"champion v{version} has no holdout {metric_name} to compare with"
            md = {"champion_version": version_label(version), **performance_metadata(est, "estimated_")}
            if why:
                catalog.update_record(chain.dir, partition, performance={"skipped": why}, estimate=est.to_dict())
                line = f"champion v{version}: not measured: {why}; {performance_verdict(est, 'estimated')}"
                return dg.MaterializeResult(metadata={VERDICT: line, "skipped": why, **md})
            perf = estimate.measure(
                training.target_values(df, cfg),
                outputs,
                meta,
                metric_name,
                cfg.task,
                alpha=alpha,
                version=version,
                concept_alpha=cfg.retrain.concept_alpha,
            )
            perf.challenger = _challenger(chain, partition, df, outputs, meta, context.partition_keys)
            catalog.update_record(chain.dir, partition, performance=perf.to_dict(), estimate=est.to_dict())
            md.update(performance_metadata(perf))
            line = f"champion v{version}: {performance_verdict(perf)}"
            if est.value is not None:
                md["estimate_error"] = rounded(est.value - perf.value)
                md["estimate_interval_held_realised"] = bool(est.ci_low <= perf.value <= est.ci_high)
                line += f"; estimated without labels {est.value:.4f}"
            return dg.MaterializeResult(metadata={VERDICT: line, **md})

        failed = monitoring_failed(chain, "performance")
        yield from each_partition(context, lambda p: (one(p).metadata, []), failed, skip=elsewhere(chain, context))

    return champion_performance
