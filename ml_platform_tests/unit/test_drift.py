"""Unit tests for ml_platform.core.drift (synthetic numpy data, fast)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ml_platform.core.drift import compute_drift
from ml_platform.core.drift_chart import drift_bar_chart_png
from ml_platform.core.drift_reference import DriftReference, build_reference
from ml_platform.core.metric_drop import bootstrap_metric_drop
from ml_platform.settings import FeatureSpec

NUMERIC = ["x_norm", "x_lognorm", "x_int", "x_unif", "x_binary", "x_t3", "x_exp"]
CATEGORICAL = ["plan", "region", "code"]
FEATURES = {c: FeatureSpec(type="numeric") for c in NUMERIC}
FEATURES.update({c: FeatureSpec(type="categorical") for c in CATEGORICAL})
PLAN_P = [0.5, 0.3, 0.15, 0.05]
CODE_P = np.r_[np.full(30, 0.9 / 30), np.full(60, 0.1 / 60)]  # 30 common + 60 rare codes
CODES = np.array([str(i) for i in range(90)], dtype=object)
PLANS = np.array(["basic", "plus", "pro", "max"], dtype=object)


SD = {
    "x_norm": 2.0,
    "x_lognorm": float(np.sqrt((np.e - 1) * np.e)),
    "x_int": float(np.sqrt(35 / 12)),
    "x_unif": float(np.sqrt(4 / 12)),
    "x_binary": 0.4,
    "x_t3": float(np.sqrt(3.0)),
    "x_exp": 1.0,
}


def make_batch(
    n: int, rng: np.random.Generator, *, plan_p=PLAN_P, shift=(), shift_sd=0.5, with_score: bool = False
) -> pd.DataFrame:
    df = pd.DataFrame(
        {
            "x_norm": rng.normal(10.0, 2.0, n),
            "x_lognorm": rng.lognormal(0.0, 1.0, n),
            "x_int": rng.integers(0, 6, n).astype(float),
            "x_unif": rng.uniform(-1, 1, n),
            "x_binary": (rng.random(n) < 0.2).astype(float),
            "x_t3": rng.standard_t(3, n),
            "x_exp": rng.exponential(1.0, n),
            "plan": PLANS[rng.choice(4, n, p=plan_p)],
            "region": rng.integers(0, 8, n),  # integer codes
            "code": CODES[rng.choice(90, n, p=CODE_P)],  # many rare values
        }
    )
    for col in shift:  # + shift_sd reference standard deviations
        df[col] = df[col] + shift_sd * SD[col]
    if with_score:
        df["score"] = 1 / (1 + np.exp(-(df["x_norm"] - 10) / 2))
    return df


@pytest.fixture(scope="module")
def reference() -> DriftReference:
    rng = np.random.default_rng(12345)
    return build_reference(make_batch(20_000, rng, with_score=True), FEATURES, score_column="score", seed=1)


def test_stable_batches_no_false_alarms(reference):
    rng = np.random.default_rng(7)
    sizes = [200] * 12 + [1_000] * 12 + [10_000] * 8 + [100_000] * 4
    for n in sizes:
        res = compute_drift(reference, make_batch(n, rng, with_score=True))
        drifted = [
            (f.feature, f.value, f.threshold, f.distance, f.distance_threshold) for f in res.features if f.drifted
        ]
        assert res.verdict == "stable", (n, drifted)
        assert not drifted, (n, drifted)
        assert res.score is not None and not res.score.drifted
        assert res.share_drifted == 0.0


def test_stable_batches_other_references_no_false_alarms():
    # Different reference draws and sizes (incl. a small one with many rare categories).
    for seed, ref_rows in [(1, 2_000), (2, 5_000), (3, 50_000)]:
        rng = np.random.default_rng(seed)
        ref = build_reference(make_batch(ref_rows, rng), FEATURES, seed=seed)
        for n in [200, 1_000, 10_000, 30_000] * 3:
            res = compute_drift(ref, make_batch(n, rng))
            assert res.verdict == "stable"
            assert not [f.feature for f in res.features if f.drifted], (ref_rows, n)


@pytest.mark.parametrize("n,shift_sd", [(200, 0.8), (1_000, 0.5), (10_000, 0.5), (100_000, 0.5)])
def test_numeric_shift_detected_and_named(reference, n, shift_sd):
    # 200 rows: a 0.5 sd shift is flagged per feature with ~90% power only (the sample
    # mean alone moves by 0.07 sd), hence the larger shift there.
    rng = np.random.default_rng(n)
    shifted = ["x_norm", "x_lognorm", "x_t3"]  # 30% of the 10 features
    res = compute_drift(reference, make_batch(n, rng, shift=shifted, shift_sd=shift_sd))
    assert res.verdict == "drifted"
    assert set(shifted) <= set(res.drifted_features)
    assert res.share_drifted >= 0.3
    by_name = {f.feature: f for f in res.features}
    assert by_name["x_norm"].kind == "numeric" and by_name["x_norm"].statistic == "psi"
    assert by_name["x_norm"].distance > by_name["x_norm"].distance_threshold


def test_small_shift_in_one_feature_flags_feature_not_batch(reference):
    rng = np.random.default_rng(3)
    res = compute_drift(reference, make_batch(10_000, rng, shift=["x_unif"]))
    assert res.drifted_features == ["x_unif"]
    assert res.verdict == "stable"  # 1/10 < drifted_share
    assert compute_drift(reference, make_batch(10_000, rng, shift=["x_unif"]), drifted_share=0.1).verdict == "drifted"


@pytest.mark.parametrize("n", [1_000, 10_000])
def test_categorical_mix_change_detected(reference, n):
    rng = np.random.default_rng(11)
    res = compute_drift(reference, make_batch(n, rng, plan_p=[0.25, 0.25, 0.25, 0.25]), drifted_share=0.1)
    plan = next(f for f in res.features if f.feature == "plan")
    assert plan.kind == "categorical" and plan.statistic == "jensen_shannon"
    assert plan.drifted and plan.value > plan.threshold
    assert plan.distance is None and plan.unseen == 0
    assert res.verdict == "drifted"


def test_unseen_categories_counted_and_drifted(reference):
    rng = np.random.default_rng(5)
    df = make_batch(5_000, rng)
    df.loc[:999, "plan"] = "enterprise"  # 20% never-seen category
    res = compute_drift(reference, df)
    plan = next(f for f in res.features if f.feature == "plan")
    assert plan.unseen == 1_000
    assert plan.drifted


def test_integer_codes_and_strings_are_the_same_category(reference):
    rng = np.random.default_rng(8)
    df = make_batch(5_000, rng)
    as_str = df.assign(region=df["region"].astype(str))
    as_float = df.assign(region=df["region"].astype(float))
    for batch in (df, as_str, as_float):
        region = next(f for f in compute_drift(reference, batch).features if f.feature == "region")
        assert region.unseen == 0 and not region.drifted


def test_not_enough_data(reference):
    rng = np.random.default_rng(0)
    res = compute_drift(reference, make_batch(150, rng), min_rows=200)
    assert res.verdict == "not enough data"
    assert res.rows == 150
    assert res.features == [] and res.share_drifted == 0.0


def test_nans_and_missing_columns_do_not_crash(reference):
    rng = np.random.default_rng(9)
    df = make_batch(2_000, rng)
    df.loc[::3, "x_norm"] = np.nan
    df.loc[::5, "x_exp"] = np.inf
    df.loc[::4, "plan"] = None
    df["x_unif"] = np.nan  # entirely null
    df = df.drop(columns=["region"])  # missing
    res = compute_drift(reference, df)
    by_name = {f.feature: f for f in res.features}
    assert res.verdict == "stable"
    assert by_name["x_norm"].null_rate == pytest.approx(667 / 2000)
    assert not by_name["x_norm"].drifted
    assert by_name["plan"].null_rate == pytest.approx(0.25)
    assert by_name["x_unif"].rows == 0 and not by_name["x_unif"].drifted
    assert by_name["region"].rows == 0 and not by_name["region"].drifted
    json.dumps(res.to_dict(), allow_nan=False)  # NaN -> None
    assert len(res.table_rows()) == len(FEATURES)  # batch has no score column
    assert res.score is None


def test_score_drift_reported_separately(reference):
    rng = np.random.default_rng(4)
    df = make_batch(5_000, rng, with_score=True)
    df["score"] = np.clip(df["score"] + 0.2, 0, 1)
    res = compute_drift(reference, df)
    assert res.score is not None and res.score.kind == "score" and res.score.drifted
    assert res.share_drifted == 0.0 and res.verdict == "stable"
    rows = res.table_rows()
    assert rows[-1]["kind"] == "score" and rows[-1]["drifted"] is True


def test_reference_round_trip(reference):
    d = json.loads(json.dumps(reference.to_dict(), allow_nan=False))
    again = DriftReference.from_dict(d)
    assert again.to_dict() == reference.to_dict()
    rng = np.random.default_rng(21)
    batch = make_batch(3_000, rng, shift=["x_norm"], with_score=True)
    assert compute_drift(again, batch).to_dict() == compute_drift(reference, batch).to_dict()


def test_thresholds_shrink_with_batch_size_down_to_floor(reference):
    ref = reference.features["x_norm"]
    small, large, huge = ref.thresholds(200), ref.thresholds(10_000), ref.thresholds(10**8)
    assert small[0] > large[0] >= huge[0] == 0.02
    assert small[1] > large[1] >= huge[1] == 0.05
    plan = reference.features["plan"]
    assert plan.threshold(200) > plan.threshold(10_000) >= plan.threshold(10**8) == 0.02


def test_negligible_shift_on_huge_batch_not_flagged(reference):
    rng = np.random.default_rng(17)
    res = compute_drift(reference, make_batch(100_000, rng, shift=["x_norm"], shift_sd=0.04))
    assert res.drifted_features == []


def test_constant_reference_column():
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"k": np.full(2_000, 3.0), "x": rng.normal(size=2_000)})
    feats = {"k": FeatureSpec(type="numeric"), "x": FeatureSpec(type="numeric")}
    ref = build_reference(df, feats)
    same = df.sample(500, random_state=1)
    assert compute_drift(ref, same).drifted_features == []
    assert compute_drift(ref, same.assign(k=4.0)).drifted_features == ["k"]
    assert compute_drift(ref, same.assign(k=2.0)).drifted_features == ["k"]


def test_build_reference_errors():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="missing"):
        build_reference(make_batch(500, rng).drop(columns=["plan"]), FEATURES)
    with pytest.raises(ValueError, match="non-null"):
        df = make_batch(500, rng)
        df["x_norm"] = np.nan
        build_reference(df, FEATURES)


def test_png_chart(reference):
    rng = np.random.default_rng(2)
    res = compute_drift(reference, make_batch(2_000, rng, shift=["x_norm"], with_score=True))
    png = drift_bar_chart_png(res)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1_000
    empty = compute_drift(reference, make_batch(10, rng))
    assert drift_bar_chart_png(empty)[:8] == b"\x89PNG\r\n\x1a\n"


def _auc(y, s):
    """Rank-based ROC AUC (continuous scores, no ties) - much faster than sklearn's."""
    y = np.asarray(y).astype(bool)
    n1 = int(y.sum())
    n0 = y.size - n1
    if n1 == 0 or n0 == 0:
        raise ValueError("only one class")
    ranks = np.empty(y.size)
    ranks[np.argsort(s, kind="stable")] = np.arange(1, y.size + 1)
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def test_bootstrap_detects_significant_drop():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 4_000)
    good = y + rng.normal(0, 0.8, y.size)  # AUC ~ 0.81
    baseline = _auc(y, good)
    corrupted = good.copy()
    corrupted[: y.size // 2] = rng.normal(0.5, 0.8, y.size // 2)  # half the scores are noise
    out = bootstrap_metric_drop(y, corrupted, metric=_auc, baseline=baseline)
    assert out["significant"] and out["drop"] > 0.05
    assert out["ci_low"] <= out["value"] <= out["ci_high"] < baseline


def test_bootstrap_no_drop_on_same_distribution():
    # the baseline must itself be precise (a large holdout), else its own noise shows up
    rng = np.random.default_rng(1)
    y0 = rng.integers(0, 2, 200_000)
    baseline = _auc(y0, y0 + rng.normal(0, 0.8, y0.size))
    for seed in range(5):
        r = np.random.default_rng(100 + seed)
        y = r.integers(0, 2, 2_000)
        out = bootstrap_metric_drop(y, y + r.normal(0, 0.8, y.size), metric=_auc, baseline=baseline, seed=seed)
        assert not out["significant"], out
        assert out["ci_low"] <= baseline <= out["ci_high"] or abs(out["drop"]) < 0.03


def test_bootstrap_lower_is_better_metric():
    rng = np.random.default_rng(3)
    y = rng.normal(size=3_000)
    rmse = lambda t, p: float(np.sqrt(np.mean((t - p) ** 2)))  # noqa: E731
    worse = bootstrap_metric_drop(y, y + rng.normal(0, 1.5, y.size), metric=rmse, baseline=1.0, higher_is_better=False)
    assert worse["significant"] and worse["drop"] > 0.3
    same = bootstrap_metric_drop(y, y + rng.normal(0, 1.0, y.size), metric=rmse, baseline=1.0, higher_is_better=False)
    assert not same["significant"]


@pytest.mark.parametrize("n, decimals, classes", [(7, None, [0, 1]), (250, 1, [0, 1]), (2_000, 2, ["no", "yes"])])
def test_bootstrap_all_resamples_at_once_is_the_same_to_the_last_bit(n, decimals, classes):
    """estimate.measure's ROC AUC bootstrap from resample counts (bootstrap.weighted_metric): the
    same resamples, the same values as one rank-based AUC per resample (ties, one-class resamples)."""
    from ml_platform.core.bootstrap import weighted_metric
    from ml_platform.core.training import metric_function

    rng = np.random.default_rng(n)
    y = np.asarray(classes, dtype=object)[(rng.random(n) < 0.3).astype(int)]
    p = rng.random(n) if decimals is None else np.round(rng.random(n), decimals)
    out = np.column_stack([1 - p, p])
    kw = {"metric": metric_function("roc_auc", "classification", classes), "baseline": 0.7, "seed": 3}
    fast = bootstrap_metric_drop(y, out, weighted=weighted_metric("roc_auc", "classification", y, out, classes), **kw)
    slow = bootstrap_metric_drop(y, out, **kw)
    assert fast == slow or (np.isnan(fast["ci_low"]) and fast["n_boot"] == slow["n_boot"] == 0)
