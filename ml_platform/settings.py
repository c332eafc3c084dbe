"""`ml_platform.yaml` -> typed settings: the one source of truth for every layer.

The firm keys (DESIGN §3) are ``storage_dir``, ``serving`` and ``models``; every other
key has a default and is documented in the README. Errors name the key path and
what was expected, e.g. ``ml_platform.yaml: models.churn.features.age.type: expected
'numeric' or 'categorical' (got 'int')``.
"""

from __future__ import annotations

import os
import re
from functools import cached_property
from pathlib import Path
from typing import Literal, Optional, Union

import yaml
from pydantic import (BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator,
                      model_validator)

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
    # boolean: a categorical feature with the values "false" / "true" (what booleans become,
    # see serving/values.py); it is stored as such, so every layer sees a categorical.
    type: Literal["numeric", "categorical", "boolean"]
    min: Optional[float] = None
    max: Optional[float] = None
    nullable: bool = True
    # Allowed categories (strings or integer codes); other values are quarantined.
    values: Optional[list[Union[str, int]]] = None

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
_HGB = {"categorical_features", "early_stopping", "interaction_cst", "l2_regularization", "learning_rate",
        "loss", "max_bins", "max_depth", "max_features", "max_iter", "max_leaf_nodes", "min_samples_leaf",
        "monotonic_cst", "n_iter_no_change", "random_state", "scoring", "tol", "validation_fraction",
        "verbose", "warm_start"}
_RF = {"bootstrap", "ccp_alpha", "criterion", "max_depth", "max_features", "max_leaf_nodes", "max_samples",
       "min_impurity_decrease", "min_samples_leaf", "min_samples_split", "min_weight_fraction_leaf",
       "monotonic_cst", "n_estimators", "n_jobs", "oob_score", "random_state", "verbose", "warm_start"}
ESTIMATOR_PARAMS = {
    ("hist_gradient_boosting", "classification"): frozenset(_HGB | {"class_weight"}),
    ("hist_gradient_boosting", "regression"): frozenset(_HGB | {"quantile"}),
    ("random_forest", "classification"): frozenset(_RF | {"class_weight"}),
    ("random_forest", "regression"): frozenset(_RF),
    ("logistic_regression", "classification"): frozenset({
        "C", "class_weight", "dual", "fit_intercept", "intercept_scaling", "l1_ratio", "max_iter", "n_jobs",
        "penalty", "random_state", "solver", "tol", "verbose", "warm_start"}),
    ("ridge", "regression"): frozenset({"alpha", "copy_X", "fit_intercept", "max_iter", "positive",
                                        "random_state", "solver", "tol"}),
}


# ---- cron (retrain.schedule), checked without importing dagster (the endpoint loads this
# module). Accepts what Dagster's schedules accept: 5 fields, numbers, names, ranges (also
# wrapping ones), lists, steps, ? and L in day-of-month, day#n in day-of-week, and @aliases.
_CRON_ALIASES = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
_CRON_FIELDS = (("minute", 0, 59, {}), ("hour", 0, 23, {}), ("day of month", 1, 31, {}),
                ("month", 1, 12, {m: i + 1 for i, m in enumerate(
                    "jan feb mar apr may jun jul aug sep oct nov dec".split())}),
                ("day of week", 0, 7, {d: i for i, d in enumerate("sun mon tue wed thu fri sat".split())}))
_CRON_ITEM = re.compile(r"(?:(\*)|([a-z0-9]+)(?:-([a-z0-9]+))?)(?:/(\d+))?")
_CRON_NTH = re.compile(r"(?:[0-7]|sun|mon|tue|wed|thu|fri|sat)#[1-5]")


def cron_problem(expr: str) -> Optional[str]:
    """What is wrong with a cron string, or None when Dagster can schedule it."""
    text = " ".join(str(expr).split()).lower()
    if text in _CRON_ALIASES:
        return None
    parts = text.split(" ") if text else []
    if len(parts) != 5:
        return ("expected a cron string of 5 fields (minute hour day-of-month month day-of-week, "
                f"e.g. '0 3 * * 1') or an alias such as @daily, got {len(parts)} field(s)")
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


