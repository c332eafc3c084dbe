"""Your own estimator: a class by import path is checked where the definitions load (import,
parameters, ONNX converter, task), trains in the platform's pipeline and exports to ONNX."""

import pytest

from ml_platform.core import estimators, export, training
from ml_platform.core.simulate import generate_batch
from ml_platform.settings import ModelConfig

FEATURES = {
    **{c: {"type": "numeric"} for c in ("tenure_months", "monthly_charges", "support_calls", "usage_gb", "age")},
    **{c: {"type": "categorical"} for c in ("plan", "contract", "region", "payment_method")},
}


def _cfg(estimator: dict, task: str = "classification") -> ModelConfig:
    return ModelConfig.model_validate(
        {"landing_dir": "x", "target": "churned", "task": task, "features": FEATURES, "estimator": estimator}
    )


def test_a_class_by_path_trains_and_exports_with_parity():
    cfg = _cfg({"class": "sklearn.ensemble.ExtraTreesClassifier", "params": {"n_estimators": 30}})
    assert estimators.problems(cfg) == []
    df = generate_batch(1500, seed=3)
    pipe = training.fit(df, cfg)
    assert export.parity(pipe, export.session(export.export_onnx(pipe, cfg)), df.head(300), cfg) < 1e-4
    assert cfg.estimator.label == "ExtraTreesClassifier"


@pytest.mark.parametrize(
    "estimator,problem",
    [
        ({"class": "sklearn.ensemble.ExtraTreesClassifier", "params": {"n_trees": 3}}, "no parameter(s) 'n_trees'"),
        ({"class": "nope.Thing"}, "module 'nope' cannot be imported"),
        ({"class": "sklearn.neighbors.NearestCentroid"}, "no ONNX converter is registered"),
        ({"class": "sklearn.svm.SVR"}, "is not a classifier"),
        ({"class": "sklearn.ensemble.StackingClassifier", "params": {"folds": 3}}, "no parameter(s) 'folds'"),
    ],
)
def test_a_class_that_cannot_train_or_export_is_named_with_its_key(estimator, problem):
    found = estimators.problems(_cfg(estimator))
    assert found and found[0].startswith("estimator.") and problem in " ".join(found), found


def test_name_and_class_together_are_a_config_error():
    with pytest.raises(ValueError, match="either name or class"):
        _cfg({"name": "random_forest", "class": "sklearn.ensemble.ExtraTreesClassifier"})
