import numpy as np
import pytest

from ml_platform.core import gate
from ml_platform.core.batch_record import BatchRecord
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
    assert decide(BatchRecord("a", status="validated"), [], cfg, has_champion=False).trigger == "arrival"
    assert decide(BatchRecord("a", status="validated"), [], cfg, has_champion=True).retrain
    d = decide(BatchRecord("b", status="failed", reason="file is empty"), [], cfg, has_champion=False)
    assert not d.retrain and "file is empty" in d.reason


def _rec(p, verdict="stable", rows=1000, significant=False, status="validated", decision=None, **kw):
    r = {
        "partition": p,
        "status": status,
        "valid_rows": rows,
        "labelled": True,
        "drift": {
            "verdict": verdict,
            "share_drifted": 0.5 if verdict == "drifted" else 0.0,
            "drifted_features": ["age"] if verdict == "drifted" else [],
            "rows": rows,
        },
        "performance": {
            "metric": "roc_auc",
            "value": 0.6,
            "ci_low": 0.55,
            "ci_high": 0.65,
            "baseline": 0.8,
            "drop": 0.2,
            "significant": significant,
            "champion_version": 1,
        },
    }
    if decision is not None:
        r["decision"] = decision
    r.update(kw)
    return BatchRecord.from_dict(r)


def test_on_drift_leaves_stable_batches_alone(settings):
    cfg = settings.models["churn"]
    d = decide(_rec("a"), [], cfg, has_champion=True)
    assert not d.retrain and "no drift" in d.reason


def _legacy(settings):
    """``retrain.trigger_on: drift``: persistent drift retrains whatever the performance."""
    from ml_platform.settings import RetrainConfig

    return settings.models["churn"].model_copy(update={"retrain": RetrainConfig(trigger_on="drift")})


def test_drift_alone_does_not_retrain_while_measured_performance_holds(settings):
    cfg = settings.models["churn"]
    h = [_rec("s1", decision={"retrain": True, "at": 0})]
    for p in ("d1", "d2", "d3"):
        d = decide(_rec(p, "drifted"), h, cfg, has_champion=True)
        assert not d.retrain, d.reason
        assert "looked at closer" in d.reason and "no significant drop" in d.reason, d.reason
        h.append(_rec(p, "drifted", decision=d.to_dict()))


def _unlabelled(p, verdict="drifted", est_significant=False, estimate=True, **kw):
    r = _rec(p, verdict, **kw)
    r.labelled = False
    r.performance = {"skipped": "batch carries no labels"}
    r.estimate = (
        {
            "method": "cbpe",
            "metric": "roc_auc",
            "value": 0.7,
            "ci_low": 0.68,
            "ci_high": 0.72,
            "baseline": 0.8,
            "drop": 0.1,
            "significant": est_significant,
        }
        if estimate
        else {"method": "none", "reason": "regression: no label-free estimate"}
    )
    return r


def test_without_labels_the_estimate_decides_with_debounce(settings):
    cfg = settings.models["churn"]  # debounce 2, min_new_rows 500
    h = [_rec("s1", decision={"retrain": True, "at": 0})]
    holds = decide(_unlabelled("u0"), h, cfg, has_champion=True)
    assert not holds.retrain and "estimated roc_auc 0.7000" in holds.reason and "drift alone" in holds.reason
    first = decide(_unlabelled("u1", est_significant=True), h, cfg, has_champion=True)
    assert not first.retrain and "1 consecutive" in first.reason and "debounce" in first.reason, first.reason
    h.append(_unlabelled("u1", est_significant=True, decision=first.to_dict()))
    second = decide(_unlabelled("u2", est_significant=True), h, cfg, has_champion=True)
    assert second.retrain and second.trigger == "estimated_performance" and second.regime_start == "u1", second


def test_no_estimate_falls_back_to_debounced_drift_or_waits(settings):
    from ml_platform.settings import RetrainConfig

    cfg = settings.models["churn"]
    h = [_unlabelled("u1", estimate=False, decision={"retrain": False})]
    d = decide(_unlabelled("u2", estimate=False), h, cfg, has_champion=True)
    assert d.retrain and d.trigger == "drift" and "neither measured nor estimated" in d.reason
    wait = cfg.model_copy(update={"retrain": RetrainConfig(unestimated_drift="wait")})
    d = decide(_unlabelled("u2", estimate=False), h, wait, has_champion=True)
    assert not d.retrain and "waiting for labels" in d.reason


