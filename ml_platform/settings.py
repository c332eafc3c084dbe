"""`ml_platform.yaml` -> typed settings: the one source of truth for every layer.

Only ``models`` (and in each model its columns and task) is required; every other key has a
default. Each field's ``description`` is its documentation: docs/configuration.md is generated
from them (``python -m ml_platform.config_reference --write``). Errors name the key path and
what was expected, e.g. ``ml_platform.yaml: models.churn.features.age.type: expected
'numeric' or 'categorical' (got 'int')``.
"""

from __future__ import annotations

import os
import re
import tomllib
from functools import cached_property
from pathlib import Path
from typing import Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from ml_platform.names import BUILTIN_GATE_CHECKS

CONFIG_ENV = "ML_PLATFORM_CONFIG"
DEFAULT_CONFIG_NAME = "ml_platform.yaml"
MODEL_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")


class ConfigError(ValueError):
    """A configuration problem, already phrased for the user (file + key path + expectation)."""


class _Strict(BaseModel):
    # allow_inf_nan=False: `.nan` / `.inf` in YAML is a config error for every float key
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# Validators may name a key below the one they are attached to: a message "@sub.key: text"
# is reported at "<path>.sub.key: text" (see _format_errors).


class FeatureSpec(_Strict):
    type: Literal["numeric", "categorical", "boolean"] = Field(
        description="`boolean` is a categorical feature with the values `false` and `true` (what booleans "
        "become in batches and requests, core/values.py); it is stored as such, so every layer sees a categorical."
    )
    min: Optional[float] = Field(
        None, description="Numeric features: the smallest valid value; rows below it are quarantined."
    )
    max: Optional[float] = Field(
        None, description="Numeric features: the largest valid value; rows above it are quarantined."
    )
    nullable: bool = Field(True, description="`false`: rows with a missing value are quarantined.")
    values: Optional[list[Union[str, int]]] = Field(
        None,
        description="Categorical features: the allowed categories (strings or integer codes; `3`, `3.0` and "
        '`"3"` are one category); rows with another value are quarantined. Not set: any value.',
    )

    @model_validator(mode="before")
    @classmethod
    def _boolean(cls, data):
        if isinstance(data, dict) and data.get("type") == "boolean":
            if data.get("values") is not None:
                raise ValueError("@values: a boolean feature takes no values (they are false and true)")
            data = {**data, "type": "categorical", "values": ["false", "true"]}
        return data

    @field_validator("values", mode="before")
    @classmethod
    def _bool_values(cls, v):
        # YAML true / false -> the categories "true" / "false" (pydantic would make them 1 / 0)
        if isinstance(v, list):
            return [("true" if x else "false") if isinstance(x, bool) else x for x in v]
        return v

    @model_validator(mode="after")
    def _check(self):
        if self.type == "categorical" and (self.min is not None or self.max is not None):
            raise ValueError("min/max apply to numeric features only")
        if self.type == "numeric" and self.values is not None:
            raise ValueError("values applies to categorical features only")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


# Constructor parameters of each estimator (scikit-learn get_params()), per task. Kept as data
# so that loading the config never imports sklearn (the endpoint loads it too);
# ml_platform_tests/unit/test_settings.py checks it against the installed scikit-learn.
_HGB = {
    "categorical_features",
    "early_stopping",
    "interaction_cst",
    "l2_regularization",
    "learning_rate",
    "loss",
    "max_bins",
    "max_depth",
    "max_features",
    "max_iter",
    "max_leaf_nodes",
    "min_samples_leaf",
    "monotonic_cst",
    "n_iter_no_change",
    "random_state",
    "scoring",
    "tol",
    "validation_fraction",
    "verbose",
    "warm_start",
}
_RF = {
    "bootstrap",
    "ccp_alpha",
    "criterion",
    "max_depth",
    "max_features",
    "max_leaf_nodes",
    "max_samples",
    "min_impurity_decrease",
    "min_samples_leaf",
    "min_samples_split",
    "min_weight_fraction_leaf",
    "monotonic_cst",
    "n_estimators",
    "n_jobs",
    "oob_score",
    "random_state",
    "verbose",
    "warm_start",
}
ESTIMATOR_PARAMS = {
    ("hist_gradient_boosting", "classification"): frozenset(_HGB | {"class_weight"}),
    ("hist_gradient_boosting", "regression"): frozenset(_HGB | {"quantile"}),
    ("random_forest", "classification"): frozenset(_RF | {"class_weight"}),
    ("random_forest", "regression"): frozenset(_RF),
    ("logistic_regression", "classification"): frozenset(
        {
            "C",
            "class_weight",
            "dual",
            "fit_intercept",
            "intercept_scaling",
            "l1_ratio",
            "max_iter",
            "n_jobs",
            "penalty",
            "random_state",
            "solver",
            "tol",
            "verbose",
            "warm_start",
        }
    ),
    ("ridge", "regression"): frozenset(
        {"alpha", "copy_X", "fit_intercept", "max_iter", "positive", "random_state", "solver", "tol"}
    ),
}


