"""The statistical, fair and per-slice gate as plain functions: the paired bootstrap, the
comparison set, slices and their verdicts."""

import time

import numpy as np
import pandas as pd
import pytest

from ml_platform.core import bootstrap, comparison, gate, slices, training
from ml_platform.core.selection import BATCH, HOLDOUT, ROW

CLASSES = np.array([0, 1])


def _scores(n, seed, strength):
    """Labels and two-column probabilities whose ROC AUC grows with ``strength``."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    s = 1 / (1 + np.exp(-(strength * (2 * y - 1) + rng.normal(0, 1, n))))
    return y, np.c_[1 - s, s]


def _probs(y, strength, seed):
    rng = np.random.default_rng(seed)
    s = 1 / (1 + np.exp(-(strength * (2 * y - 1) + rng.normal(0, 1, len(y)))))
    return np.c_[1 - s, s]


@pytest.mark.parametrize("metric", ["roc_auc", "accuracy", "log_loss", "f1"])
def test_weighted_metrics_equal_sklearn_on_resampled_rows(metric):
    y, p = _scores(3000, 0, 0.8)
    p = np.round(p, 2)  # ties in the scores
    f = bootstrap.weighted_metric(metric, "classification", y, p, CLASSES)
    for w in next(bootstrap.resample_counts(len(y), 4, seed=1)).T:
        idx = np.repeat(np.arange(len(y)), w)
        want = training.classification_metrics(y[idx], p[idx], CLASSES)[metric]
        assert f(w[:, None])[0] == pytest.approx(want, abs=1e-9), metric


@pytest.mark.parametrize("metric", ["rmse", "mae", "r2"])
def test_weighted_regression_metrics_equal_sklearn(metric):
    rng = np.random.default_rng(0)
    y = rng.normal(5000, 800, 2000)
    pred = y + rng.normal(0, 300, 2000)
    f = bootstrap.weighted_metric(metric, "regression", y, pred)
    for w in next(bootstrap.resample_counts(len(y), 3, seed=2)).T:
        idx = np.repeat(np.arange(len(y)), w)
        assert f(w[:, None])[0] == pytest.approx(training.regression_metrics(y[idx], pred[idx])[metric], rel=1e-9)


def test_multiclass_auc_and_macro_f1_equal_sklearn():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 1500)
    p = rng.dirichlet([1, 1, 1], 1500)
    p[np.arange(1500), y] += 0.4
    p /= p.sum(axis=1, keepdims=True)
    classes = np.array([0, 1, 2])
    w = next(bootstrap.resample_counts(1500, 2, seed=0))[:, :1]
    idx = np.repeat(np.arange(1500), w[:, 0])
    want = training.classification_metrics(y[idx], p[idx], classes)
    for m in ("roc_auc", "f1"):
        assert bootstrap.weighted_metric(m, "classification", y, p, classes)(w)[0] == pytest.approx(want[m], abs=1e-9)


def test_paired_interval_points_the_right_way_and_is_deterministic():
    y, _ = _scores(2000, 0, 1.0)
    strong, weak = _probs(y, 1.2, 1), _probs(y, 0.5, 2)
    kw = dict(candidate_classes=CLASSES, champion_classes=CLASSES, resamples=500, seed=0)
    better = bootstrap.paired_bootstrap("roc_auc", "classification", y, strong, weak, **kw)
    worse = bootstrap.paired_bootstrap("roc_auc", "classification", y, weak, strong, **kw)
    print(better, worse, sep="\n")
    assert better.delta > 0 and 0 < better.ci_low < better.delta < better.ci_high
    assert worse.delta < 0 and worse.ci_low < worse.delta < worse.ci_high < 0
    assert worse.delta == pytest.approx(-better.delta) and worse.ci_high == pytest.approx(-better.ci_low)
    assert bootstrap.paired_bootstrap("roc_auc", "classification", y, strong, weak, **kw) == better
    # An error metric: lower RMSE is the better candidate, delta > 0.
    rng = np.random.default_rng(0)
    t = rng.normal(0, 10, 1000)
    reg = bootstrap.paired_bootstrap(
        "rmse", "regression", t, t + rng.normal(0, 1, 1000), t + rng.normal(0, 3, 1000), resamples=300
    )
    assert reg.delta > 0 and reg.ci_low > 0, reg


def test_paired_bootstrap_of_1000_auc_resamples_on_10k_rows_is_fast():
    y, _ = _scores(10_000, 0, 1.0)
    a, b = _probs(y, 1.0, 1), _probs(y, 0.9, 2)
    t0, c0 = time.perf_counter(), time.process_time()
    bootstrap.paired_bootstrap(
        "roc_auc", "classification", y, a, b, candidate_classes=CLASSES, champion_classes=CLASSES, resamples=1000
    )
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"1000 paired ROC AUC resamples, 10k rows: {wall:.2f} s wall, {cpu:.2f} s CPU")
    assert cpu < 3.0  # ~0.5 s on an idle core; generous for a loaded 2-core box


def _interval(delta, lo, hi, rows=500):
    return bootstrap.PairedInterval("roc_auc", rows, 0.8 + delta, 0.8, delta, lo, hi, 0.9, 1000, 0)


def test_bootstrap_verdict_against_the_margin():
    kw = dict(max_regression=0.01, min_rows=100, rows=500)
    ok = gate.not_worse_by_bootstrap(_interval(0.002, -0.008, 0.012), 3, **kw)
    assert ok.passed and "[-0.0080, +0.0120]" in ok.reason and "500 rows" in ok.reason, ok.reason
    # A wide interval: noise alone does not refuse by default; strict (non-inferiority) does.
    wide = _interval(-0.02, -0.05, 0.01)
    assert gate.not_worse_by_bootstrap(wide, 3, **kw).passed
    strict = gate.not_worse_by_bootstrap(wide, 3, strict=True, **kw)
    assert not strict.passed and "not shown" in strict.reason and strict.figures["method"] == "bootstrap_strict"
    assert gate.not_worse_by_bootstrap(_interval(0.002, -0.008, 0.012), 3, strict=True, **kw).passed
    # Shown worse than allowed: refused either way.
    worse = gate.not_worse_by_bootstrap(_interval(-0.05, -0.08, -0.02), 3, **kw)
    assert not worse.passed and "whole interval is below -0.01" in worse.reason and worse.figures["ci_high"] == -0.02
    first = gate.not_worse_by_bootstrap(None, None, max_regression=0.01, min_rows=100, rows=0)
    assert first.passed and "no champion" in first.reason


def test_too_few_rows_is_not_enough_evidence_and_the_champion_stays():
    v = gate.not_worse_by_bootstrap(
        _interval(0.1, 0.05, 0.15, rows=40),
        7,
        max_regression=0.01,
        min_rows=100,
        rows=40,
        note="40 of 300 holdout rows (260 trained on by v7, dropped)",
    )
    assert not v.passed and v.reason.startswith("not enough evidence: 40 comparison rows")
    assert "champion v7 stays" in v.reason and "260 trained on by v7" in v.reason, v.reason
    assert gate.too_few_rows(None, rows=0, min_rows=100, method="plain") is None


def _training_set():
    """Three batches of 10 rows; the champion's holdout was the last 2 rows of b2; the new
    training set's holdout spans the last 4 rows of b2 and the last 4 of b3."""
    df = pd.DataFrame(
        {
            BATCH: ["b1"] * 10 + ["b2"] * 10 + ["b3"] * 10,
            ROW: list(range(10)) * 3,
            "x": np.arange(30.0),
            "y": np.arange(30) % 2,
        }
    )
    return df