class EstimatorConfig(_Strict):
    # hist_gradient_boosting is the strong default for tabular data; the others are
    # there for speed or for users who want a linear baseline.
    name: Literal[
        "hist_gradient_boosting", "random_forest", "logistic_regression", "ridge"
    ] = "hist_gradient_boosting"
    params: dict = Field(default_factory=dict)


class ValidationConfig(_Strict):
    max_invalid_share: float = Field(0.2, ge=0, le=1)
    max_null_rate: float = Field(0.5, ge=0, le=1)
    min_rows: int = Field(10, ge=1)


class TrainingConfig(_Strict):
    window_batches: Optional[int] = Field(None, ge=1)  # None = every validated batch
    # After drift: train on the batches since the drift began ("regime") when they hold at
    # least min_regime_rows, or always use the window above ("window").
    drift_window: Literal["regime", "window"] = "regime"
    min_regime_rows: int = Field(1000, ge=1)
    holdout_fraction: float = Field(0.2, gt=0, lt=1)
    seed: int = 0
    # Candidate selection (core/selection.py): every retrain fits windows x estimators (+ a
    # search), all judged on one holdout drawn from the newest batches.
    windows: list[Literal["all", "newest", "regime"]] = Field(
        default_factory=lambda: ["all", "newest", "regime"], min_length=1)
    newest_batches: int = Field(3, ge=1)       # N of the "newest" window
    min_holdout_rows: int = Field(200, ge=1)   # the holdout reaches back batch by batch until it holds this
    search_budget: int = Field(0, ge=0, le=100)  # extra parameter settings tried on the best window/estimator
    # A candidate trained on more rows wins over the holdout's best when it is within
    # gate.max_regression of it and the paired bootstrap (gate.confidence, gate.resamples) does
    # not show it worse: on a few hundred holdout rows a narrow window's small lead is often
    # noise, and more data generalises to the next batches better.
    prefer_more_data: bool = True

    @field_validator("windows")
    @classmethod
    def _unique_windows(cls, v: list) -> list:
        if len(set(v)) != len(v):
            raise ValueError(f"expected each window at most once (got {v})")
        return v


class SliceConfig(_Strict):
    # One sliced feature of the per-slice gate (core/slices.py): each value of a categorical
    # feature, or the intervals between `bins` (numeric feature, left-closed), on the comparison set.
    feature: str
    bins: Optional[list[float]] = Field(None, min_length=1)
    threshold: Optional[float] = None              # floor of the gate metric on each slice (ceiling for errors)
    max_regression: Optional[float] = Field(None, ge=0)  # vs the champion on the same slice
    min_rows: int = Field(50, ge=1)                # smaller slices are reported, not judged

    @model_validator(mode="after")
    def _check(self):
        if self.threshold is None and self.max_regression is None:
            raise ValueError("@threshold: expected threshold and/or max_regression for the slice")
        if self.bins is not None and any(b >= a for a, b in zip(self.bins[1:], self.bins)):
            raise ValueError(f"@bins: expected strictly increasing edges (got {self.bins})")
        return self