# ---- cron (retrain.schedule), checked without importing dagster (the endpoint loads this
# module). Accepts what Dagster's schedules accept: 5 fields, numbers, names, ranges (also
# wrapping ones), lists, steps, ? and L in day-of-month, day#n in day-of-week, and @aliases.
_CRON_ALIASES = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
_CRON_FIELDS = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, {m: i + 1 for i, m in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split())}),
    ("day of week", 0, 7, {d: i for i, d in enumerate("sun mon tue wed thu fri sat".split())}),
)
_CRON_ITEM = re.compile(r"(?:(\*)|([a-z0-9]+)(?:-([a-z0-9]+))?)(?:/(\d+))?")
_CRON_NTH = re.compile(r"(?:[0-7]|sun|mon|tue|wed|thu|fri|sat)#[1-5]")


def cron_problem(expr: str) -> Optional[str]:
    """What is wrong with a cron string, or None when Dagster can schedule it."""
    text = " ".join(str(expr).split()).lower()
    if text in _CRON_ALIASES:
        return None
    parts = text.split(" ") if text else []
    if len(parts) != 5:
        return (
            "expected a cron string of 5 fields (minute hour day-of-month month day-of-week, "
            f"e.g. '0 3 * * 1') or an alias such as @daily, got {len(parts)} field(s)"
        )
    days = None
    for k, (part, (name, lo, hi, names)) in enumerate(zip(parts, _CRON_FIELDS)):
        vals: set[int] = set()
        for item in part.split(","):
            if (item == "?" and k in (2, 4)) or (item == "l" and k == 2) or (k == 4 and _CRON_NTH.fullmatch(item)):
                continue
            m = _CRON_ITEM.fullmatch(item)
            if not m:
                return f"{name} field {item!r} is not a number, a range, a list or a step"
            star, a, b, step = m.groups()
            if step is not None and int(step) < 1:
                return f"{name} field {item!r}: the step must be at least 1"
            try:
                first = lo if star else _cron_value(a, names)
                last = hi if star else (_cron_value(b, names) if b is not None else (hi if step else first))
            except ValueError:
                return f"{name} field {item!r} is not a number or a name"
            if not (lo <= first <= hi and lo <= last <= hi):
                return f"{name} field {item!r} is outside {lo}-{hi}"
            if first <= last:
                vals.update(range(first, last + 1, int(step or 1)))
            else:  # wraps around, as croniter reads it
                vals.update(range(first, hi + 1), range(lo, last + 1))
        if k == 2:
            days = vals
        if k == 3 and vals == {2} and days is not None and len(days) == 1 and days <= {30, 31}:
            return f"day {next(iter(days))} of February never comes"
    return None


def _cron_value(token: str, names: dict) -> int:
    if token in names:
        return names[token]
    if not token.isdigit():
        raise ValueError(token)
    return int(token)


class SourceConfig(_Strict):
    asset: str = Field(
        description="The upstream asset's key, its parts joined by `/` (`customer_rows`, `crm/customer_rows`)."
    )

    @field_validator("asset")
    @classmethod
    def _key(cls, key: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*", key):
            raise ValueError(f"{key!r}: expected an asset key like 'customer_rows' or 'crm/customer_rows'")
        return key


class EstimatorConfig(_Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, populate_by_name=True)

    name: Optional[Literal["hist_gradient_boosting", "random_forest", "logistic_regression", "ridge"]] = Field(
        None,
        description="A built-in estimator, in a pipeline with numeric median imputation (plus scaling for linear "
        "models) and a categorical one-hot that ignores unseen values. HistGradientBoosting (the default when "
        "neither `name` nor `class` is given) is the strong default for tabular data; the others are there for "
        "speed or a linear baseline (`logistic_regression`: classification only; `ridge`: regression only).",
    )
    class_path: Optional[str] = Field(
        None,
        alias="class",
        description="Instead of `name`: any scikit-learn-compatible estimator class by import path (e.g. "
        "`sklearn.ensemble.ExtraTreesClassifier`, `lightgbm.LGBMClassifier` with the `boosting` extra), in the same "
        "pipeline. It must have an ONNX converter; its import, parameters and converter are checked when the "
        "definitions load.",
    )
    params: dict = Field(
        default_factory=dict,
        description="Passed to the estimator's constructor; a name it does not take is a config error. Where "
        "nothing is set, the platform uses for HistGradientBoosting 100 iterations, 15 leaves, L2 1.0 and no early "
        "stopping, for random forests 100 trees and one job (both: `training.seed` as `random_state`), for "
        "logistic regression 1000 iterations.",
    )

    @model_validator(mode="after")
    def _one_kind(self):
        if self.name is not None and self.class_path is not None:
            raise ValueError("@class: give either name or class, not both")
        if self.name is None and self.class_path is None:
            object.__setattr__(self, "name", "hist_gradient_boosting")
        return self

    @property
    def label(self) -> str:
        """How people read it: the shortcut's name, or the class's own name."""
        return self.name if self.class_path is None else self.class_path.replace(":", ".").rsplit(".", 1)[-1]


class ValidationConfig(_Strict):
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


class TrainingConfig(_Strict):
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
        "scored on it, and the newest is the holdout (core/backtest.py). The best mean by `gate.metric` wins (the "
        "gate still judges it on the holdout). 1: the holdout alone. Costs up to K - 1 extra fits per candidate, "
        "shared where two candidates' windows coincide.",
    )
    prefer_more_data: bool = Field(
        True,
        description="A candidate trained on more rows wins over the backtest's best when its mean is within "
        "`gate.max_regression` of it on the batches both were scored on and the paired bootstrap (`gate.confidence`, "
        "`gate.resamples`, rows resampled within each batch) does not show it worse: a narrow window's small lead is "
        "often noise, and more data generalises to the next batches better.",
    )

    @field_validator("windows")
    @classmethod
    def _unique_windows(cls, v: list) -> list:
        if len(set(v)) != len(v):
            raise ValueError(f"expected each window at most once (got {v})")
        return v


