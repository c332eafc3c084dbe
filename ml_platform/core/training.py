"""Holdout split, the scikit-learn pipeline, and metrics. Plain functions, no Dagster."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
from sklearn import metrics as skm
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from ml_platform.core import estimators
from ml_platform.core.bootstrap import weighted_metric
from ml_platform.core.compute import one_thread, outputs
from ml_platform.core.frames import model_inputs, typed_frame
from ml_platform.core.metric_kinds import HIGHER_IS_BETTER  # noqa: F401 - re-exported
from ml_platform.settings import ModelConfig


def holdout_mask(df: pd.DataFrame, cfg: ModelConfig) -> np.ndarray:
    """True for holdout rows. Deterministic: the newest rows when a timestamp column is
    configured (no peeking into the future), else a stable hash of the id (or the row)."""
    frac = cfg.training.holdout_fraction
    n = len(df)
    if cfg.timestamp_column and cfg.timestamp_column in df:
        ts = pd.to_datetime(df[cfg.timestamp_column], errors="coerce", utc=True)
        order = np.argsort(ts.to_numpy(dtype="datetime64[ns]"), kind="stable")
        mask = np.zeros(n, dtype=bool)
        mask[order[n - max(1, int(round(n * frac))) :]] = True
        return mask
    if cfg.id_column and cfg.id_column in df:
        keys = df[cfg.id_column].astype(str)
    else:
        keys = df[list(cfg.features) + [cfg.target]].astype(str).agg("|".join, axis=1)
    buckets = np.fromiter(
        (int.from_bytes(hashlib.blake2b(k.encode(), digest_size=8).digest(), "big") % 10_000 for k in keys),
        dtype=np.int64,
        count=n,
    )
    return buckets < int(frac * 10_000)


class Float32Imputer(SimpleImputer):
    """SimpleImputer whose fill values are exactly representable in float32.

    The ONNX graph computes in float32; a float64 median (the mean of two middle values)
    rounds differently there, and a tree split placed right at that imputed value then
    routes every imputed row differently in ONNX than in sklearn (seen: 0.17 on P(y))."""

    def fit(self, X, y=None):
        super().fit(X, y)
        self.statistics_ = self.statistics_.astype(np.float32).astype(self.statistics_.dtype)
        return self


class ModelInputs(TransformerMixin, BaseEstimator):
    """``frames.model_inputs`` as a pipeline step: numeric columns -> float32, categoricals ->
    canonical strings (3, 3.0 and "3" are one category, null -> ``frames.MISSING``).

    It heads the model logged to MLflow (``for_mlflow``), so MLflow's own tools score a
    request as the endpoint does: without it, ``mlflow models serve`` given the integer-coded
    ``region`` as the JSON number 3 treated it as an unseen category and answered a wrong
    probability without an error. The ONNX graph is exported from the bare pipeline: its
    callers (endpoint, batch scoring) type the inputs before the graph."""

    def __init__(self, types: dict | None = None):
        self.types = types

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        df = X if isinstance(X, pd.DataFrame) else pd.DataFrame(X, columns=list(self.types))
        return typed_frame(df, self.types)


def for_mlflow(pipe: Pipeline, cfg: ModelConfig) -> Pipeline:
    """The fitted pipeline behind the platform's input typing (see ``ModelInputs``)."""
    types = {c: s.type for c, s in cfg.features.items()}
    return Pipeline([("model_inputs", ModelInputs(types)), ("pipeline", pipe)])


def build_pipeline(cfg: ModelConfig) -> Pipeline:
    """The user's own pipeline (``pipeline``), else the platform's around the configured estimator.
    Numeric: median impute (+ scale for linear models). Categorical: one-hot that ignores unseen
    values (missing values already arrive as their own category, see ``frames.MISSING``)."""
    if cfg.pipeline is not None:
        return estimators.user_pipeline(cfg)
    transformers = []
    if cfg.numeric_features:
        steps = [("impute", Float32Imputer(strategy="median", keep_empty_features=True))]
        # Trees are scale-invariant, and ONNX computes (x - mean) * (1 / std) where sklearn
        # computes (x - mean) / std: a 1-ulp difference that flips any split sitting exactly
        # on a repeated value (integer features, imputed values). So scale for linear models.
        if estimators.is_linear(cfg.estimator, cfg.task):
            steps.append(("scale", StandardScaler()))
        transformers.append(("num", Pipeline(steps), cfg.numeric_features))
    if cfg.categorical_features:
        transformers.append(
            (
                "cat",
                OneHotEncoder(handle_unknown="ignore", sparse_output=False, dtype=np.float32),
                cfg.categorical_features,
            )
        )
    pre = ColumnTransformer(transformers, sparse_threshold=0.0)
    return Pipeline(
        [("preprocess", pre), ("model", estimators.make_estimator(cfg.estimator, cfg.task, cfg.training.seed))]
    )