class GateConfig(_Strict):
    # Classification default: ROC AUC floor. Regression default: RMSE ceiling.
    metric: Optional[Literal["roc_auc", "accuracy", "f1", "log_loss", "rmse", "mae", "r2"]] = None
    threshold: Optional[float] = None
    # How much worse than the champion a candidate may be, on the rows neither trained on.
    max_regression: float = Field(0.01, ge=0)
    # not_worse_than_champion on the paired bootstrap interval of (candidate - champion):
    # "bootstrap" refuses when the whole interval is below -max_regression (shown worse);
    # "bootstrap_strict" passes only when the whole interval is above it (non-inferiority);
    # "plain" compares the two point values.
    comparison: Literal["bootstrap", "bootstrap_strict", "plain"] = "bootstrap"
    min_comparison_rows: int = Field(100, ge=1)    # fewer: "not enough evidence", the champion stays
    resamples: int = Field(1000, ge=100, le=100_000)
    confidence: float = Field(0.9, ge=0.5, lt=1)   # two-sided interval level
    slices: list[SliceConfig] = Field(default_factory=list)
    # ONNX parity (core/gate.py onnx_parity): |onnx - sklearn| <= parity_tolerance + parity_rtol * |sklearn|.
    # parity_tolerance is absolute: default 1e-4 on probabilities (classification); for regression
    # the default is parity_rtol x the output scale (max |prediction| on the holdout), so that it
    # follows the target's units. parity_rtol applies to regression only (float32 rounding).
    parity_tolerance: Optional[float] = Field(None, gt=0)
    parity_rtol: float = Field(1e-4, ge=0, lt=1)
    latency_budget_ms: float = Field(50.0, gt=0)  # p99 of a single-row ONNX call


class DriftConfig(_Strict):
    min_rows: int = Field(200, ge=1)            # smaller batches: "not enough data"
    drifted_share: float = Field(0.3, gt=0, le=1)  # share of drifted features -> batch drifted
    chunks: int = Field(10, ge=3)               # reference chunks for threshold calibration
    psi_bins: int = Field(10, ge=2)


class RetrainConfig(_Strict):
    policy: Literal["on_drift", "on_arrival"] = "on_drift"
    debounce_batches: int = Field(2, ge=1)     # consecutive drifted batches before retraining
    min_new_rows: int = Field(500, ge=0)        # rows since the champion before a drift retrain
    cooldown_seconds: float = Field(0, ge=0)
    performance_alpha: float = Field(0.05, gt=0, lt=1)
    min_drop: float = Field(0.005, ge=0)        # a significant drop retrains only when at least this large
    # Labels that no longer follow the champion's calibrated probabilities (a classifier's
    # concept moved, even where its metric holds) retrain at this level; 0: recorded, never retrains.
    concept_alpha: float = Field(0.001, ge=0, lt=1)
    # A model refitted on the labelled batches before a labelled batch, scored on it next to the
    # champion (core/challenger.py): when the paired bootstrap interval's lower end (at
    # challenger_confidence) reaches this gain, retraining is measured to pay (classification;
    # null turns the check off).
    challenger_min_gain: Optional[float] = Field(0.005, ge=0)
    challenger_confidence: float = Field(0.98, gt=0, lt=1)
    # performance: drift alone never retrains while the measured (labels) or CBPE-estimated
    # performance holds; drift: persistent drift retrains (debounced) whatever the performance.
    trigger_on: Literal["performance", "drift"] = "performance"
    # Drift on a batch whose performance can be neither measured nor estimated (regression
    # without labels, a champion without calibration): retrain once debounced, or wait for labels.
    unestimated_drift: Literal["retrain", "wait"] = "retrain"
    schedule: str = "0 3 * * 1"                 # weekly retrain, cron, default Mondays 03:00

    @field_validator("schedule")
    @classmethod
    def _cron(cls, v: str) -> str:
        problem = cron_problem(v)
        if problem:
            raise ValueError(problem)
        return v


class AutomationConfig(_Strict):
    # 1 s: the sensor daemon loops every 5 s and a 5 s minimum interval can miss a loop;
    # measured on 2 cores, landing wait 8.0 -> 2.5 s (benchmarks/README.md, time to recovery).
    landing_interval_seconds: int = Field(1, ge=1)
    retrain_interval_seconds: int = Field(1, ge=1)
    settle_seconds: float = Field(2.0, ge=0)    # a file must be unchanged this long before ingest
    live_drift_interval_seconds: int = Field(300, ge=1)  # live-sample drift check, when new samples exist


class DeployConfig(_Strict):
    # auto: a candidate that passes every blocking gate check serves at once. required: it waits
    # "awaiting approval" until a person approves it (Materialize deployed_model in the UI, or
    # `ml-platform approve`) or rejects it (`ml-platform reject`); the gate still applies.
    approval: Literal["auto", "required"] = "auto"