class SliceConfig(_Strict):
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


def _check_name(path: str) -> str:
    return path.rsplit(":", 1)[-1]


class GateConfig(_Strict):
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
        names = [_check_name(c) for c in checks]
        for c, n in zip(checks, names):
            if not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", c):
                raise ValueError(f"{c!r}: expected 'package.module:function'")
            if n in BUILTIN_GATE_CHECKS or names.count(n) > 1:
                raise ValueError(f"{c!r}: a check named {n!r} exists already; rename the function")
        return checks

    @property
    def check_names(self) -> tuple[str, ...]:
        """The user checks' names (their functions' names), in order."""
        return tuple(_check_name(c) for c in self.checks)


class DriftConfig(_Strict):
    min_rows: int = Field(
        200, ge=1, description='Smaller batches get the verdict "not enough data" and never retrain by themselves.'
    )
    drifted_share: float = Field(0.3, gt=0, le=1, description="Share of drifted features that makes a batch drifted.")
    chunks: int = Field(10, ge=3, description="Reference chunks that calibrate the drift thresholds.")
    psi_bins: int = Field(10, ge=2, description="PSI bins (reference quantiles).")


class RetrainConfig(_Strict):
    on_code_change: bool = Field(
        True,
        description="Retrain by itself (trigger `code`) when the model's code version (platform version, estimator "
        "or pipeline and its params, transform, gate and training config, your check functions' source) differs "
        "from the champion's; through the same gate and approval mode.",
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


class AutomationConfig(_Strict):
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


class LandingConfig(_Strict):
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


class ShadowConfig(_Strict):
    min_requests: int = Field(
        500, ge=1, description="Mirrored requests (rows scored by both) before the live comparison `live_shadow` runs."
    )
    max_hours: float = Field(
        24.0,
        gt=0,
        description="A candidate still short of `min_requests` this long after it was staged is refused (no "
        "evidence); the champion stays.",
    )
    share: float = Field(
        1.0, gt=0, le=1, description="The share of requests mirrored to the shadow (1: every request)."
    )


class CanaryConfig(_Strict):
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


class LiveCheckConfig(_Strict):
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


class DeployConfig(_Strict):
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
        "`ml-platform approve`) or rejects it (`ml-platform reject`); the gate still applies.",
    )