def target_values(df: pd.DataFrame, cfg: ModelConfig) -> np.ndarray:
    y = df[cfg.target]
    if cfg.task == "regression":
        return pd.to_numeric(y).to_numpy(np.float64)
    # Class labels as int64 when they are integral, else strings (ONNX needs one type).
    num = pd.to_numeric(y, errors="coerce")
    if num.notna().all() and (num == num.round()).all():
        return num.to_numpy(np.int64)
    return y.astype(str).to_numpy()


def fit(train: pd.DataFrame, cfg: ModelConfig) -> Pipeline:
    pipe = build_pipeline(cfg)
    with one_thread():
        pipe.fit(model_inputs(train, cfg), target_values(train, cfg))
    float32_thresholds(pipe.steps[-1][1])
    return pipe


def float32_thresholds(model) -> None:
    """Make a fitted HistGradientBoosting's split thresholds float32 numbers, in place, without
    changing a single prediction. Its thresholds are float64 midpoints between two bin edges;
    ONNX's TreeEnsemble holds them as float32, and a midpoint between two adjacent float32
    values rounds onto the upper one, which then goes left in ONNX and right in sklearn (seen:
    6,831 of 20,000 rows off, up to 0.81 on P(y)). The inputs are float32 (``model_inputs``),
    so the largest float32 <= the threshold splits them exactly as the midpoint did.
    (sklearn's own trees already split float32 inputs on float32-safe thresholds.)"""
    for predictors in getattr(model, "_predictors", None) or []:
        for tree in predictors:
            thr = tree.nodes["num_threshold"]
            t32 = thr.astype(np.float32)
            t32 = np.where(t32.astype(np.float64) > thr, np.nextafter(t32, np.float32(-np.inf)), t32)
            tree.nodes["num_threshold"] = t32.astype(np.float64)


def positive_scores(proba: np.ndarray) -> np.ndarray:
    """One score per row: P(class 1) for binary, max-probability for multiclass."""
    return proba[:, 1] if proba.shape[1] == 2 else proba.max(axis=1)


def classification_metrics(y, proba: np.ndarray, classes) -> dict[str, float]:
    classes = np.asarray(classes)
    pred = classes[proba.argmax(axis=1)]
    # the bootstrap's log loss (one formula, its 1e-7 floor): sklearn's, given the floored
    # probabilities, warned "do not sum to one" into every run's output where a forest gave a 0
    log_loss = float(weighted_metric("log_loss", "classification", y, proba, classes)(np.ones(len(pred))))
    out = {"accuracy": float(skm.accuracy_score(y, pred)), "log_loss": log_loss}
    if len(np.unique(y)) < 2:
        return out  # ROC AUC and F1 are undefined on one class
    if len(classes) == 2:
        out["roc_auc"] = float(skm.roc_auc_score(y == classes[1], proba[:, 1]))
        out["f1"] = float(skm.f1_score(y == classes[1], pred == classes[1]))
    else:
        out["roc_auc"] = float(skm.roc_auc_score(y, proba, multi_class="ovr", labels=classes))
        out["f1"] = float(skm.f1_score(y, pred, average="macro"))
    return out


def regression_metrics(y, pred) -> dict[str, float]:
    return {
        "rmse": float(np.sqrt(skm.mean_squared_error(y, pred))),
        "mae": float(skm.mean_absolute_error(y, pred)),
        "r2": float(skm.r2_score(y, pred)),
    }


def binary_auc(positive: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic on average ranks: sklearn's value (ties count one
    half), without its input validation, which dominated the bootstraps that call it hundreds of times."""
    from scipy.stats import rankdata

    pos = np.asarray(positive, dtype=bool)
    n1 = int(pos.sum())
    n0 = len(pos) - n1
    if n1 == 0 or n0 == 0:
        raise ValueError("ROC AUC is undefined on one class")
    return float((rankdata(score)[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def metric_function(name: str, task: str, classes=None):
    """metric(y, outputs) for one metric; the common ones computed directly because the
    bootstrap calls it hundreds of times. Raises ValueError where it is undefined."""
    if task == "regression":
        return lambda y, pred: regression_metrics(y, pred)[name]
    classes = np.asarray(classes)
    if name == "roc_auc" and len(classes) == 2:
        return lambda y, proba: binary_auc(y == classes[1], proba[:, 1])
    if name == "accuracy":
        return lambda y, proba: float(np.mean(classes[proba.argmax(axis=1)] == y))

    def fn(y, proba):
        m = classification_metrics(y, proba, classes)
        if name not in m:
            raise ValueError(f"{name} undefined on this sample")
        return m[name]

    return fn


def evaluate(pipe: Pipeline, df: pd.DataFrame, cfg: ModelConfig) -> dict[str, float]:
    x, y = model_inputs(df, cfg), target_values(df, cfg)
    if cfg.task == "classification":
        return classification_metrics(y, outputs(pipe, x, cfg.task), pipe.classes_)
    return regression_metrics(y, outputs(pipe, x, cfg.task))


def confusion(y, pred, classes) -> pd.DataFrame:
    m = skm.confusion_matrix(y, pred, labels=classes)
    return pd.DataFrame(m, index=[f"true {c}" for c in classes], columns=[f"pred {c}" for c in classes])
