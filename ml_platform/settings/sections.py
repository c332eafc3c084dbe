"""The sections of a model's settings: source, validation, training, gate, drift, retrain, automation, deploy..."""

from __future__ import annotations

import re
from typing import Literal, Optional

from pydantic import Field, field_validator, model_validator

from ml_platform.names import BUILTIN_GATE_CHECKS
from ml_platform.settings.base import StrictModel
from ml_platform.settings.cron import cron_problem


class SourceConfig(StrictModel):
    asset: str = Field(
        description="The upstream asset's key, its parts joined by `/` (`customer_rows`, `crm/customer_rows`)."
    )

    @field_validator("asset")
    @classmethod
    def _key(cls, key: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*", key):
            raise ValueError(f"{key!r}: expected an asset key like 'customer_rows' or 'crm/customer_rows'")
        return key


class ValidationConfig(StrictModel):
    max_invalid_share: float = Field(
        0.2,
        ge=0,
        le=1,
        description="Share of a batch's rows that may be quarantined; above it, `schema_conformance` fails and "
        "the batch is rejected.",
    )
    max_null_rate: float = Field(
        0.5, ge=0, le=1, description="`null_rates` warns when a feature's share of missing values is above it."
    )
    min_rows: int = Field(10, ge=1, description="Fewer valid rows: the batch is rejected and `row_count` warns.")


class TrainingConfig(StrictModel):
    window_batches: Optional[int] = Field(
        None,
        ge=1,
        description="The training set (and so every window) holds only the newest N validated labelled batches. "
        "Not set: every one.",
    )
    drift_window: Literal["regime", "window"] = Field(
        "regime",
        description="After drift: `regime` adds the batches since the drift began as a candidate window (when "
        "they hold `min_regime_rows` training rows); `window` never adds it.",
    )
    min_regime_rows: int = Field(1000, ge=1, description="Training rows the `regime` window needs to be a candidate.")
    holdout_fraction: float = Field(
        0.2,
        gt=0,
        lt=1,
        description="Share of the newest batch held out: its newest rows by `timestamp_column`, else a stable "
        "hash of the id (or of the row). No candidate ever trains on a holdout row.",
    )
    seed: int = Field(0, description="Seed of the estimators, the parameter search and the gate's bootstrap.")
    windows: list[Literal["all", "newest", "regime"]] = Field(
        default_factory=lambda: ["all", "newest", "regime"],
        min_length=1,
        description="The candidate training windows, each at most once: `all` the training set's batches, "
        "`newest` the newest `newest_batches`, `regime` the batches since a shift began. Every retrain fits "
        "windows x estimators (+ a search), all judged on one holdout drawn from the newest batches "
        "(core/selection.py); windows holding the same batches are fitted once.",
    )
    newest_batches: int = Field(3, ge=1, description="N of the `newest` window.")
    min_holdout_rows: int = Field(
        200,
        ge=1,
        description="The holdout reaches back batch by batch (the batch before joins its pool) until it holds "
        "this many rows.",
    )
    search_budget: int = Field(
        0,
        ge=0,
        le=100,
        description="Extra parameter settings tried on the best window and estimator, drawn (seeded) from a small "
        "built-in space around it; keys set in `params` stay fixed.",
    )
    backtest_batches: int = Field(
        3,
        ge=1,
        le=24,
        description="Candidates are chosen by a rolling-origin backtest over the last K labelled batches: each "
        "candidate's window rule and estimator are refitted on the batches before each of the K - 1 older ones and "
        "scored on it, and the newest is the holdout (core/backtest.py); a regime is scored before it began as the "
        "newest as many batches, unless it began with input drift. The best mean by `gate.metric` leads (see "
        "`prefer_more_data`; the gate still judges the winner on the holdout). 1: the holdout alone. Costs up to "
        "K - 1 extra fits per candidate, shared where two candidates' windows coincide.",
    )
    prefer_more_data: bool = Field(
        True,
        description="The widest window (the most training rows) is registered unless a narrower candidate beats it "
        "in the backtest on at least 2 batches where their fits differ (1 with `backtest_batches: 1`), by a mean "
        "lead above `gate.max_regression` or a paired bootstrap interval of the difference above 0 "
        "(`gate.confidence`, `gate.resamples`, rows resampled within each batch); a regime begun by input drift "
        "needs a lead above `gate.max_regression` on the holdout. A narrow window's lead on the "
        "newest rows alone is often that month's noise, and more data serves the next batches better (issue 22). "
        "false: the backtest's best mean.",
    )

    @field_validator("windows")
    @classmethod
    def _unique_windows(cls, v: list) -> list:
        if len(set(v)) != len(v):
            raise ValueError(f"expected each window at most once (got {v})")
        return v


class SliceConfig(StrictModel):
    # One sliced feature of the per-slice gate (core/slices.py): each value of a categorical
    # feature, or the intervals between `bins` (numeric feature, left-closed), on the comparison set.
    feature: str = Field(
        description="A configured feature: each value of a categorical one is a slice, or each interval between "
        "the `bins` of a numeric one."
    )
    bins: Optional[list[float]] = Field(
        None,
        min_length=1,
        description="Numeric features only, and required for them: strictly increasing edges of left-closed "
        "intervals (`[30, 60]`: below 30, [30, 60), 60 and above).",
    )
    threshold: Optional[float] = Field(
        None,
        description="Floor of the gate metric on each slice (a ceiling for error metrics). Each slice entry needs "
        "`threshold` and/or `max_regression`.",
    )
    max_regression: Optional[float] = Field(
        None, ge=0, description="How much worse than the champion on the same slice (point values) a slice may be."
    )
    min_rows: int = Field(
        50, ge=1, description="Smaller slices (and slices where the metric is undefined) are reported, not judged."
    )

    @model_validator(mode="after")
    def _check(self):
        if self.threshold is None and self.max_regression is None:
            raise ValueError("@threshold: expected threshold and/or max_regression for the slice")
        if self.bins is not None and any(b >= a for a, b in zip(self.bins[1:], self.bins)):
            raise ValueError(f"@bins: expected strictly increasing edges (got {self.bins})")
        return self


def check_name(path: str) -> str:
    return path.rsplit(":", 1)[-1]


class GateConfig(StrictModel):
    metric: Optional[Literal["roc_auc", "accuracy", "f1", "log_loss", "rmse", "mae", "r2"]] = Field(
        None,
        description="The metric the gate, candidate selection and the retrain checks judge by (`rmse`, `mae`, "
        "`r2`: regression; the others: classification). Not set: `roc_auc` for classification, `rmse` for "
        "regression.",
    )
    threshold: Optional[float] = Field(
        None,
        description="`min_metric`: the holdout metric's floor (a ceiling for the error metrics `log_loss`, `rmse`, "
        "`mae`). Not set: 0.7 when the metric is `roc_auc`, else no absolute bar.",
    )
    max_regression: float = Field(
        0.01,
        ge=0,
        description="How much worse than the champion a candidate may be, on the rows neither trained on (in the "
        "metric's units).",
    )
    comparison: Literal["bootstrap", "bootstrap_strict", "plain"] = Field(
        "bootstrap",
        description="`not_worse_than_champion` on the paired bootstrap interval of (candidate - champion): "
        "`bootstrap` refuses when the whole interval is below -`max_regression` (shown worse); `bootstrap_strict` "
        "passes only when the whole interval is above it (non-inferiority); `plain` compares the two point values.",
    )
    min_comparison_rows: int = Field(
        100, ge=1, description='Fewer comparison rows: "not enough evidence", the champion stays (every method).'
    )
    resamples: int = Field(1000, ge=100, le=100_000, description="Paired bootstrap resamples.")
    confidence: float = Field(0.9, ge=0.5, lt=1, description="Two-sided level of the bootstrap interval.")
    slices: list[SliceConfig] = Field(
        default_factory=list,
        description="The slices `per_slice` judges (docs/gate.md); none: the check passes.",
    )
    parity_tolerance: Optional[float] = Field(
        None,
        gt=0,
        description="`onnx_parity` (core/gate.py): each holdout row must satisfy |onnx - sklearn| <= "
        "parity_tolerance + parity_rtol x |sklearn|. This absolute part is, when not set, 1e-4 on probabilities "
        "(classification) and, for regression, `parity_rtol` x the output scale (max |prediction| on the "
        "holdout), so that it follows the target's units.",
    )
    parity_rtol: float = Field(
        1e-4,
        ge=0,
        lt=1,
        description="The relative part of `onnx_parity`, for regression only: float32 rounding grows with the target.",
    )
    latency_budget_ms: float = Field(
        50.0,
        gt=0,
        description="`latency_budget`: the p99 of a single-row ONNX call must stay within it; the endpoint holds "
        "a version it loads to the same budget.",
    )
    checks: list[str] = Field(
        default_factory=list,
        description="Your own blocking checks, `module:function` each: `(candidate, champion, rows) -> "
        "GateVerdict` on the comparison rows neither model trained on (docs/gate.md). Each is an asset check named "
        "after its function, recorded on the MLflow version like the built-in five, and asked for by every path "
        "to the champion.",
    )

    @field_validator("checks")
    @classmethod
    def _check_paths(cls, checks: list[str]) -> list[str]:
        names = [check_name(c) for c in checks]
        for c, n in zip(checks, names):
            if not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", c):
                raise ValueError(f"{c!r}: expected 'package.module:function'")
            if n in BUILTIN_GATE_CHECKS or names.count(n) > 1:
                raise ValueError(f"{c!r}: a check named {n!r} exists already; rename the function")
        return checks

    @property
    def check_names(self) -> tuple[str, ...]:
        """The user checks' names (their functions' names), in order."""
        return tuple(check_name(c) for c in self.checks)


class DriftConfig(StrictModel):
    min_rows: int = Field(
        200, ge=1, description='Smaller batches get the verdict "not enough data" and never retrain by themselves.'
    )
    drifted_share: float = Field(0.3, gt=0, le=1, description="Share of drifted features that makes a batch drifted.")
    chunks: int = Field(10, ge=3, description="Reference chunks that calibrate the drift thresholds.")
    psi_bins: int = Field(10, ge=2, description="PSI bins (reference quantiles).")


class RetrainConfig(StrictModel):
    on_code_change: bool = Field(
        True,
        description="Retrain by itself (trigger `code`) when the model's code version (platform version, estimator "
        "or pipeline and its params, transform, gate and training config, your check functions' source) differs "
        "from the champion's (with no champion yet, from the newest candidate's: fixed code after refused first "
        "candidates trains one); through the same gate and approval mode.",
    )
    policy: Literal["on_drift", "on_arrival"] = Field(
        "on_drift",
        description="`on_drift`: the retrain policy of docs/retraining.md; `on_arrival`: every validated batch "
        "retrains.",
    )
    debounce_batches: int = Field(
        2,
        ge=1,
        description="Consecutive drifted batches (or batches whose estimated metric dropped) before a drift or "
        "estimated-performance retrain.",
    )
    min_new_rows: int = Field(
        500, ge=0, description="Rows since the last retrain before a drift or estimated-performance retrain."
    )
    cooldown_seconds: float = Field(0, ge=0, description="Minimum time between retrains.")
    performance_alpha: float = Field(
        0.05,
        gt=0,
        lt=1,
        description="Level of the intervals of the measured and estimated (CBPE) performance-drop tests (one "
        "batch, or 2-3 labelled batches pooled).",
    )
    min_drop: float = Field(
        0.005,
        ge=0,
        description="A significant drop retrains only when at least this large (in the gate metric's units).",
    )
    concept_alpha: float = Field(
        0.001,
        ge=0,
        lt=1,
        description="Labels that no longer follow the champion's calibrated probabilities (a classifier's concept "
        "moved, even where its metric holds) retrain at this level (trigger `concept`); `0`: recorded, never "
        "retrains.",
    )
    challenger_min_gain: Optional[float] = Field(
        0.005,
        ge=0,
        description="A model refitted on the labelled batches before a labelled batch is scored on it next to the "
        "champion (core/challenger.py): when the lower end of the paired bootstrap interval of its gain reaches "
        "this, retraining is measured to pay and it retrains (trigger `challenger`, classification); `null` turns "
        "the check off.",
    )
    challenger_confidence: float = Field(0.98, gt=0, lt=1, description="Confidence of the challenger check's interval.")
    trigger_on: Literal["performance", "drift"] = Field(
        "performance",
        description="`performance`: drift alone never retrains while the measured (labels) or CBPE-estimated "
        "performance holds; `drift`: persistent drift retrains (debounced) whatever the performance.",
    )
    unestimated_drift: Literal["retrain", "wait"] = Field(
        "retrain",
        description="Drift on a batch whose performance can be neither measured nor estimated (regression "
        "without labels, a champion without calibration): `retrain` once debounced, or `wait` for labels.",
    )
    schedule: str = Field(
        "0 3 * * 1",
        description="The weekly retrain (cron; the default is Mondays 03:00). A tick is skipped when no labelled "
        "batch was validated since the champion's training data and the newest candidate's run. Stop it in the "
        "UI to turn it off.",
    )

    @field_validator("schedule")
    @classmethod
    def _cron(cls, v: str) -> str:
        problem = cron_problem(v)
        if problem:
            raise ValueError(problem)
        return v


class AutomationConfig(StrictModel):
    landing_interval_seconds: int = Field(
        1,
        ge=1,
        description="Landing sensor interval. 1 s because the sensor daemon loops about every 5 s and a 5 s "
        "minimum interval can miss a loop.",
    )
    retrain_interval_seconds: int = Field(1, ge=1, description="Retrain sensor interval (1 s for the same reason).")
    settle_seconds: float = Field(
        2.0,
        ge=0,
        description="A landing file must be unchanged this long before it is ingested (by the sensor, and by "
        "`ml-platform run`, which waits).",
    )
    live_drift_interval_seconds: int = Field(
        300, ge=1, description="At most this often, `live_drift` runs on new live-sample files."
    )


class LandingConfig(StrictModel):
    archive: bool = Field(
        False,
        description="Move each ingested file out of the landing zone, into `<landing_dir>/_archived/`, once its raw "
        "copy in storage is durable (written, fsynced and verified by its sha256). Off: files stay where they "
        "landed and are never ingested twice (their content hash is known).",
    )
    max_files_per_run: int = Field(
        25,
        ge=1,
        le=500,
        description="A sensor tick that finds several pending files starts runs of up to this many files each (a "
        "range of the batch partitions: one partition per file in the UI, each file's verdicts its own). One "
        "new file still starts its own run at once.",
    )


class ShadowConfig(StrictModel):
    min_requests: int = Field(
        500, ge=1, description="Mirrored requests (rows scored by both) before the live comparison `live_shadow` runs."
    )
    max_hours: float = Field(
        24.0,
        gt=0,
        description="A candidate still short of `min_requests` this long after it was staged is refused (no "
        "evidence), and one still waiting for labelled live rows (it disagreed with the champion, too few labels "
        "to decide) is refused by the agreement it failed; the champion stays.",
    )
    share: float = Field(
        1.0, gt=0, le=1, description="The share of requests mirrored to the shadow (1: every request)."
    )


class CanaryConfig(StrictModel):
    share: float = Field(
        0.1,
        gt=0,
        lt=1,
        description="The share of requests the candidate answers, sticky: by `id_column` when the request sends it, "
        "else by a hash of the row (a request with several rows goes by its first).",
    )
    min_requests: int = Field(
        500, ge=1, description="Canary-answered requests (champion scored too) before the live comparison runs."
    )
    max_hours: float = Field(
        24.0, gt=0, description="Short of `min_requests` this long after staging: refused (no evidence)."
    )


class LiveCheckConfig(StrictModel):
    min_agreement: float = Field(
        0.7,
        ge=0,
        le=1,
        description="`live_shadow`: the share of live rows where candidate and champion give the same label "
        "(classification) or predictions within `max_relative_difference` (regression) must be at least this. "
        "A sanity bar against a candidate that answers differently, not a quality bar: two sound retrains of a "
        "noisy model disagree near the decision threshold (15-20 % in the churn demo); the realised metric on "
        "labelled live rows is the quality bar.",
    )
    max_relative_difference: float = Field(
        0.1, gt=0, description="Regression: |candidate - champion| <= this x |champion| counts as agreeing."
    )
    max_score_distance: float = Field(
        0.2,
        gt=0,
        le=1,
        description="`live_shadow`: the largest allowed Kolmogorov-Smirnov distance between the two score "
        "distributions on the same live rows.",
    )
    max_error_rate: float = Field(
        0.0, ge=0, lt=1, description="The share of live rows the candidate may fail to score (0: any error refuses)."
    )


class DeployConfig(StrictModel):
    strategy: Literal["direct", "shadow", "canary"] = Field(
        "direct",
        description="`direct`: a candidate that passes the gate serves at once. `shadow`: it is first loaded beside "
        "the champion and scores mirrored requests off the request path (answers always come from the champion); "
        "`canary`: it answers a sticky `canary.share` of requests. Either way the live comparison `live_shadow` "
        "then promotes it or refuses it (docs/staging.md). A model's first champion is always direct.",
    )
    shadow: ShadowConfig = Field(default_factory=ShadowConfig, description="`strategy: shadow` settings.")
    canary: CanaryConfig = Field(default_factory=CanaryConfig, description="`strategy: canary` settings.")
    live_check: LiveCheckConfig = Field(
        default_factory=LiveCheckConfig,
        description="The thresholds of the live comparison `live_shadow` (besides `gate.latency_budget_ms` and, on "
        "labelled live rows, the same paired bootstrap rule as `not_worse_than_champion`).",
    )
    approval: Literal["auto", "required"] = Field(
        "auto",
        description="`auto`: a candidate that passes every blocking gate check serves at once. `required`: it "
        'waits "awaiting approval" until a person approves it (Materialize `deployed_model` in the UI, or '
        "`ml-platform approve`) or rejects it (`ml-platform reject`); the gate still applies. With `strategy: "
        "shadow` the person is asked after the live comparison passed (its evidence shown); with `canary`, "
        "before the canary starts.",
    )