def test_the_comparison_set_excludes_the_rows_the_champion_trained_on():
    old = _training_set()[lambda d: d[BATCH] != "b3"].assign(**{HOLDOUT: False})
    old.loc[(old[BATCH] == "b2") & (old[ROW] >= 8), HOLDOUT] = True
    champion = comparison.trained_on(old, ["b1", "b2"], version=4)
    new = _training_set().assign(**{HOLDOUT: False})
    new.loc[(new[BATCH] == "b2") & (new[ROW] >= 6), HOLDOUT] = True
    new.loc[(new[BATCH] == "b3") & (new[ROW] >= 6), HOLDOUT] = True
    candidate = comparison.trained_on(new, ["b2", "b3"], version=5)
    cs = comparison.comparison_set(new[new[HOLDOUT]], [candidate, champion])
    kept = list(zip(cs.rows[BATCH], cs.rows[ROW]))
    # b2 rows 6-7 were champion training rows; 8-9 its own holdout: fair; all of b3 is new.
    assert kept == [("b2", 8), ("b2", 9), ("b3", 6), ("b3", 7), ("b3", 8), ("b3", 9)], kept
    assert cs.excluded == {5: 0, 4: 2} and "2 trained on by v4" in cs.note, cs.note
    # Without the champion's training set every row of its batches counts as trained on.
    blind = comparison.trained_on(None, ["b1", "b2"], version=4)
    cs = comparison.comparison_set(new[new[HOLDOUT]], [candidate, blind])
    assert set(cs.rows[BATCH]) == {"b3"} and len(cs.rows) == 4