class ModelConfig(_Strict):
    landing_dir: Optional[str] = Field(
        None,
        description="Where this model's CSV or Parquet batch files appear (relative to the config file). A landing "
        "dir shared by two models is a warning: each ingests every file there. Required unless `source` is given.",
    )
    source: Optional[SourceConfig] = Field(
        None,
        description="Instead of `landing_dir`: `{asset: <key>}`, an upstream asset of your Dagster project (`a/b` "
        "for a multi-part key) whose value is a pandas DataFrame. Each partition of a partitioned asset, or each "
        "new materialization of an unpartitioned one, is a batch; the UI shows your asset upstream of `raw_batch`.",
    )
    target: str = Field(
        description="The label column. A file without it is unlabelled: monitored and scored, never trained on."
    )
    task: Literal["classification", "regression"] = Field(
        description="What the model predicts; it decides the estimators and metrics allowed."
    )
    target_values: Optional[list[Union[str, int]]] = Field(
        None,
        description="Classification: the target's classes (strings or integer codes, at least two; `1`, `1.0` "
        'and `"1"` are one class). A row whose label is another value is quarantined (the reason names it and '
        "`target`); a batch whose labels are mostly other values is rejected naming them. Not set: the classes "
        "of the champion serving when the batch is validated (before the first champion, any label).",
    )

    @field_validator("target_values", mode="before")
    @classmethod
    def _bool_classes(cls, v):
        # YAML true / false -> the classes "true" / "false" (the category rule of core/values.py)
        if isinstance(v, list):
            return [("true" if x else "false") if isinstance(x, bool) else x for x in v]
        return v

    features: dict[str, FeatureSpec] = Field(
        description="The model's input columns (at least one), by column name. Other columns of a file are kept "
        "in its raw copy and ignored."
    )
    id_column: Optional[str] = Field(
        None,
        description="A row id: the holdout hashes it (without a timestamp), ids seen in earlier batches are "
        "counted (`duplicate_ids`), and the endpoint accepts and ignores it.",
    )
    timestamp_column: Optional[str] = Field(
        None, description="When given, the holdout is the newest rows by this column (time-ordered)."
    )
    estimator: EstimatorConfig = Field(
        default_factory=EstimatorConfig, description="The estimator every candidate window is fitted with."
    )
    transform: Optional[str] = Field(
        None,
        description="Your feature engineering, `module:function`: `(pandas.DataFrame) -> pandas.DataFrame` from the "
        "validated `features` columns (what callers send) to what the estimator sees (its output minus target, id "
        "and timestamp). The same function runs in training, the gate, batch scoring and the endpoint; each "
        "version keeps the module's source it was trained with (docs/extending.md).",
    )
    pipeline: Optional[str] = Field(
        None,
        description="Instead of `estimator`: `module:function` returning your whole unfitted scikit-learn "
        "Pipeline; it is fitted on the model's input columns (after `transform`) and must export to ONNX.",
    )
    estimators: Optional[list[EstimatorConfig]] = Field(
        None,
        min_length=1,
        description="Several estimators (each entry as `estimator`): each is a candidate on each training window. "
        "Instead of `estimator`: giving both is an error. The first is the challenger check's refit.",
    )
    validation: ValidationConfig = Field(
        default_factory=ValidationConfig, description="What a batch must meet to be validated (docs/bad-input.md)."
    )
    training: TrainingConfig = Field(
        default_factory=TrainingConfig,
        description="The training set, its holdout and the candidates of a retrain (docs/retraining.md).",
    )
    gate: GateConfig = Field(
        default_factory=GateConfig, description="The blocking checks a candidate must pass (docs/gate.md)."
    )
    drift: DriftConfig = Field(
        default_factory=DriftConfig, description="Drift of a batch (and of live traffic) against the champion's data."
    )
    retrain: RetrainConfig = Field(
        default_factory=RetrainConfig, description="When a batch retrains (docs/retraining.md)."
    )
    automation: AutomationConfig = Field(
        default_factory=AutomationConfig, description="The sensors' pace under `ml-platform up`."
    )
    deploy: DeployConfig = Field(
        default_factory=DeployConfig, description="Whether a candidate that passed the gate serves by itself."
    )
    landing: LandingConfig = Field(
        default_factory=LandingConfig,
        description="What happens to landed files: archiving after ingestion, and how many one run ingests.",
    )

    @field_validator("transform", "pipeline")
    @classmethod
    def _function_path(cls, path: Optional[str]) -> Optional[str]:
        if path is not None and not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", path):
            raise ValueError(f"{path!r}: expected 'package.module:function'")
        return path

    @model_validator(mode="after")
    def _check(self):
        if not self.features:
            raise ValueError("at least one feature is required")
        if (self.landing_dir is None) == (self.source is None):
            raise ValueError("@landing_dir: give either landing_dir (files) or source: {asset: ...}, one of them")
        special = {"target": self.target, "id_column": self.id_column, "timestamp_column": self.timestamp_column}
        for key, col in special.items():
            if col is not None and col in self.features:
                raise ValueError(f"{key} {col!r} must not also be listed under features")
        keys = list(special)
        for i, key in enumerate(keys):
            for other in keys[i + 1 :]:
                if special[key] is not None and special[key] == special[other]:
                    raise ValueError(f"@{other}: expected a column other than {key} (both are {special[key]!r})")
        if self.target_values is not None:
            if self.task != "classification":
                raise ValueError("@target_values: applies to task: classification only")
            if len({str(v).strip().lower() for v in self.target_values}) < 2:
                raise ValueError("@target_values: give at least two distinct classes")
        if self.estimators is not None and "estimator" in self.model_fields_set:
            raise ValueError("@estimators: give either estimator or estimators, not both")
        if self.task == "classification" and self.gate.metric in {"rmse", "mae", "r2"}:
            raise ValueError(f"gate.metric {self.gate.metric!r} is a regression metric")
        if self.task == "regression" and self.gate.metric in {"roc_auc", "accuracy", "f1", "log_loss"}:
            raise ValueError(f"gate.metric {self.gate.metric!r} is a classification metric")
        for i, sl in enumerate(self.gate.slices):
            spec = self.features.get(sl.feature)
            if spec is None:
                raise ValueError(f"@gate.slices.{i}.feature: {sl.feature!r} is not a configured feature")
            if spec.type == "numeric" and sl.bins is None:
                raise ValueError(f"@gate.slices.{i}.bins: numeric feature {sl.feature!r} needs bin edges")
            if spec.type == "categorical" and sl.bins is not None:
                raise ValueError(
                    f"@gate.slices.{i}.bins: categorical feature {sl.feature!r} is sliced by value; remove bins"
                )
        seen = set()
        if self.pipeline is not None and ("estimator" in self.model_fields_set or self.estimators is not None):
            raise ValueError("@pipeline: give either pipeline or estimator(s), not both")
        for i, est in enumerate(self.estimator_list):
            key = "estimator" if self.estimators is None else f"estimators.{i}"
            if est.class_path is not None:
                continue  # checked where the definitions load (core/estimators.problems): it imports the class
            if self.task == "regression" and est.name == "logistic_regression":
                raise ValueError(f"@{key}.name: estimator logistic_regression needs task: classification")
            if self.task == "classification" and est.name == "ridge":
                raise ValueError(f"@{key}.name: estimator ridge needs task: regression")
            allowed = ESTIMATOR_PARAMS.get((est.name, self.task))
            unknown = sorted(set(est.params) - allowed) if allowed is not None else []
            if unknown:
                raise ValueError(
                    f"@{key}.params: unknown parameter(s) {', '.join(map(repr, unknown))} for "
                    f"{est.name} ({self.task}); expected some of {', '.join(sorted(allowed))}"
                )
            ident = (est.label, repr(sorted(est.params.items())))
            if ident in seen:
                raise ValueError(f"@{key}: the same estimator and params are listed twice")
            seen.add(ident)
        return self

    @property
    def estimator_list(self) -> list[EstimatorConfig]:
        """The configured estimators: ``estimators``, else the single ``estimator``."""
        return list(self.estimators) if self.estimators is not None else [self.estimator]

    @property
    def gate_metric(self) -> str:
        return self.gate.metric or ("roc_auc" if self.task == "classification" else "rmse")

    @property
    def gate_threshold(self) -> Optional[float]:
        """Absolute floor (or ceiling for error metrics); None means no absolute bar."""
        if self.gate.threshold is not None:
            return self.gate.threshold
        return 0.7 if self.gate_metric == "roc_auc" else None

    @property
    def numeric_features(self) -> list[str]:
        return [c for c, f in self.features.items() if f.type == "numeric"]

    @property
    def categorical_features(self) -> list[str]:
        return [c for c, f in self.features.items() if f.type == "categorical"]


