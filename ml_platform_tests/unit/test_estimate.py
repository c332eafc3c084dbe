"""CBPE (core/estimate.py): calibrated on a reference, it must track the realised metric of an
unlabelled batch under covariate shift, say so honestly when it cannot, and survive JSON."""

import json

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from ml_platform.core import calibration, estimate
from ml_platform.core.batch_record import BatchRecord


def _data(n, rng, shift=0.0, spread=1.0, classes=2):
    x = rng.normal(shift, spread, size=(n, 2))
    if classes == 2:
        p = 1 / (1 + np.exp(-(2.0 * x[:, 0] - 1.0 * x[:, 1])))  # the concept never changes
        return x, (rng.random(n) < p).astype(int)
    logits = np.column_stack([x[:, 0], x[:, 1], -x[:, 0] - x[:, 1]]) * 2
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return x, (rng.random(n)[:, None] > p.cumsum(axis=1)).sum(axis=1).clip(0, 2)


def _champion(classes=2, seed=0):
    rng = np.random.default_rng(seed)
    x, y = _data(4000, rng, classes=classes)
    model = LogisticRegression().fit(x, y)
    xr, yr = _data(2000, rng, classes=classes)  # the reference: rows it did not train on
    q = model.predict_proba(xr)
    cal = calibration.fit_calibration(yr, q, model.classes_)
    auc = roc_auc_score(yr, q[:, 1]) if classes == 2 else roc_auc_score(yr, q, multi_class="ovr")
    meta = json.loads(
        json.dumps(
            {
                "classes": model.classes_.tolist(),
                "metrics": {"roc_auc": auc},
                "metrics_ci": {"roc_auc": [auc - 0.01, auc + 0.01]},
                "cbpe": cal.to_dict(),
            }
        )
    )
    return model, meta, rng


def test_estimate_tracks_realised_auc_under_covariate_shift():
    model, meta, rng = _champion()
    rows = []
    for shift, spread in [(0.0, 1.0), (0.0, 0.4), (0.5, 0.3), (-1.0, 1.5)]:
        x, y = _data(3000, rng, shift, spread)
        q = model.predict_proba(x)
        est = estimate.estimate(q, meta, "roc_auc", "classification")
        real = estimate.measure(y, q, meta, "roc_auc", "classification")
        assert est.method == "cbpe" and real.method == "measured"
        assert abs(real.value - roc_auc_score(y, q[:, 1])) < 1e-12  # the fast AUC is sklearn's
        rows.append((shift, spread, est.value, est.ci_low, est.ci_high, real.value, est.significant))
    print("shift spread estimated [ci] realised significant", *rows, sep="\n")
    for shift, spread, v, lo, hi, real, _sig in rows:
        assert abs(v - real) < 0.05 and lo - 0.01 <= real <= hi + 0.01, (shift, spread, v, lo, hi, real)
    # a narrower spread puts rows where the model is unsure: the estimate sees the drop
    assert rows[1][2] < rows[0][2] - 0.05 and rows[1][6] and not rows[0][6]


def test_expected_auc_is_the_mean_realised_auc_under_the_calibrated_labels():
    rng = np.random.default_rng(3)
    p = rng.beta(2, 3, 2000)
    score = p + rng.normal(0, 0.05, 2000)  # ranked by a noisy score
    sims = [roc_auc_score(rng.random(2000) < p, score) for _ in range(300)]
    assert abs(estimate.expected_binary_auc(p, score) - np.mean(sims)) < 0.003


@pytest.mark.parametrize("metric", ["accuracy", "f1", "log_loss", "roc_auc"])
def test_every_estimable_metric_multiclass_and_binary(metric):
    for classes in (2, 3):
        model, meta, rng = _champion(classes=classes)
        x, y = _data(1500, rng, classes=classes)
        q = model.predict_proba(x)
        est = estimate.estimate(
            q, meta | {"metrics": {metric: 0.5}, "metrics_ci": {}}, metric, "classification", n_sim=40
        )
        real = estimate.measure(y, q, meta | {"metrics": {metric: 0.5}}, metric, "classification", n_boot=20)
        assert est.method == "cbpe", est.reason
        assert abs(est.value - real.value) < 0.05, (metric, classes, est.value, real.value)


def test_no_estimate_is_said_with_the_reason():
    none = estimate.estimate(np.zeros(10), {"metrics": {"rmse": 1.0}}, "rmse", "regression")
    assert none.method == "none" and none.value is None and "regression" in none.reason
    no_cal = estimate.estimate(
        np.full((10, 2), 0.5), {"classes": [0, 1], "metrics": {"roc_auc": 0.8}}, "roc_auc", "classification", version=4
    )
    assert no_cal.method == "none" and "v4 carries no calibration" in no_cal.reason
    assert calibration.fit_calibration(np.zeros(100), np.full((100, 2), 0.5), [0, 1]) is None  # one class


def test_tracking_pairs_estimates_with_realised_values():
    recs = [
        {
            "partition": "a",
            "estimate": {"value": 0.80, "ci_low": 0.78, "ci_high": 0.82},
            "performance": {"metric": "roc_auc", "value": 0.79},
        },
        {
            "partition": "b",
            "estimate": {"value": 0.80, "ci_low": 0.78, "ci_high": 0.82},
            "performance": {"metric": "roc_auc", "value": 0.70},
        },
        {"partition": "c", "estimate": {"value": 0.8}, "performance": {"skipped": "no labels"}},
    ]
    t = estimate.tracking([BatchRecord.from_dict(r) for r in recs])
    assert [r["partition"] for r in t.rows] == ["a", "b"]
    assert t.mean_abs_error == pytest.approx(0.055) and t.covered == 0.5
