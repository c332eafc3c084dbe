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
    # ... unless its length is given: before it began, the regime rule is "the newest as many batches"
    assert backtest.window_at("regime", before, cfg, "b3", regime_batches=2) == ("b1", "b2")
    assert backtest.window_at("regime", before, cfg, "b1", regime_batches=2) == ("b1", "b2")
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


def _choices(rng, signal: dict[str, list[float]], same: dict[str, set[int]] | None = None) -> list[backtest.Origin]:
    """Origins of 400 rows where choice i's scores carry ``signal[batch][i]`` of the label (the rest
    noise of its own); the choices in ``same[batch]`` share one fit there (outputs and fit key)."""
    out = []
    for b, weights in signal.items():
        o = backtest.Origin(b, rng.integers(0, 2, 400))
        shared = (same or {}).get(b, set())
        noise = {i: rng.random(400) for i in range(len(weights))}
        for i in range(len(weights)):
            j = min(shared) if i in shared else i
            p = np.clip(weights[j] * o.y + (1 - weights[j]) * noise[j], 0, 1)
            o.outputs[i], o.classes[i], o.values[i] = _scored(o.y, p)
            o.fits[i] = (b, j)
        out.append(o)
    return out


def test_the_widest_window_is_kept_unless_a_narrower_one_wins_clearly_over_several_batches():
    """training.prefer_more_data (issue 22): choice 0 is the widest window (most rows), 1 narrower.
    A lead on the holdout alone, where the rules picked the same batches on the older origins, is
    not evidence over several batches; a lead on 2+ batches where the fits differ, above
    gate.max_regression or with its paired interval above 0, is."""
    cfg = _cfg()
    cfg = cfg.model_copy(update={"gate": cfg.gate.model_copy(update={"resamples": 200})})
    rows = {0: 5000, 1: 1500}
    rng = np.random.default_rng(5)
    # early in a stream: newest == all on b2 and b3; the narrow one leads on the holdout by a lot
    origins = _choices(rng, {"b2": [0.3, 0.3], "b3": [0.3, 0.3], "holdout": [0.2, 0.6]}, {"b2": {0, 1}, "b3": {0, 1}})
    assert bc.leader(origins, [0, 1], cfg) == 1  # the best mean ...
    assert [o.batch for o in bc.differing(origins, 0, 1)] == ["holdout"]
    assert bc.prefer_widest(origins, [0, 1], rows, cfg) == (0, None)  # ... but on one batch of rows
    # the narrow window leads on b3 and the holdout, both fitted differently: a changed concept
    origins = _choices(rng, {"b2": [0.3, 0.3], "b3": [0.3, 0.5], "holdout": [0.2, 0.6]}, {"b2": {0, 1}})
    best, c = bc.prefer_widest(origins, [0, 1], rows, cfg)
    assert best == 1 and c.origins == ("b3", "holdout") and c.low > 0 and c.delta > cfg.gate.max_regression
    # as good (a lead within gate.max_regression, its interval reaching 0): the widest
    origins = _choices(rng, {"b2": [0.3, 0.3], "b3": [0.3, 0.3], "holdout": [0.3, 0.3]})
    best, _ = bc.prefer_widest(origins, [0, 1], rows, cfg)
    assert best == 0 and bc.compare(origins, 1, 0, cfg).low <= 0
    # a regime that began with input drift is scored on the holdout alone: a lead above
    # gate.max_regression there suffices (the demo's sudden change), a small one does not
    for weights, wins in (([0.2, 0.6], True), ([0.3, 0.31], False)):
        origins = _choices(rng, {"b2": [0.3, 0.3], "b3": [0.3, 0.3], "holdout": weights})
        for o in origins[:2]:
            del o.values[1]  # not scored before it began
        assert bc.prefer_widest(origins, [0, 1], rows, cfg)[0] == (1 if wins else 0)
    # training.backtest_batches: 1 (the holdout alone): a lead shown there suffices
    one = cfg.model_copy(update={"training": cfg.training.model_copy(update={"backtest_batches": 1})})
    origins = _choices(rng, {"holdout": [0.2, 0.6]})
    assert bc.prefer_widest(origins, [0, 1], rows, cfg)[0] == 0 and bc.prefer_widest(origins, [0, 1], rows, one)[0] == 1


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


def test_the_figures_say_what_they_are():
    """The train log names the training rows as such (it said "on the holdout (5600 rows)"), and
    status shows the backtest's mean and its interval, not the per-batch series' last value (the
    holdout's 0.7341 read as `backtest_roc_auc` below its own `backtest_roc_auc_low` 0.7385)."""
    from ml_platform.core import selection
    from ml_platform.resources.registry_view import summary_metrics

    t = selection.Trial(
        selection.Window("all", "all 1 batch", ("b1",)),
        EstimatorConfig(name="logistic_regression"),
        {"roc_auc": 0.7341},
        train_rows=5600,
        fit_seconds=0.1,
        backtest={"b1": 0.7943, "holdout": 0.7341},
    )
    assert "roc_auc 0.7341 on the holdout (trained on 5600 rows in 0.1 s)" in selection._figure(t, "roc_auc")
    latest = {  # MLflow's latest values of v1's run (the tester's store)
        "holdout_roc_auc": 0.7341,
        "backtest_roc_auc": 0.7341,  # step 1 of [0.7943, 0.7341]
        "backtest_roc_auc_mean": 0.7642,
        "backtest_roc_auc_low": 0.7385,
        "backtest_roc_auc_high": 0.7867,
    }
    shown = summary_metrics(latest)
    assert shown == {
        "roc_auc": 0.7341,
        "backtest_roc_auc_mean": 0.7642,
        "backtest_roc_auc_low": 0.7385,
        "backtest_roc_auc_high": 0.7867,
    }
    assert shown["backtest_roc_auc_low"] <= shown["backtest_roc_auc_mean"] <= shown["backtest_roc_auc_high"]