class ServingConfig(_Strict):
    host: str = Field(
        "127.0.0.1", description="Endpoint address. Off loopback (`0.0.0.0`), `/admin/reload` needs the admin token."
    )
    port: int = Field(8080, ge=0, le=65535, description="Endpoint port.")
    workers: int = Field(1, ge=1, description="Uvicorn worker processes; all poll the same champion pointer.")
    admin_token: Optional[str] = Field(
        None,
        description="Bearer token for `/admin/*`, required when the endpoint is not on loopback. Not set there: "
        "`ml-platform serve` uses (and creates once, mode 0600) `storage_dir/secrets/admin_token` and prints only "
        "its path.",
    )
    max_body_bytes: int = Field(1_048_576, ge=1024, description="Request size limit (413 above).")
    poll_seconds: float = Field(1.0, gt=0, description="How often workers look for a new champion.")
    sample_rows_per_second: float = Field(
        100.0,
        ge=0,
        description="Live sample (`storage_dir/live_samples/<model>/*.jsonl`, read by the `live_drift` asset): at "
        "most this many scored rows per second per worker; `0` turns it off.",
    )
    sample_max_mb: float = Field(
        256.0, gt=0, description="Live sample disk cap per model; the oldest sample files are deleted first."
    )
    header_timeout_seconds: float = Field(
        10.0, gt=0, description="A request's line and headers must arrive within this, else 408 and close."
    )
    body_timeout_seconds: float = Field(
        30.0, gt=0, description="A request's body must arrive within this after its headers, else 408 and close."
    )
    keep_alive_seconds: float = Field(5.0, gt=0, description="Idle keep-alive connections are closed after this.")
    max_connections: int = Field(1000, ge=1, description="Open connections per worker; beyond it, a 503 and close.")


class UIConfig(_Strict):
    host: str = Field("127.0.0.1", description="Dagster UI address for `ml-platform up`.")
    port: int = Field(3000, ge=0, le=65535, description="Dagster UI port for `ml-platform up`.")


class PostgresConfig(_Strict):
    """One PostgreSQL server for Dagster's run / event-log / schedule storage and MLflow's
    backend store (two databases). The password is never a config value: it is read from an
    environment variable or a file (ml_platform/runtime/scale_out.py), never written anywhere."""

    host: str = Field("127.0.0.1", description="The PostgreSQL server.")
    port: int = Field(5432, ge=1, le=65535, description="Its port.")
    user: str = Field("ml_platform", description="The role the platform logs in as; it owns both databases.")
    password_env: Optional[str] = Field(
        None,
        description="Name of the environment variable holding the password (it must be set); never the password "
        "itself.",
    )
    password_file: Optional[str] = Field(
        None,
        description="Or a readable file holding it (relative to this config file). Neither: libpq's own "
        "`PGPASSWORD` / `.pgpass`.",
    )
    dagster_db: str = Field("dagster", description="Dagster's database (runs, event log, schedules); created by you.")
    mlflow_db: str = Field("mlflow", description="MLflow's backend-store database; created by you.")

    @model_validator(mode="after")
    def _one_password_source(self):
        if self.password_env is not None and self.password_file is not None:
            raise ValueError("@password_file: give either password_env or password_file, not both")
        if self.password_env is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.password_env):
            raise ValueError("@password_env: expected the name of an environment variable")
        return self


