"""The rolling-origin backtest behind candidate selection (core/backtest.py, core/backtest_compare.py):
which batches a window rule picks at an origin, fits shared across choices, and the leader rule."""

import numpy as np
import pandas as pd
import pytest

from ml_platform.core import backtest, training
from ml_platform.core import backtest_compare as bc
from ml_platform.settings import EstimatorConfig, ModelConfig

B = backtest.BATCH


def _cfg(**training_keys) -> ModelConfig:
    return ModelConfig.model_validate(
        {
            "landing_dir": "unused",
            "target": "y",
            "task": "classification",
            "features": {"x0": {"type": "numeric"}, "x1": {"type": "numeric"}},
            "estimator": {"name": "logistic_regression"},
            "training": {"newest_batches": 1, **training_keys},
        }
    )


def _frame(batches=("b0", "b1", "b2", "b3"), rows=200, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    out = []
    for b in batches:
        x = rng.normal(0, 1, (rows, 2))
        y = (rng.random(rows) < 1 / (1 + np.exp(-(2 * x[:, 0] - x[:, 1])))).astype(int)
        out.append(pd.DataFrame(x, columns=["x0", "x1"]).assign(y=y, **{B: b}))
    return pd.concat(out, ignore_index=True)


def test_a_window_rule_at_an_origin_sees_only_the_batches_before_it():
    cfg = _cfg(newest_batches=2)
    before = ["b0", "b1", "b2"]
    assert backtest.window_at("all", before, cfg, None) == ("b0", "b1", "b2")
    assert backtest.window_at("newest", before, cfg, None) == ("b1", "b2")
    assert backtest.window_at("regime", before, cfg, "b1") == ("b1", "b2")
    assert backtest.window_at("regime", before, cfg, "b3") == ()  # the regime had not begun
    order = ["b0", "b1", "b2", "b3", "b4"]
    assert backtest.origin_batches(order, 3) == ["b2", "b3"]  # + the holdout of b4
    assert backtest.origin_batches(order, 1) == []  # the holdout alone
    assert backtest.origin_batches(order[:3], 5) == ["b1"]  # b0 has nothing before it


def test_one_fit_per_distinct_window_serves_every_choice_and_scores_the_next_batch():
    cfg = _cfg()
    df = _frame()
    train, holdout = df[df[B] != "b3"], df[df[B] == "b3"]
    bt = backtest.Backtest(train, holdout, ["b0", "b1", "b2", "b3"], cfg.model_copy(), None)
    est = cfg.estimator
    pipe_all = training.fit(train, cfg)
    bt.score(0, "all", est, pipe_all)
    assert [o.batch for o in bt.origins] == ["b1", "b2"] and bt.fits == 2  # on [b0] and on [b0, b1]
    # newest 1 at origin b1 is [b0]: the fit "all" made there serves it
    bt.score(1, "newest", est, training.fit(train[train[B] == "b2"], cfg))
    assert bt.fits == 3  # only [b1] (origin b2) was new
    # the figure at b2 is a model of the batches before b2, scored on b2's rows
    ref = training.fit(train[train[B].isin(["b0", "b1"])], cfg)
    assert bt.origins[1].value(0) == pytest.approx(training.evaluate(ref, train[train[B] == "b2"], cfg)["roc_auc"])
    assert bt.origins[0].value(0) == bt.origins[0].value(1)  # the same fit
    assert bt.holdout.value(0) == pytest.approx(training.evaluate(pipe_all, holdout, cfg)["roc_auc"])


def _origins(values: dict[str, list[float]]) -> list[backtest.Origin]:
    """Origins whose choices' metrics are given (NaN: not scored there)."""
    out = []
    for b, vals in values.items():
        o = backtest.Origin(b, np.array([0, 1]))
        o.values = {i: v for i, v in enumerate(vals) if np.isfinite(v)}
        out.append(o)
    return out


def _scored(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    return np.column_stack([1 - p, p]), np.array([0, 1]), training.binary_auc(y == 1, p)


def test_the_leader_has_the_best_mean_and_a_recent_regime_needs_a_clear_lead_where_both_were_scored():
    nan = float("nan")
    cfg = _cfg()
    cfg = cfg.model_copy(update={"gate": cfg.gate.model_copy(update={"resamples": 200})})
    # choice 0 (all) leads the narrow choice 1 on the older batches; 1 leads on the holdout alone
    origins = _origins({"b2": [0.90, 0.80], "b3": [0.91, 0.82], "holdout": [0.88, 0.90]})
    assert bc.leader(origins, [0, 1], cfg) == 0
    assert bc.mean(origins, 1) == pytest.approx(0.84)
    # a regime (choice 2) scored on the holdout only: a clear lead there takes the lead, a small one does not
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 400)
    noise = rng.random(400)
    for weight, leads in ((0.9, True), (0.302, False)):  # the regime's signal; the leader's is 0.3
        origins = _origins({"b2": [0.90, 0.80, nan], "b3": [0.91, 0.82, nan], "holdout": [nan, nan, nan]})
        hold = origins[-1]
        for i, w in enumerate((0.3, 0.1, weight)):
            own = noise
            hold.outputs[i], hold.classes[i], hold.values[i] = _scored(y, np.clip(w * y + (1 - w) * own, 0, 1))
        hold.y = y
        lead = hold.values[2] - hold.values[0]
        assert 0 < lead and (lead > cfg.gate.max_regression) is leads, hold.values
        assert (bc.leader(origins, [0, 1, 2], cfg) == 2) is leads, (weight, hold.values)
    # error metrics: lower is better
    reg = ModelConfig.model_validate(
        {**_cfg().model_dump(exclude_none=True), "task": "regression", "estimator": {"name": "ridge"}}
    )
    assert reg.gate_metric == "rmse" and bc.leader(_origins({"b1": [0.3, 0.2]}), [0, 1], reg) == 1
    assert bc.leader(_origins({"b1": [nan, nan]}), [0, 1], cfg) is None


def test_the_paired_interval_resamples_rows_within_each_batch():
    cfg = _cfg()
    cfg = cfg.model_copy(update={"gate": cfg.gate.model_copy(update={"resamples": 200})})
    rng = np.random.default_rng(1)
    origins = []
    for b in ("b1", "b2"):
        y = rng.integers(0, 2, 300)
        good = np.clip(y * 0.6 + rng.random(300) * 0.4, 0, 1)  # ranks well
        bad = rng.random(300)  # ranks at random
        o = backtest.Origin(b, y)
        for i, p in enumerate((good, bad)):
            o.outputs[i], o.classes[i] = np.column_stack([1 - p, p]), np.array([0, 1])
            o.values[i] = training.binary_auc(y == 1, p)
        origins.append(o)
    c = bc.compare(origins, 0, 1, cfg)
    assert c.origins == ("b1", "b2") and c.delta == pytest.approx(bc.mean(origins, 0) - bc.mean(origins, 1))
    assert 0 < c.low <= c.delta <= c.high
    lo, hi = bc.interval(origins, 0, cfg)
    assert lo <= bc.mean(origins, 0) <= hi
    assert bc.compare(_origins({"b1": [0.9, float("nan")]}), 0, 1, cfg) is None


def test_backtest_batches_is_a_training_key_with_a_small_default():
    assert _cfg().training.backtest_batches == 3
    with pytest.raises(ValueError, match="backtest_batches"):
        _cfg(backtest_batches=0)
    assert EstimatorConfig(name="logistic_regression").label
