from ml_platform.core import gate
from ml_platform.core.policy import decide


def test_min_metric_floor_and_ceiling():
    assert gate.min_metric("roc_auc", 0.81, 0.7).passed
    v = gate.min_metric("roc_auc", 0.55, 0.7)
    assert not v.passed and "0.5500 < floor 0.7000" in v.reason
    assert not gate.min_metric("rmse", 12.0, 10.0).passed and gate.min_metric("rmse", 8.0, 10.0).passed
    assert gate.min_metric("rmse", 8.0, None).passed
    assert not gate.min_metric("roc_auc", None, 0.7).passed


def test_first_model_is_judged_on_the_threshold_alone():
    assert gate.not_worse_than_champion("roc_auc", 0.71, None, None, 0.01).passed


def test_regression_against_champion_uses_the_margin():
    assert gate.not_worse_than_champion("roc_auc", 0.795, 0.80, 3, 0.01).passed
    v = gate.not_worse_than_champion("roc_auc", 0.70, 0.80, 3, 0.01)
    assert not v.passed and "champion v3" in v.reason and v.figures["delta"] < 0
    assert not gate.not_worse_than_champion("rmse", 11.0, 10.0, 1, 0.5).passed


def test_parity_and_latency():
    assert gate.onnx_parity(1e-6, 1e-4, 10).passed and not gate.onnx_parity(0.2, 1e-4, 10).passed
    assert not gate.latency_budget(80, 50).passed


def test_policy_on_arrival(settings):
    from ml_platform.settings import RetrainConfig
    cfg = settings.models["churn"].model_copy(update={"retrain": RetrainConfig(policy="on_arrival")})
    assert decide({"status": "validated"}, [], cfg, has_champion=False).trigger == "arrival"
    assert decide({"status": "validated"}, [], cfg, has_champion=True).retrain
    d = decide({"status": "failed", "reason": "file is empty"}, [], cfg, has_champion=False)
    assert not d.retrain and "file is empty" in d.reason
