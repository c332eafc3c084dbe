"""The concept check (core/calibration.check_calibration) and its trigger (core/policy): labels that
no longer follow the champion's calibrated probabilities retrain ("concept"), even where the ROC
AUC holds; an unchanged concept under covariate shift, or a batch far larger than the
reference, does not."""

import json

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from ml_platform.core import calibration, estimate
from ml_platform.core.batch_record import BatchRecord, Decision
from ml_platform.core.policy import decide


def _data(n, rng, shift=0.0, spread=1.0, threshold=0.0):
    """P(y=1) = sigmoid(3 (x0 + x1 - threshold)): moving the threshold keeps the ranking by x0 + x1."""
    x = rng.normal(shift, spread, size=(n, 2))
    p = 1 / (1 + np.exp(-3.0 * (x[:, 0] + x[:, 1] - threshold)))
    return x, (rng.random(n) < p).astype(int)


def _champion(seed=0, reference_rows=2000):
    rng = np.random.default_rng(seed)
    x, y = _data(4000, rng)
    model = LogisticRegression().fit(x, y)
    xr, yr = _data(reference_rows, rng)  # its holdout: the calibration's reference
    q = model.predict_proba(xr)
    auc = roc_auc_score(yr, q[:, 1])
    cal = calibration.fit_calibration(yr, q, model.classes_)
    meta = json.loads(
        json.dumps(
            {
                "classes": model.classes_.tolist(),
                "metrics": {"roc_auc": auc},
                "metrics_ci": {"roc_auc": [auc - 0.012, auc + 0.012]},
                "cbpe": cal.to_dict(),
            }
        )
    )
    return model, meta, rng


def _measure(model, meta, x, y, **kw):
    return estimate.measure(y, model.predict_proba(x), meta, "roc_auc", "classification", n_boot=50, **kw)


def test_an_unchanged_concept_stays_calibrated_under_covariate_shift_and_at_any_batch_size():
    model, meta, rng = _champion()
    seen = []
    for shift, spread, n in [(0, 1, 2000), (0.8, 1, 2000), (-0.5, 0.6, 2000), (0.3, 1.4, 3000), (0, 1, 100_000)] * 4:
        perf = _measure(model, meta, *_data(n, rng, shift, spread))
        seen.append((shift, spread, n, perf.concept["p_value"]))
        assert not perf.concept["significant"], perf.concept
    print("shift spread rows p", *seen, sep="\n")
    # 100k rows against a 2,000-row reference: the reference's own uncertainty keeps the test honest
    assert min(p for _, _, n, p in seen if n == 100_000) > 0.001, seen


def test_a_moved_threshold_is_a_concept_change_the_auc_does_not_show():
    model, meta, rng = _champion()
    x, y = _data(2000, rng, threshold=0.5)
    perf = _measure(model, meta, x, y)
    c = perf.concept
    print(perf.to_dict())
    assert not perf.significant, "the ranking holds: the AUC test alone would keep this champion"
    assert c["significant"] and c["p_value"] < 1e-6, c
    assert c["observed_rate"] < c["expected_rate"] - 0.05, c  # fewer positives than the calibration expects
    worst = max(c["bins"], key=lambda b: abs(b["z"]))
    assert worst["observed"] < worst["expected"] - 0.1, worst


def test_the_policy_retrains_on_a_concept_change_with_the_figures(settings):
    cfg = settings.models["churn"]
    model, meta, rng = _champion()
    held = _measure(model, meta, *_data(2000, rng)).to_dict()
    moved = _measure(model, meta, *_data(2000, rng, threshold=0.5)).to_dict()
    stable = {"verdict": "stable", "share_drifted": 0.0, "drifted_features": [], "rows": 2000}

    def rec(p, perf):
        return BatchRecord(p, status="validated", valid_rows=2000, labelled=True, drift=stable, performance=perf)

    first = rec("b1", held)
    first.decision = decide(first, [], cfg, has_champion=True)
    assert not first.decision.retrain and not first.concept_moved, first.decision.reason
    d = decide(rec("b2", moved), [first], cfg, has_champion=True)
    assert d.retrain and d.trigger == "concept", d.reason
    assert "labels no longer follow the champion's calibrated probabilities" in d.reason, d.reason
    # the ranking held: no window of the new regime alone (old rows still rank), see policy.py
    assert "worst bin scores" in d.reason and d.regime_start is None, d
    # within the cooldown the same evidence waits, and says so
    first.decision = Decision(True, "performance", "earlier", at=100.0)
    cool = cfg.model_copy(update={"retrain": cfg.retrain.model_copy(update={"cooldown_seconds": 3600})})
    waited = decide(rec("b2", moved), [first], cool, has_champion=True, now=200.0)
    assert not waited.retrain and "cooldown" in waited.reason and "concept change" in waited.reason, waited.reason
    # concept_alpha 0 turns the trigger off; the figures are still recorded
    off = _measure(model, meta, *_data(2000, rng, threshold=0.5), concept_alpha=0.0)
    assert off.concept["p_value"] < 1e-6 and not off.concept["significant"]


def test_multiclass_and_calibrations_recorded_before_bin_counts():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(6000, 2))
    logits = np.column_stack([x[:, 0], x[:, 1], -x[:, 0] - x[:, 1]]) * 2
    y = (rng.random(6000)[:, None] > (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).cumsum(1)).sum(1)
    y = y.clip(0, 2)
    model = LogisticRegression().fit(x[:3000], y[:3000])
    cal = calibration.fit_calibration(y[3000:4500], model.predict_proba(x[3000:4500]), model.classes_)
    same = calibration.check_calibration(y[4500:], model.predict_proba(x[4500:]), cal)
    swapped = calibration.check_calibration(
        np.where(y[4500:] == 0, 1, np.where(y[4500:] == 1, 0, 2)), model.predict_proba(x[4500:]), cal
    )
    assert same is not None and not same.significant, same
    assert swapped.significant and swapped.cls in ("0", "1"), swapped
    old = calibration.Calibration.from_dict({k: v for k, v in cal.to_dict().items() if k != "counts"})
    assert old.counts is None
    assert not calibration.check_calibration(y[4500:], model.predict_proba(x[4500:]), old).significant


def test_rows_scored_exactly_zero_keep_their_own_rate():
    """A model that scores many rows exactly 0 (a random forest's pure leaves): those rows hold a
    few positives, the same in reference and batch. Neither CBPE's anchor at 0 nor a bin dropped
    for it may turn them into a concept change (review: 5 of 10 unchanged batches flagged)."""
    rng = np.random.default_rng(7)

    def draw(n):
        zero = rng.random(n) < 0.4
        q1 = np.where(zero, 0.0, rng.random(n))
        y = np.where(zero, rng.random(n) < 0.05, rng.random(n) < q1).astype(int)
        return y, np.column_stack([1 - q1, q1])

    cal = calibration.fit_calibration(*draw(2000), [0, 1])
    assert sum(cal.counts[0]) == 2000, (cal.x[0][:3], cal.counts[0][:3])  # no reference bin lost
    ps = [calibration.check_calibration(*draw(2000), cal).p_value for _ in range(10)]
    assert min(ps) > 0.001, ps
    moved = calibration.check_calibration(
        *(lambda y, q: (np.where(q[:, 1] == 0, rng.random(len(y)) < 0.3, y), q))(*draw(2000)), cal
    )
    assert moved.significant and moved.worst["score"] < 0.05, moved.worst  # the bin of the zeros
    assert 0 < moved.to_dict()["p_value"] < 1e-6  # small p-values survive the record (3 significant figures)
