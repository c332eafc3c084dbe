"""`ml_platform.yaml` -> typed settings: the one source of truth for every layer.

The firm keys (DESIGN §3) are ``storage_dir``, ``serving`` and ``models``; every other
key has a default and is documented in the README. Errors name the key path and
what was expected, e.g. ``ml_platform.yaml: models.churn.features.age.type: expected
'numeric' or 'categorical' (got 'int')``.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

CONFIG_ENV = "ML_PLATFORM_CONFIG"
DEFAULT_CONFIG_NAME = "ml_platform.yaml"


class ConfigError(ValueError):
    """A configuration problem, already phrased for the user (file + key path + expectation)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FeatureSpec(_Strict):
    type: Literal["numeric", "categorical"]
    min: Optional[float] = None
    max: Optional[float] = None
    nullable: bool = True
    # Allowed categories (strings or integer codes); other values are quarantined.
    values: Optional[list[Union[str, int]]] = None

    @model_validator(mode="after")
    def _check(self):
        if self.type == "categorical" and (self.min is not None or self.max is not None):
            raise ValueError("min/max apply to numeric features only")
        if self.type == "numeric" and self.values is not None:
            raise ValueError("values applies to categorical features only")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


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


class GateConfig(_Strict):
    # Classification default: ROC AUC floor. Regression default: RMSE ceiling.
    metric: Optional[Literal["roc_auc", "accuracy", "f1", "log_loss", "rmse", "mae", "r2"]] = None
    threshold: Optional[float] = None
    # How much worse than the champion (same holdout) a candidate may be.
    max_regression: float = Field(0.01, ge=0)
    parity_tolerance: float = Field(1e-4, gt=0)
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
    schedule: str = "0 3 * * 1"                 # weekly retrain, cron, default Mondays 03:00


class AutomationConfig(_Strict):
    # 1 s: the sensor daemon loops every 5 s and a 5 s minimum interval can miss a loop;
    # measured on 2 cores, landing wait 8.0 -> 2.5 s (benchmarks/README.md, time to recovery).
    landing_interval_seconds: int = Field(1, ge=1)
    retrain_interval_seconds: int = Field(1, ge=1)
    settle_seconds: float = Field(2.0, ge=0)    # a file must be unchanged this long before ingest
    live_drift_interval_seconds: int = Field(300, ge=1)  # live-sample drift check, when new samples exist


class ModelConfig(_Strict):
    landing_dir: str
    target: str
    task: Literal["classification", "regression"]
    features: dict[str, FeatureSpec]
    id_column: Optional[str] = None
    timestamp_column: Optional[str] = None
    estimator: EstimatorConfig = Field(default_factory=EstimatorConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    drift: DriftConfig = Field(default_factory=DriftConfig)
    retrain: RetrainConfig = Field(default_factory=RetrainConfig)
    automation: AutomationConfig = Field(default_factory=AutomationConfig)

    @model_validator(mode="after")
    def _check(self):
        if not self.features:
            raise ValueError("at least one feature is required")
        special = {"target": self.target, "id_column": self.id_column,
                   "timestamp_column": self.timestamp_column}
        for key, col in special.items():
            if col is not None and col in self.features:
                raise ValueError(f"{key} {col!r} must not also be listed under features")
        if self.task == "classification" and self.gate.metric in {"rmse", "mae", "r2"}:
            raise ValueError(f"gate.metric {self.gate.metric!r} is a regression metric")
        if self.task == "regression" and self.gate.metric in {"roc_auc", "accuracy", "f1", "log_loss"}:
            raise ValueError(f"gate.metric {self.gate.metric!r} is a classification metric")
        if self.task == "regression" and self.estimator.name == "logistic_regression":
            raise ValueError("estimator logistic_regression needs task: classification")
        if self.task == "classification" and self.estimator.name == "ridge":
            raise ValueError("estimator ridge needs task: regression")
        return self

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


class UIConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(3000, ge=0, le=65535)


class Settings(_Strict):
    storage_dir: str = ".ml_platform"
    serving: ServingConfig = Field(default_factory=ServingConfig)
    ui: UIConfig = Field(default_factory=UIConfig)
    models: dict[str, ModelConfig]

    _base_dir: Path = PrivateAttr(default=Path("."))
    _source: Path = PrivateAttr(default=Path(DEFAULT_CONFIG_NAME))

    @model_validator(mode="after")
    def _check(self):
        if not self.models:
            raise ValueError("at least one model is required")
        for name in self.models:
            if not name.replace("_", "").isalnum() or not name[0].isalpha():
                raise ValueError(f"model name {name!r}: use letters, digits and '_' (it "
                                 "becomes a Dagster asset key prefix and a URL path)")
        return self

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
        path = ".".join(str(p) for p in e["loc"] if not str(p).startswith("function-after"))
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif e["type"] == "missing":
            msg = "required key is missing"
        elif e["type"] == "literal_error":
            msg = msg.replace("Input should be", "expected")
        if e["type"] not in ("missing", "extra_forbidden") and "input" in e and not isinstance(
            e["input"], (dict, list)
        ):
            msg += f" (got {e['input']!r})"
        lines.append(f"{path or '<top level>'}: {msg}")
    return "\n  ".join(lines)


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
        raise ConfigError(f"{src}: invalid configuration:\n  {_format_errors(e)}") from None
    settings._base_dir = src.parent
    settings._source = src
    return settings