def test_row_ids_are_rebuilt_for_old_training_sets():
    df = _training_set().drop(columns=[ROW])
    assert comparison.with_row_ids(df)[ROW].tolist() == list(range(10)) * 3
    with pytest.raises(ValueError, match="_row"):
        comparison.comparison_set(df, [])


def test_slices_name_the_failing_ones_with_figures():
    rng = np.random.default_rng(0)
    n = 1200
    df = pd.DataFrame({"contract": rng.choice(["monthly", "annual", "two_year"], n), "age": rng.uniform(18, 90, n)})
    df.loc[:9, "contract"] = None  # a tiny "missing" slice
    y = rng.integers(0, 2, n)
    champ = _probs(y, 1.0, 1)
    cand = _probs(y, 1.3, 2)
    monthly = (df["contract"] == "monthly").to_numpy()
    cand[monthly] = _probs(y[monthly], 0.05, 3)  # much worse on one slice
    results = [
        slices.judge_slice(
            label,
            m,
            metric="roc_auc",
            task="classification",
            y=y,
            candidate_outputs=cand,
            candidate_classes=CLASSES,
            champion_outputs=champ,
            champion_classes=CLASSES,
            threshold=0.6,
            max_regression=0.05,
            min_rows=50,
        )
        for label, m in slices.slice_masks(df, "contract", "categorical")
    ]
    v = gate.per_slice(results, 3, configured=1)
    print(v.reason)
    assert not v.passed and v.figures["failing"] == 1
    assert v.reason.startswith("1 of 3 judged slices fail: contract=monthly (")
    assert "< floor 0.6" in v.reason and "vs champion" in v.reason and "allowed 0.05" in v.reason
    assert "contract=missing: 10 rows < min_rows 50" in v.reason
    ages = slices.slice_masks(df, "age", "numeric", [30, 60])
    assert [label for label, _ in ages] == ["age < 30", "age in [30, 60)", "age >= 60"]
    assert sum(m.sum() for _, m in ages) == n
    assert gate.per_slice([], None, configured=0).passed


def test_judge_against_champion_follows_gate_comparison(settings):
    base = settings.models["churn"]
    y, _ = _scores(400, 5, 1.0)
    cand, champ = _probs(y, 0.9, 1), _probs(y, 1.0, 2)  # about equal: a wide interval around ~0

    def judge(comparison, rows=400):
        cfg = base.model_copy(update={"gate": base.gate.model_copy(update={"comparison": comparison})})
        return gate.judge_against_champion(
            cfg, y[:rows], cand[:rows], CLASSES, champ[:rows], CLASSES, 2, note="test rows"
        )

    boot, strict, plain = judge("bootstrap"), judge("bootstrap_strict"), judge("plain")
    print(boot.reason, strict.reason, plain.reason, sep="\n")
    assert boot.figures["method"] == "bootstrap" and boot.figures["ci_low"] < 0 < boot.figures["ci_high"]
    assert boot.passed and not strict.passed and plain.figures["method"] == "plain"
    assert plain.figures["delta"] == pytest.approx(boot.figures["delta"])
    few = judge("bootstrap", rows=60)
    assert not few.passed and few.reason.startswith("not enough evidence: 60 comparison rows (test rows)")
    first = gate.judge_against_champion(base, y, cand, CLASSES, None, None, None)
    assert first.passed and "no champion" in first.reason


def test_log_loss_of_a_forest_with_zero_probabilities_warns_nothing():
    """A forest's probabilities hold exact zeros; clipping them at 1e-7 made sklearn warn "y_prob
    values do not sum to one" into `ml-platform run`'s output. The figure is unchanged: the bootstrap's."""
    import warnings

    y = np.array([0, 1, 1, 0, 1])
    p = np.array([[1.0, 0.0], [0.2, 0.8], [0.0, 1.0], [0.6, 0.4], [0.5, 0.5]])
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        got = training.classification_metrics(y, p, CLASSES)["log_loss"]
    assert not [str(w.message) for w in seen]
    want = bootstrap.weighted_metric("log_loss", "classification", y, p, CLASSES)(np.ones((5, 1)))[0]
    assert got == pytest.approx(want, abs=1e-9)