class CeleryConfig(_Strict):
    """Runs execute on Celery workers (`ml-platform worker`), queued through this broker."""

    broker_url: str = Field(
        description="`redis://host:port/db`, `rediss://...` or `amqp://user@host//`. No password in it: the URL is "
        "written to the instance's files; a broker that needs one is reached through `CELERY_BROKER_URL` "
        "(docs/scale-out.md)."
    )
    backend_url: Optional[str] = Field(
        None,
        description="Celery result backend, same rules (`CELERY_RESULT_BACKEND` for a password). Not set: the broker.",
    )

    @field_validator("broker_url", "backend_url")
    @classmethod
    def _url(cls, v):
        if v is None:
            return v
        if not re.match(r"(redis|rediss|amqp|pyamqp)://", v):
            raise ValueError("expected a redis://, rediss:// or amqp:// URL")
        if re.match(r"[a-z]+://[^/@]*:[^/@]*@", v):
            # the URL is written into dagster.yaml and shown in the UI: no secret in it
            raise ValueError("expected a URL without a password (it would be written to the instance's files)")
        return v


class ScaleOutConfig(_Strict):
    postgres: Optional[PostgresConfig] = Field(
        None,
        description="Dagster's storage and MLflow's backend store on one PostgreSQL server (two databases). Not "
        "set: SQLite under `storage_dir`.",
    )
    celery: Optional[CeleryConfig] = Field(
        None,
        description="Runs execute on Celery workers (`ml-platform worker`); needs `scale_out.postgres`. Not set: "
        "runs execute in processes of the machine that runs `up`.",
    )

    @model_validator(mode="after")
    def _celery_needs_postgres(self):
        if self.celery is not None and self.postgres is None:
            raise ValueError("@celery: Celery workers need the shared PostgreSQL storage (scale_out.postgres)")
        return self


class Settings(_Strict):
    storage_dir: str = Field(
        ".ml_platform", description="All platform state (docs/state-and-failure.md); relative to the config file."
    )
    serving: ServingConfig = Field(
        default_factory=ServingConfig, description="The endpoint (`ml-platform serve`, started by `up`)."
    )
    ui: UIConfig = Field(default_factory=UIConfig, description="The Dagster UI that `ml-platform up` starts.")
    scale_out: ScaleOutConfig = Field(
        default_factory=ScaleOutConfig,
        description="PostgreSQL storage and Celery workers (docs/scale-out.md). Not set: SQLite and runs on one "
        "machine.",
    )
    models: dict[str, ModelConfig] = Field(
        description="One asset chain and one endpoint route per model, at least one. A name is 1-64 ASCII "
        "letters, digits and `_`, starting with a letter (it becomes a Dagster asset key prefix and a URL path)."
    )

    _base_dir: Path = PrivateAttr(default=Path("."))
    _source: Path = PrivateAttr(default=Path(DEFAULT_CONFIG_NAME))
    _project: Optional[Path] = PrivateAttr(default=None)  # the dg project the models come from, if any
    _component_files: dict = PrivateAttr(default_factory=dict)  # model name -> its defs.yaml

    _warnings: list = PrivateAttr(default_factory=list)

    @field_validator("models")
    @classmethod
    def _names(cls, models: dict):
        if not models:
            raise ValueError("at least one model is required")
        for name in models:
            if not MODEL_NAME.fullmatch(name):
                shown = repr(name) if len(name) <= 40 else repr(name[:37] + "...")
                raise ValueError(
                    f"model name {shown} ({len(name)} characters): expected 1-64 ASCII letters, "
                    "digits and '_', starting with a letter (it becomes a Dagster asset key "
                    "prefix and a URL path)"
                )
        return models

    @property
    def warnings(self) -> tuple[str, ...]:
        """Problems that do not stop the platform but deserve a line at start (the CLI prints
        them), e.g. two models sharing a landing dir, or a landing dir not created yet."""
        return tuple(self._warnings)

    # ---- resolved paths: every piece of platform state lives under storage_dir ----
    @property
    def source(self) -> Path:
        return self._source

    def with_model(self, name: str, cfg: ModelConfig) -> Settings:
        """These settings plus one model (a ModelComponent the project's files do not declare)."""
        out = self.model_copy(update={"models": {**self.models, name: cfg}})
        out._base_dir, out._source, out._project = self._base_dir, self._source, self._project
        out._component_files, out._warnings = dict(self._component_files), list(self._warnings)
        return out

    def origin(self, model: str) -> str:
        """Where a model's keys are written, to start an error message: ``<file>: models.<name>``
        or ``<defs.yaml>: attributes``."""
        f = self._component_files.get(model)
        return f"{f}: attributes" if f is not None else f"{self._source}: models.{model}"

    @property
    def project(self) -> Optional[Path]:
        """The `dg` project directory whose ModelComponents these models are, or None."""
        return self._project

    @cached_property
    def storage(self) -> Path:
        return (self._base_dir / self.storage_dir).resolve()

    @property
    def dagster_home(self) -> Path:
        return self.storage / "dagster_home"

    @property
    def tracking_uri(self) -> str:
        pg = self.scale_out.postgres
        if pg is not None:  # no password in the URI: libpq reads PGPASSWORD (scale_out.export_password)
            return f"postgresql+psycopg2://{pg.user}@{pg.host}:{pg.port}/{pg.mlflow_db}"
        return f"sqlite:///{self.storage / 'mlflow' / 'mlflow.db'}"

    @property
    def artifact_root(self) -> Path:
        return self.storage / "mlflow" / "artifacts"

    @property
    def serving_dir(self) -> Path:
        return self.storage / "serving"

    @property
    def live_samples_dir(self) -> Path:
        """The endpoint's live sample: ``<model>/live-*.jsonl`` (``serving/sample.py``)."""
        return self.storage / "live_samples"

    @property
    def endpoint_url(self) -> str:
        host = "127.0.0.1" if self.serving.host in ("0.0.0.0", "") else self.serving.host
        return f"http://{host}:{self.serving.port}"

    def model_dir(self, name: str) -> Path:
        return self.storage / "models" / name

    def landing_dir(self, name: str) -> Path | None:
        """The model's landing zone, or None when its batches come from an asset (``source``)."""
        d = self.models[name].landing_dir
        return None if d is None else (self._base_dir / d).resolve()