class ModelConfig(_Strict):
    landing_dir: str
    target: str
    task: Literal["classification", "regression"]
    features: dict[str, FeatureSpec]
    id_column: Optional[str] = None
    timestamp_column: Optional[str] = None
    estimator: EstimatorConfig = Field(default_factory=EstimatorConfig)
    # Several estimators: each is a candidate on each training window (replaces `estimator`).
    estimators: Optional[list[EstimatorConfig]] = Field(None, min_length=1)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    drift: DriftConfig = Field(default_factory=DriftConfig)
    retrain: RetrainConfig = Field(default_factory=RetrainConfig)
    automation: AutomationConfig = Field(default_factory=AutomationConfig)
    deploy: DeployConfig = Field(default_factory=DeployConfig)

    @model_validator(mode="after")
    def _check(self):
        if not self.features:
            raise ValueError("at least one feature is required")
        special = {"target": self.target, "id_column": self.id_column,
                   "timestamp_column": self.timestamp_column}
        for key, col in special.items():
            if col is not None and col in self.features:
                raise ValueError(f"{key} {col!r} must not also be listed under features")
        keys = list(special)
        for i, key in enumerate(keys):
            for other in keys[i + 1:]:
                if special[key] is not None and special[key] == special[other]:
                    raise ValueError(f"@{other}: expected a column other than {key} (both are {special[key]!r})")
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
                raise ValueError(f"@gate.slices.{i}.bins: categorical feature {sl.feature!r} is sliced by "
                                 "value; remove bins")
        seen = set()
        for i, est in enumerate(self.estimator_list):
            key = "estimator" if self.estimators is None else f"estimators.{i}"
            if self.task == "regression" and est.name == "logistic_regression":
                raise ValueError(f"@{key}.name: estimator logistic_regression needs task: classification")
            if self.task == "classification" and est.name == "ridge":
                raise ValueError(f"@{key}.name: estimator ridge needs task: regression")
            allowed = ESTIMATOR_PARAMS.get((est.name, self.task))
            unknown = sorted(set(est.params) - allowed) if allowed is not None else []
            if unknown:
                raise ValueError(
                    f"@{key}.params: unknown parameter(s) {', '.join(map(repr, unknown))} for "
                    f"{est.name} ({self.task}); expected some of {', '.join(sorted(allowed))}")
            ident = (est.name, repr(sorted(est.params.items())))
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
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    workers: int = Field(1, ge=1)
    admin_token: Optional[str] = None        # required for /admin/* when not on loopback
    max_body_bytes: int = Field(1_048_576, ge=1024)
    poll_seconds: float = Field(1.0, gt=0)   # how often workers look for a new champion
    # live sample (storage/live_samples/<model>/*.jsonl, read by the live_drift asset):
    # at most this many rows per second per worker; 0 turns it off
    sample_rows_per_second: float = Field(100.0, ge=0)
    sample_max_mb: float = Field(256.0, gt=0)  # disk cap per model; the oldest sample files go first
    header_timeout_seconds: float = Field(10.0, gt=0)  # request line + headers must arrive within this (408)
    body_timeout_seconds: float = Field(30.0, gt=0)    # the body must arrive within this after the headers (408)
    keep_alive_seconds: float = Field(5.0, gt=0)       # idle keep-alive connections close after this
    max_connections: int = Field(1000, ge=1)           # per worker; more get a 503 and are closed


class UIConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(3000, ge=0, le=65535)


class PostgresConfig(_Strict):
    """One PostgreSQL server for Dagster's run / event-log / schedule storage and MLflow's
    backend store (two databases). The password is never a config value: it is read from an
    environment variable or a file (ml_platform/scale_out.py), never written anywhere."""
    host: str = "127.0.0.1"
    port: int = Field(5432, ge=1, le=65535)
    user: str = "ml_platform"
    password_env: Optional[str] = None   # name of the variable holding the password
    password_file: Optional[str] = None  # or a file holding it (relative to this config file)
    dagster_db: str = "dagster"
    mlflow_db: str = "mlflow"

    @model_validator(mode="after")
    def _one_password_source(self):
        if self.password_env is not None and self.password_file is not None:
            raise ValueError("@password_file: give either password_env or password_file, not both")
        if self.password_env is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.password_env):
            raise ValueError("@password_env: expected the name of an environment variable")
        return self


