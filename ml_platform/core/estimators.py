"""The estimator a model trains: one of four shortcuts, any scikit-learn-compatible class by its
import path (``estimator: {class: ..., params: ...}``), or the user's whole pipeline
(``pipeline: "module:function"``).

Every one must export to ONNX: skl2onnx's converters, plus onnxmltools' for LightGBM and XGBoost
when they are installed (the ``boosting`` extra). ``problems`` checks a model's config before
anything trains, so a class that does not import, a parameter it does not take, or a class with
no converter is reported where the definitions load, naming the key.
"""

from __future__ import annotations

import inspect
from functools import cache

from sklearn.base import ClassifierMixin, RegressorMixin, is_classifier, is_regressor

from ml_platform.core.user_code import UserCodeError, load_object
from ml_platform.settings import EstimatorConfig, ModelConfig

# shortcut -> (classification class, regression class, platform defaults)
SHORTCUTS: dict[str, tuple[str | None, str | None, dict]] = {
    "hist_gradient_boosting": (
        "sklearn.ensemble.HistGradientBoostingClassifier",
        "sklearn.ensemble.HistGradientBoostingRegressor",
        {"max_iter": 100, "max_leaf_nodes": 15, "l2_regularization": 1.0, "early_stopping": False},
    ),
    "random_forest": (
        "sklearn.ensemble.RandomForestClassifier",
        "sklearn.ensemble.RandomForestRegressor",
        {"n_estimators": 100, "n_jobs": 1},
    ),
    "logistic_regression": ("sklearn.linear_model.LogisticRegression", None, {"max_iter": 1000}),
    "ridge": (None, "sklearn.linear_model.Ridge", {}),
}


def class_path(est: EstimatorConfig, task: str) -> str:
    if est.class_path is not None:
        return est.class_path
    clf, reg, _ = SHORTCUTS[est.name]
    return clf if task == "classification" else reg


def estimator_class(est: EstimatorConfig, task: str) -> type:
    cls = load_object(class_path(est, task))
    if not inspect.isclass(cls) or not hasattr(cls, "fit") or not hasattr(cls, "get_params"):
        raise UserCodeError(f"{class_path(est, task)!r} is not a scikit-learn-compatible estimator class")
    return cls


def make_estimator(est: EstimatorConfig, task: str, seed: int):
    """An unfitted estimator: the platform's defaults for a shortcut, then the configured params;
    ``random_state`` is the training seed where the class takes one and none is set."""
    cls = estimator_class(est, task)
    params = dict(SHORTCUTS[est.name][2]) if est.class_path is None else {}
    params.update(est.params)
    if "random_state" in param_names(cls) and "random_state" not in params:
        params["random_state"] = seed
    return cls(**params)


def param_names(cls: type) -> list[str]:
    """The constructor's parameters (scikit-learn's own rule), without building one."""
    try:
        return list(cls._get_param_names())
    except (AttributeError, RuntimeError, TypeError):
        return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]


def _kind(cls: type) -> str | None:
    """classifier / regressor: from scikit-learn's mixins, else from an instance where one can be
    built without arguments (LightGBM, XGBoost and others declare it through their tags)."""
    if issubclass(cls, ClassifierMixin):
        return "classifier"
    if issubclass(cls, RegressorMixin):
        return "regressor"
    try:
        est = cls()
    except TypeError:
        return None
    return "classifier" if is_classifier(est) else "regressor" if is_regressor(est) else None


def is_linear(est: EstimatorConfig, task: str) -> bool:
    """Linear models get their numeric inputs scaled (trees are scale-invariant)."""
    return class_path(est, task).startswith("sklearn.linear_model.")


def user_pipeline(cfg: ModelConfig):
    """The unfitted pipeline the user's ``pipeline`` function returns."""
    fn = load_object(cfg.pipeline)
    if not callable(fn):
        raise UserCodeError(f"{cfg.pipeline!r} is not a function")
    pipe = fn()
    if not hasattr(pipe, "fit") or not hasattr(pipe, "predict"):
        raise UserCodeError(f"{cfg.pipeline!r} returned {type(pipe).__name__}, not a scikit-learn pipeline")
    return pipe