def _format_errors(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"] if not str(p).startswith(("function-after", "function-before")))
        msg = e["msg"].removeprefix("Value error, ")
        if msg.startswith("@") and ": " in msg:  # a validator naming a key below its own
            sub, msg = msg[1:].split(": ", 1)
            path = f"{path}.{sub}" if path else sub
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif e["type"] == "missing":
            msg = "required key is missing"
        elif e["type"] == "literal_error":
            msg = msg.replace("Input should be", "expected")
        elif e["type"] == "finite_number":
            msg = "expected a finite number"
        secret = path.endswith("_url")  # a URL may carry credentials: never echo it
        if (
            e["type"] not in ("missing", "extra_forbidden")
            and "input" in e
            and not secret
            and not isinstance(e["input"], (dict, list))
        ):
            shown = repr(e["input"])
            msg += f" (got {shown if len(shown) <= 60 else shown[:57] + '...'})"
        lines.append(f"{path or '<top level>'}: {msg}")
    # one problem: one line; several: one per line
    return lines[0] if len(lines) == 1 else "\n  " + "\n  ".join(lines)


def config_path(path: str | os.PathLike | None = None) -> Path:
    """Where the config is: explicit path, then $ML_PLATFORM_CONFIG, then ./ml_platform.yaml."""
    if path is not None:
        return Path(path).resolve()
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV]).resolve()
    return (Path.cwd() / DEFAULT_CONFIG_NAME).resolve()


