"""The estimator a model trains: shortcuts, class paths, their parameters."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import ConfigDict, Field, model_validator

from ml_platform.settings.base import StrictModel

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


class EstimatorConfig(StrictModel):
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