def test_drift_is_debounced_then_retrains_on_the_new_regime(settings):
    cfg = _legacy(settings)  # debounce 2, min_new_rows 500
    h = [_rec("s1", decision={"retrain": True, "at": 0}), _rec("s2")]
    first = decide(_rec("d1", "drifted"), h, cfg, has_champion=True)
    assert not first.retrain and "1 consecutive" in first.reason and "debounce" in first.reason
    h.append(_rec("d1", "drifted", decision=first.to_dict()))
    second = decide(_rec("d2", "drifted"), h, cfg, has_champion=True)
    assert second.retrain and second.trigger == "drift" and second.regime_start == "d1"


def test_drift_needs_enough_new_rows(settings):
    cfg = _legacy(settings)
    h = [_rec("d1", "drifted", rows=240)]
    d = decide(_rec("d2", "drifted", rows=240), h, cfg, has_champion=True)
    assert not d.retrain and "waiting for 500 new rows" in d.reason


def test_significant_performance_drop_retrains_at_once(settings):
    d = decide(_rec("p", significant=True), [], settings.models["churn"], has_champion=True)
    assert d.retrain and d.trigger == "performance" and "0.6000" in d.reason and d.regime_start == "p"


def test_small_batches_and_broken_references_never_retrain(settings):
    cfg = settings.models["churn"]
    small = _rec("s", "not enough data", rows=50)
    small.performance = {"skipped": "batch carries no labels"}
    d = decide(small, [], cfg, has_champion=True)
    assert not d.retrain and "too small to judge" in d.reason
    tiny_drop = _rec("t", "not enough data", rows=120, significant=True)
    assert not decide(tiny_drop, [], cfg, has_champion=True).retrain
    broken = _rec("b", "no reference")
    broken.drift["reason"] = "drift reference of champion v1 is missing; retraining falls back to the schedule"
    d = decide(broken, [_rec("x", "drifted")], cfg, has_champion=True)
    assert not d.retrain and "falls back to the schedule" in d.reason


def test_a_significant_but_negligible_drop_does_not_retrain(settings):
    """A near-perfect holdout (CI [1, 1]) makes a 1e-5 drop "significant": retrain.min_drop."""
    rec = _rec("p", significant=True)
    rec.performance.update(value=0.99996, ci_low=0.9999, ci_high=0.99999, baseline=1.0, drop=0.00004)
    d = decide(rec, [], settings.models["churn"], has_champion=True)
    assert not d.retrain and "no significant drop of at least 0.005" in d.reason, d.reason


def test_cooldown_holds_a_retrain(settings):
    from ml_platform.settings import RetrainConfig

    cfg = settings.models["churn"].model_copy(update={"retrain": RetrainConfig(cooldown_seconds=3600)})
    h = [_rec("a", decision={"retrain": True, "at": 1000.0})]
    d = decide(_rec("p", significant=True, validated_at=1500.0), h, cfg, has_champion=True)
    assert not d.retrain and "cooldown" in d.reason


@pytest.mark.parametrize(
    "extra, problem",
    [
        ("retrain: {trigger_on: bogus}\n", "models.churn.retrain.trigger_on: expected 'performance' or 'drift'"),
        (
            "retrain: {unestimated_drift: maybe}\n",
            "models.churn.retrain.unestimated_drift: expected 'retrain' or 'wait'",
        ),
        ("retrain: {min_drop: -1}\n", "models.churn.retrain.min_drop"),
    ],
)
def test_policy_keys_are_validated_at_load(tmp_path, extra, problem):
    from ml_platform.settings import ConfigError, load_settings
    from ml_platform_tests.conftest import write_config

    with pytest.raises(ConfigError) as e:
        load_settings(write_config(tmp_path, extra=extra))
    assert problem in str(e.value), str(e.value)


def test_a_user_check_that_raises_gives_a_short_reason():
    import pandas as pd

    def buggy(candidate, champion, rows):
        return rows["y"].mean()  # a column of "0"/"1" strings: pandas puts it all in the message

    out = gate.ModelOutputs(1, np.zeros((400, 2)), [0, 1])
    v = gate.user_check("buggy", buggy, out, None, pd.DataFrame({"y": ["0", "1"] * 200}))
    assert not v.passed and v.reason.startswith("buggy raised TypeError: ") and v.reason.endswith("…"), v.reason
    assert len(v.reason) <= len("buggy raised TypeError: ") + gate.USER_ERROR_CHARS and "\n" not in v.reason