def load_settings(path: str | os.PathLike | None = None) -> Settings:
    """The settings of a config file, or of a `dg` project (a directory, or a config file in one).

    In a `dg` project (``[tool.dg]`` in its pyproject.toml) the models are its ``defs.yaml``
    files of ``type: ml_platform.ModelComponent``, and ``ml_platform.yaml`` at its root is
    optional: platform-wide settings only (storage_dir, serving, ui, scale_out)."""
    src = config_path(path)
    if src.is_dir():
        src = src / DEFAULT_CONFIG_NAME
    project = src.parent if is_dg_project(src.parent) else None
    try:
        raw = yaml.safe_load(src.read_text())
    except FileNotFoundError:
        if project is None:
            raise ConfigError(
                f"{src}: config file not found (set {CONFIG_ENV}, pass --project DIR, or run from the directory "
                f"holding {DEFAULT_CONFIG_NAME} or a dg project)"
            ) from None
        raw = {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{src}: not valid YAML: {e}") from None
    if raw is None and project is not None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{src}: expected a mapping at the top level")
    components = component_models(project) if project is not None else {}
    if project is not None:
        raw = {**raw, "models": _with_components(src, raw.get("models"), components)}
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(f"{src}: invalid configuration: {_format_errors(e)}") from None
    settings._base_dir = src.parent
    settings._source = src
    settings._project = project
    settings._component_files = {name: f for name, (_, f) in components.items()}
    problems, warnings = _check_paths(settings)
    if problems:
        body = problems[0] if len(problems) == 1 else "\n  " + "\n  ".join(problems)
        raise ConfigError(f"{src}: invalid configuration: {body}")
    settings._warnings = warnings
    return settings


# ---------------------------------------------------------------- dg projects (ModelComponent)
COMPONENT_TYPE = "ml_platform.ModelComponent"
_SKIPPED_DIRS = {"node_modules", "__pycache__", "site-packages", "build", "dist", "data"}


class ComponentAttributes(ModelConfig):
    """A ModelComponent's ``attributes``: the keys of ``models.<name>`` plus the model's name."""

    name: str = Field(description="The model's name: its Dagster asset key prefix and endpoint route.")

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not MODEL_NAME.fullmatch(name):
            raise ValueError("expected 1-64 ASCII letters, digits and '_', starting with a letter")
        return name

    def model_config_only(self) -> ModelConfig:
        """The model's config without its name (what ``models.<name>`` holds)."""
        return ModelConfig.model_validate(self.model_dump(exclude={"name"}, exclude_unset=True))


def is_dg_project(directory: Path) -> bool:
    """A `dg` project: its pyproject.toml has a ``[tool.dg]`` table."""
    try:
        return "[tool.dg" in (directory / "pyproject.toml").read_text()
    except OSError:
        return False


def defs_folder(project: Path) -> Path:
    """The project's defs folder, as `dg` finds it: ``[tool.dg.project] defs_module`` (default
    ``<root_module>.defs``), under ``src/`` when the project has one."""
    try:
        dg = tomllib.loads((project / "pyproject.toml").read_text()).get("tool", {}).get("dg", {}).get("project", {})
    except (OSError, ValueError):
        dg = {}
    module = dg.get("defs_module") or f"{dg.get('root_module', '')}.defs"
    rel = Path(*module.split("."))
    return project / "src" / rel if (project / "src" / rel).is_dir() else project / rel


def component_files(project: Path) -> list[Path]:
    """The ``defs.yaml`` files of the project's defs folder (hidden and data folders skipped)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(defs_folder(project)):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in _SKIPPED_DIRS)
        if "defs.yaml" in filenames:
            out.append(Path(dirpath, "defs.yaml"))
    return out


def component_models(project: Path) -> dict[str, tuple[ModelConfig, Path]]:
    """name -> (config, defs.yaml) of every ModelComponent in a `dg` project. A bad attribute is a
    ConfigError naming the file and the key path, like a bad key in ml_platform.yaml."""
    out: dict[str, tuple[ModelConfig, Path]] = {}
    for f in component_files(project):
        try:
            docs = [d for d in yaml.safe_load_all(f.read_text()) if isinstance(d, dict)]
        except yaml.YAMLError as e:
            raise ConfigError(f"{f}: not valid YAML: {e}") from None
        for doc in docs:
            if doc.get("type") != COMPONENT_TYPE:
                continue
            try:
                attrs = ComponentAttributes.model_validate(doc.get("attributes") or {})
            except ValidationError as e:
                raise ConfigError(f"{f}: invalid attributes: {_format_errors(e)}") from None
            if attrs.name in out:
                raise ConfigError(f"{f}: model {attrs.name!r} is also defined in {out[attrs.name][1]}")
            out[attrs.name] = (attrs.model_config_only(), f)
    return out


def _with_components(src: Path, models: object, components: dict[str, tuple[ModelConfig, Path]]) -> object:
    if models is not None and not isinstance(models, dict):
        return models  # Settings reports the type error
    models = dict(models or {})
    for name, (cfg, f) in components.items():
        if name in models:
            raise ConfigError(f"{f}: model {name!r} is also configured under models: in {src}")
        models[name] = cfg
    if not models:
        raise ConfigError(
            f"{src.parent}: a dg project with no model: add a defs.yaml with `type: {COMPONENT_TYPE}` "
            f"(`dg scaffold defs {COMPONENT_TYPE} <name>`) or models: to {src.name}"
        )
    return models


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _dir_problem(path: Path, *, write: bool) -> Optional[str]:
    """Why ``path`` cannot be used as a directory (read, or also written), or None. A path
    that does not exist yet is fine when its nearest existing parent is a directory in which
    it can be created."""
    mode = os.R_OK | os.X_OK | (os.W_OK if write else 0)
    need = "a writable directory" if write else "a readable directory"
    if path.exists():
        if not path.is_dir():
            return f"expected {need}, but {path} is a file"
        if not os.access(path, mode):
            return f"expected {need}, but {path} is not {'writable' if write else 'readable'} (permission denied)"
        return None
    base = _nearest_existing(path)
    if not base.is_dir():
        return f"expected {need}, but {path} cannot be created: {base} is a file"
    if not os.access(base, os.W_OK | os.X_OK):
        return f"expected {need}, but {path} cannot be created: {base} is not writable (permission denied)"
    return None


def _check_paths(settings: Settings) -> tuple[list[str], list[str]]:
    """Filesystem checks at load: (errors, warnings), each '<key path>: <problem>'."""
    problems, warnings = [], []
    p = _dir_problem(settings.storage, write=True)
    if p:
        problems.append(f"storage_dir: {p}")
    pg = settings.scale_out.postgres
    if pg is not None and pg.password_env is not None and pg.password_env not in os.environ:
        problems.append(f"scale_out.postgres.password_env: environment variable {pg.password_env} is not set")
    if pg is not None and pg.password_file is not None:
        pw = settings.source.parent / pg.password_file
        if not pw.is_file() or not os.access(pw, os.R_OK):
            problems.append(f"scale_out.postgres.password_file: expected a readable file ({pw})")
    by_dir: dict[Path, list[str]] = {}
    for name in settings.models:
        landing = settings.landing_dir(name)
        if landing is None:  # batches come from an asset (source)
            continue
        key = f"models.{name}.landing_dir"
        p = _dir_problem(landing, write=False)
        if p:
            problems.append(f"{key}: {p}")
            continue
        if not landing.exists():
            # `ml-platform up` / `simulate` create it (a fresh clone has no data/landing yet)
            warnings.append(f"{key}: {landing} does not exist yet; nothing is ingested for {name} until it is created")
        by_dir.setdefault(landing, []).append(name)
    for landing, names in by_dir.items():
        if len(names) > 1:
            warnings.append(
                f"{' and '.join(f'models.{n}.landing_dir' for n in names)} are the same "
                f"directory ({landing}): every file there is ingested by each of these models"
            )
    return problems, warnings