@cache
def _converters() -> frozenset:
    """Estimator classes an ONNX converter is registered for (skl2onnx's own, and LightGBM's /
    XGBoost's through onnxmltools when those libraries are installed)."""
    from skl2onnx._supported_operators import sklearn_operator_name_map

    register_boosting_converters()
    return frozenset(sklearn_operator_name_map)


@cache
def register_boosting_converters() -> None:
    """Register onnxmltools' LightGBM / XGBoost converters with skl2onnx, when installed."""
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import calculate_linear_classifier_output_shapes

    try:
        from lightgbm import LGBMClassifier, LGBMRegressor
        from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm
        from skl2onnx.common.shape_calculator import calculate_linear_regressor_output_shapes

        update_registered_converter(
            LGBMClassifier,
            "LightGbmLGBMClassifier",
            calculate_linear_classifier_output_shapes,
            convert_lightgbm,
            options={"nocl": [True, False], "zipmap": [True, False, "columns"]},
        )
        update_registered_converter(
            LGBMRegressor, "LightGbmLGBMRegressor", calculate_linear_regressor_output_shapes, convert_lightgbm
        )
    except ImportError:
        pass
    try:
        from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost
        from skl2onnx.common.shape_calculator import calculate_linear_regressor_output_shapes
        from xgboost import XGBClassifier, XGBRegressor

        update_registered_converter(
            XGBClassifier,
            "XGBoostXGBClassifier",
            calculate_linear_classifier_output_shapes,
            convert_xgboost,
            options={"nocl": [True, False], "zipmap": [True, False, "columns"]},
        )
        update_registered_converter(
            XGBRegressor, "XGBoostXGBRegressor", calculate_linear_regressor_output_shapes, convert_xgboost
        )
    except ImportError:
        pass


def problems(cfg: ModelConfig) -> list[str]:
    """What keeps this model's code (estimators, pipeline, gate checks) from running: one line per
    problem, starting with its key path (``estimator.class: ...``). Imports the user's code."""
    out = []
    if cfg.transform is not None:
        try:
            if not callable(load_object(cfg.transform)):
                out.append(f"transform: {cfg.transform!r} is not a function")
        except UserCodeError as e:
            out.append(f"transform: {e}")
    for i, path in enumerate(cfg.gate.checks):
        try:
            if not callable(load_object(path)):
                out.append(f"gate.checks.{i}: {path!r} is not a function")
        except UserCodeError as e:
            out.append(f"gate.checks.{i}: {e}")
    if cfg.pipeline is not None:
        try:
            user_pipeline(cfg)
        except UserCodeError as e:
            out.append(f"pipeline: {e}")
        return out
    for i, est in enumerate(cfg.estimator_list):
        key = "estimator" if cfg.estimators is None else f"estimators.{i}"
        try:
            cls = estimator_class(est, cfg.task)
        except UserCodeError as e:
            out.append(f"{key}.class: {e}")
            continue
        accepted = set(param_names(cls))
        takes_any = any(  # e.g. LightGBM passes **kwargs through to its booster
            q.kind is inspect.Parameter.VAR_KEYWORD for q in inspect.signature(cls.__init__).parameters.values()
        )
        unknown = [] if takes_any else sorted(set(est.params) - accepted)
        if unknown:
            out.append(
                f"{key}.params: {cls.__name__} takes no parameter(s) {', '.join(map(repr, unknown))}; "
                f"it takes {', '.join(sorted(accepted))}"
            )
        if cls not in _converters():
            out.append(
                f"{key}.class: no ONNX converter is registered for {cls.__module__}.{cls.__name__} "
                "(skl2onnx's estimators; LightGBM and XGBoost with the 'boosting' extra)"
            )
        kind = _kind(cls)
        if cfg.task == "classification" and not (kind == "classifier" and hasattr(cls, "predict_proba")):
            out.append(f"{key}.class: {cls.__name__} is not a classifier with predict_proba (task: classification)")
        if cfg.task == "regression" and kind != "regressor":
            out.append(f"{key}.class: {cls.__name__} is not a regressor (task: regression)")
    return out
