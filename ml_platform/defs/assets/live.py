"""live_drift: drift of the traffic the endpoint actually scores, from its live sample.

Batch drift (``drift_report``) watches what lands in the landing zone; this asset watches
what clients send. Same statistics and thresholds (``core/drift.py``, ``drift:`` config),
same reference (the serving champion's training data), on the newest rows the champion
scored, with the CBPE estimate of the gate metric on those rows (``core/estimate.py``).
The live sample has no labels, so live drift cannot retrain by itself: its check
``live_traffic_stable`` warns (severity WARN) and retraining waits for labelled batches.
Materialized by ``<model>_live_drift_sensor`` when new sample files exist.
"""

import dagster as dg

from ml_platform.control.chain import Chain
from ml_platform.core import drift, estimate, files, live
from ml_platform.defs.assets.monitoring import (
    SCORE,
    drift_metadata,
    drift_summary,
    load_reference,
    performance_metadata,
    reference_path,
    serving_champion,
)

LIVE_MAX_ROWS = 20_000  # newest rows judged per run (the drift statistics saturate long before)
CHECK = "live_traffic_stable"


def live_estimate(cfg, meta: dict, frame, score_column: str, version: int) -> estimate.Performance:
    """CBPE on the live window: the traffic has no labels, so this is the only performance figure
    for it. The sample keeps one score per row: P(positive class) for a binary model."""
    metric = cfg.gate_metric
    if cfg.task == "classification" and len(meta.get("classes") or []) != 2:
        return estimate.Performance(
            "none",
            metric,
            len(frame),
            champion_version=version,
            reason="the live sample keeps one score per row: no estimate for multiclass",
        )
    if len(frame) < cfg.drift.min_rows:
        return estimate.Performance(
            "none",
            metric,
            len(frame),
            champion_version=version,
            reason=f"{len(frame)} live rows; the estimate needs {cfg.drift.min_rows}",
        )
    score = frame[score_column].to_numpy(dtype="float64")
    outputs = estimate.binary_outputs(score) if cfg.task == "classification" else score
    return estimate.estimate(outputs, meta, metric, cfg.task, alpha=cfg.retrain.performance_alpha, version=version)


def build_live_drift(chain: Chain) -> dg.AssetsDefinition:
    cfg = chain.cfg
    key = chain.key("live_drift")

    @dg.asset(
        key=key,
        deps=[chain.key("deployed_model")],
        group_name=chain.name,
        kinds={"pandas"},
        description="Drift of the endpoint's live traffic (its live sample) against the serving "
        "champion's training data.",
        check_specs=[
            dg.AssetCheckSpec(
                CHECK,
                asset=key,
                description=("Warns when the live traffic has drifted from the champion's training data."),
            )
        ],
    )
    def live_drift(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        version, _, meta = serving_champion(chain)
        summary: dict = {"champion_version": version}
        result = None
        if version is None:
            summary.update(verdict="no champion", reason="no champion serving yet")
        elif not reference_path(chain, version).exists():
            summary.update(verdict="no reference", reason=f"drift reference of v{version} is missing")
        else:
            ref = load_reference(chain, version)
            win = live.read_window(
                chain.settings.live_samples_dir / chain.name,
                version,
                list(cfg.features),
                LIVE_MAX_ROWS,
                score_column=ref.score_column or SCORE,
                missing_token=(meta or {}).get("missing_category"),
            )
            result = drift.compute_drift_from_config(ref, win.frame, cfg.drift)
            summary.update(
                drift_summary(result),
                window_from=win.first_ts,
                window_to=win.last_ts,
                files=len(win.files),
                other_version_rows=win.other_version_rows,
                unreadable_lines=win.unreadable_lines,
            )
            if result.verdict == "not enough data":
                summary["reason"] = (
                    f"{result.rows} live rows scored by v{version}; drift needs {cfg.drift.min_rows} (drift.min_rows)"
                )
            if win.unreadable_lines:
                context.log.warning(f"{win.unreadable_lines} unreadable line(s) in the live sample skipped")
            summary["estimate"] = live_estimate(
                cfg, meta or {}, win.frame, ref.score_column or SCORE, version
            ).to_dict()
        path = live.summary_path(chain.dir)
        files.write_json(path, summary, "the live drift summary")
        drifted = summary["verdict"] == "drifted"
        check = dg.AssetCheckResult(
            check_name=CHECK,
            passed=not drifted,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "verdict": summary["verdict"],
                "drifted_features": ", ".join(summary.get("drifted_features") or []) or "none",
                "reason": summary.get("reason", ""),
            },
        )
        if result is not None and result.features:
            md = drift_metadata(result, version, live.summary_path(chain.dir).with_suffix(".png"))
        else:
            md = {"drift": summary["verdict"], "reason": summary.get("reason", "")}
        md.update(
            {
                k: summary[k]
                for k in ("window_from", "window_to", "files", "other_version_rows")
                if summary.get(k) is not None
            }
        )
        if "estimate" in summary:
            md.update(performance_metadata(estimate.Performance(**summary["estimate"]), "estimated_"))
        return dg.MaterializeResult(metadata=md, check_results=[check])

    return live_drift
