"""One model's settings (`models.<name>` in ml_platform.yaml, or a ModelComponent's attributes)."""

from __future__ import annotations

import re
from typing import Literal, Optional, Union

from pydantic import Field, field_validator, model_validator

from ml_platform.names import RESERVED_COLUMNS, column_name
from ml_platform.settings.base import StrictModel
from ml_platform.settings.estimator import ESTIMATOR_PARAMS, EstimatorConfig
from ml_platform.settings.features import FeatureSpec
from ml_platform.settings.sections import (
    AutomationConfig,
    DeployConfig,
    DriftConfig,
    GateConfig,
    LandingConfig,
    RetrainConfig,
    SourceConfig,
    TrainingConfig,
    ValidationConfig,
)

_COLUMN_KEYS = ("target", "id_column", "timestamp_column")


class ModelConfig(StrictModel):
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
        "of the champion serving when the batch is validated (before the first champion, any label). When the "
        "classes are 0 and 1 (declared here or the champion's), the labels yes/true/y/t and no/false/n/f (any case, "
        "booleans too) are mapped to 1 and 0 at validation, so training, metrics, the champion's performance, the "
        "concept check and the gate all see 0/1 (docs/bad-input.md).",
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

    @model_validator(mode="before")
    @classmethod
    def _one_spelling(cls, data):
        """Column names in one Unicode spelling (NFC, ``names.column_name``), as every input edge
        reads them; two names that are one once normalized are refused first."""
        if not isinstance(data, dict):
            return data
        feats = data.get("features")
        names = [*(feats if isinstance(feats, dict) else ()), *(data.get(k) for k in _COLUMN_KEYS)]
        seen: dict = {}
        for c in names:
            if not isinstance(c, str):
                continue
            same = seen.setdefault(column_name(c), c)
            if same != c:  # one name to a person, two to the code: a header matches one of them at random
                codes = [x.encode("unicode_escape").decode() for x in (same, c)]
                raise ValueError(
                    f"@features: {same!r} and {c!r} are the same name once Unicode-normalized (NFC) "
                    f"({codes[0]} vs {codes[1]}): keep one spelling"
                )
        out = {**data, **{k: column_name(data[k]) for k in _COLUMN_KEYS if k in data}}
        if isinstance(feats, dict):
            out["features"] = {column_name(k): v for k, v in feats.items()}
        gate = data.get("gate")
        if isinstance(gate, dict) and isinstance(gate.get("slices"), list):
            out["gate"] = {
                **gate,
                "slices": [
                    {**sl, "feature": column_name(sl["feature"])} if isinstance(sl, dict) and "feature" in sl else sl
                    for sl in gate["slices"]
                ],
            }
        return out

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
        if any(not str(c).strip() for c in self.features):
            raise ValueError("@features: a feature name is empty (or only spaces): name the column as its header does")
        special = {"target": self.target, "id_column": self.id_column, "timestamp_column": self.timestamp_column}
        for key, col in [*((f"features.{c}", c) for c in self.features), *special.items()]:
            if col in RESERVED_COLUMNS:  # written beside the batch's columns: it would be overwritten
                raise ValueError(
                    f"@{key}: {col!r} is a column name the platform writes itself (reserved: "
                    f"{', '.join(RESERVED_COLUMNS)}): rename the column"
                )
        if (self.landing_dir is None) == (self.source is None):
            raise ValueError("@landing_dir: give either landing_dir (files) or source: {asset: ...}, one of them")
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