class CeleryConfig(_Strict):
    """Runs execute on Celery workers (`ml-platform worker`), queued through this broker."""
    broker_url: str                         # redis://host:port/db or amqp://user@host//
    backend_url: Optional[str] = None       # task results; default: the broker (Redis)

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
    postgres: Optional[PostgresConfig] = None
    celery: Optional[CeleryConfig] = None

    @model_validator(mode="after")
    def _celery_needs_postgres(self):
        if self.celery is not None and self.postgres is None:
            raise ValueError("@celery: Celery workers need the shared PostgreSQL storage (scale_out.postgres)")
        return self


class Settings(_Strict):
    storage_dir: str = ".ml_platform"
    serving: ServingConfig = Field(default_factory=ServingConfig)
    ui: UIConfig = Field(default_factory=UIConfig)
    scale_out: ScaleOutConfig = Field(default_factory=ScaleOutConfig)  # PostgreSQL + Celery (README)
    models: dict[str, ModelConfig]

    _base_dir: Path = PrivateAttr(default=Path("."))
    _source: Path = PrivateAttr(default=Path(DEFAULT_CONFIG_NAME))

    _warnings: list = PrivateAttr(default_factory=list)

    @field_validator("models")
    @classmethod
    def _names(cls, models: dict):
        if not models:
            raise ValueError("at least one model is required")
        for name in models:
            if not MODEL_NAME.fullmatch(name):
                shown = repr(name) if len(name) <= 40 else repr(name[:37] + "...")
                raise ValueError(f"model name {shown} ({len(name)} characters): expected 1-64 ASCII letters, "
                                 "digits and '_', starting with a letter (it becomes a Dagster asset key "
                                 "prefix and a URL path)")
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

    def landing_dir(self, name: str) -> Path:
        return (self._base_dir / self.models[name].landing_dir).resolve()


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
        if e["type"] not in ("missing", "extra_forbidden") and "input" in e and not secret and not isinstance(
            e["input"], (dict, list)
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
    src = config_path(path)
    try:
        raw = yaml.safe_load(src.read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"{src}: config file not found (set {CONFIG_ENV} or run from the directory "
            f"holding {DEFAULT_CONFIG_NAME})"
        ) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{src}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{src}: expected a mapping at the top level")
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(f"{src}: invalid configuration: {_format_errors(e)}") from None
    settings._base_dir = src.parent
    settings._source = src
    problems, warnings = _check_paths(settings)
    if problems:
        body = problems[0] if len(problems) == 1 else "\n  " + "\n  ".join(problems)
        raise ConfigError(f"{src}: invalid configuration: {body}")
    settings._warnings = warnings
    return settings


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
        pw = (settings.source.parent / pg.password_file)
        if not pw.is_file() or not os.access(pw, os.R_OK):
            problems.append(f"scale_out.postgres.password_file: expected a readable file ({pw})")
    by_dir: dict[Path, list[str]] = {}
    for name in settings.models:
        landing = settings.landing_dir(name)
        key = f"models.{name}.landing_dir"
        p = _dir_problem(landing, write=False)
        if p:
            problems.append(f"{key}: {p}")
            continue
        if not landing.exists():
            # `ml-platform up` / `simulate` create it (a fresh clone has no data/landing yet)
            warnings.append(f"{key}: {landing} does not exist yet; nothing is ingested for {name} "
                            "until it is created")
        by_dir.setdefault(landing, []).append(name)
    for landing, names in by_dir.items():
        if len(names) > 1:
            warnings.append(f"{' and '.join(f'models.{n}.landing_dir' for n in names)} are the same "
                            f"directory ({landing}): every file there is ingested by each of these models")
    return problems, warnings
