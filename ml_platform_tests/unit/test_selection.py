"""Candidate selection (core/selection.py): windows x estimators judged by a rolling-origin backtest
whose newest origin is the holdout of the newest rows, the widest window kept unless a narrower one
wins clearly, no candidate trained on a holdout row; its config keys."""

import numpy as np
import pandas as pd
import pytest

from ml_platform.core import selection, training
from ml_platform.core.batch_record import BatchRecord
from ml_platform.core.simulate import generate_batch
from ml_platform.settings import ConfigError, load_settings
from ml_platform_tests.conftest import write_config

B = selection.BATCH


def _cfg(tmp_path, extra=""):
    write_config(tmp_path, extra=extra)
    return load_settings(tmp_path / "ml_platform.yaml").models["churn"]


def _training_set(cfg, sizes=(1500, 1500, 1500, 1500, 1500), drift_from=3):
    frames = []
    for i, n in enumerate(sizes):
        df = generate_batch(
            n,
            seed=40 + i,
            drift=1.0 if i >= drift_from else 0.0,
            start_id=i * 100_000,
            start_time=pd.Timestamp("2026-01-01", tz="UTC") + pd.Timedelta(days=i),
        )
        frames.append(df.assign(**{B: f"b{i}", selection.ROW: np.arange(n)}))
    df = pd.concat(frames, ignore_index=True)
    df[selection.HOLDOUT] = selection.mark_holdout(df, cfg)
    return df


def _records(verdicts):
    return [BatchRecord(f"b{i}", status="validated", drift={"verdict": v}) for i, v in enumerate(verdicts)]


def test_regime_start_is_the_trailing_run_of_shifted_batches():
    assert selection.regime_start(_records(["stable", "stable", "stable", "drifted", "drifted"])) == "b3"
    assert selection.regime_start(_records(["drifted", "stable", "drifted", "stable"])) is None
    recs = _records(["stable", "stable", "stable"])
    recs[2].performance = {"significant": True}  # a significant drop is a shift too
    assert selection.regime_start(recs) == "b2"
    recs.append(BatchRecord("bad", status="failed"))  # failed batches are skipped over
    assert selection.regime_start(recs) == "b2"
    recs.append(BatchRecord("b4", status="validated", drift={"verdict": "stable"}))
    assert selection.regime_start(recs) is None
    assert selection.regime_start(recs, upto="bad") == "b2"  # as of the training set's newest batch
    # did the regime begin with input drift? (then the backtest scores it on the holdout alone)
    recs = _records(["stable", "drifted", "stable"])
    assert selection.regime_drifted(recs, "b1") and not selection.regime_drifted(recs, "b2")
    assert not selection.regime_drifted(recs, None)


def test_the_holdout_is_the_newest_rows_of_the_newest_batch(tmp_path):
    cfg = _cfg(tmp_path)
    df = _training_set(cfg)
    hold = df[df[selection.HOLDOUT]]
    assert set(hold[B]) == {"b4"}, set(hold[B])
    assert len(hold) == 300  # 20 % of 1500
    # newest by event_time within that batch
    ts = pd.to_datetime(df.loc[df[B] == "b4", "event_time"])
    assert pd.to_datetime(hold["event_time"]).min() >= ts.quantile(0.79)


def test_a_small_newest_batch_pulls_the_holdout_back_into_earlier_batches(tmp_path):
    cfg = _cfg(tmp_path)  # min_holdout_rows 200: 20 % of 500 rows is not enough
    df = _training_set(cfg, sizes=(1500, 1500, 500))
    assert selection.holdout_pool([("b0", 1500), ("b1", 1500), ("b2", 500)], cfg) == ["b2", "b1"]
    assert set(df.loc[df[selection.HOLDOUT], B]) <= {"b1", "b2"}
    assert df[selection.HOLDOUT].sum() == 400


def test_windows_are_configured_deduplicated_and_the_regime_needs_rows(tmp_path):
    cfg = _cfg(tmp_path)
    batches = [f"b{i}" for i in range(5)]
    rows = {b: 1200 for b in batches}
    ws = selection.candidate_windows(batches, rows, cfg, "b3")
    assert [(w.kind, w.batches) for w in ws] == [
        ("all", tuple(batches)),
        ("newest", ("b2", "b3", "b4")),
        ("regime", ("b3", "b4")),
    ]
    assert [w.kind for w in selection.candidate_windows(batches[:3], rows, cfg, None)] == ["all"]  # newest 3 == all
    assert [w.kind for w in selection.candidate_windows(batches, {**rows, "b4": 0}, cfg, "b4")] == ["all", "newest"]
    off = _cfg(tmp_path, "training: {windows: [regime, newest], newest_batches: 1}\n")
    assert [w.kind for w in selection.candidate_windows(batches, rows, off, "b3")] == ["regime", "newest"]


def test_select_fits_windows_times_estimators_and_registers_the_best(tmp_path):
    cfg = _cfg(
        tmp_path,
        "estimators: [{name: hist_gradient_boosting}, {name: logistic_regression, "
        "params: {C: 0.5}}]\ntraining: {min_regime_rows: 500}\n",
    )
    df = _training_set(cfg)
    train, holdout = df[~df[selection.HOLDOUT]], df[df[selection.HOLDOUT]]
    windows = selection.candidate_windows([f"b{i}" for i in range(5)], train[B].value_counts().to_dict(), cfg, "b3")
    sel = selection.select(train, holdout, cfg, windows, "b3")
    assert [(t.window.kind, t.estimator.name) for t in sel.trials] == [
        ("all", "hist_gradient_boosting"),
        ("all", "logistic_regression"),
        ("newest", "hist_gradient_boosting"),
        ("newest", "logistic_regression"),
        ("regime", "hist_gradient_boosting"),
        ("regime", "logistic_regression"),
    ]
    aucs = [t.metrics["roc_auc"] for t in sel.trials]
    print("holdout roc_auc per candidate:", dict(zip((t.name for t in sel.trials), np.round(aucs, 4))))
    # every choice was scored on b2, b3 and the holdout; the regime (since b3, 2 batches) before it
    # began as the newest 2 batches: at b2 that is [b0, b1], the same fit as all there
    assert [list(t.backtest) for t in sel.trials] == [["b2", "b3", "holdout"]] * 6
    assert sel.trials[4].backtest["b2"] == sel.trials[0].backtest["b2"]
    assert all(t.backtest["holdout"] == pytest.approx(t.metrics["roc_auc"]) for t in sel.trials)
    assert sel.trials[sel.top].backtest_mean == max(t.backtest_mean for t in sel.trials)
    lo, hi = sel.winner.backtest_interval
    assert lo <= sel.winner.backtest_mean <= hi
    # the widest window, unless a narrower one won clearly (the note says which)
    if sel.winner.window.kind != "all":
        assert "preferred to the widest window" in sel.note, sel.note
    assert sel.best == sel.top or "prefer_more_data" in sel.note, sel.note
    assert len(set(np.round(aucs, 6))) > 1, "the candidates should differ"
    # Every candidate's figure is its own model on the shared holdout, recomputed here.
    w = sel.winner
    assert training.evaluate(w.pipe, holdout, cfg.model_copy(update={"estimator": w.estimator}))[
        "roc_auc"
    ] == pytest.approx(w.metrics["roc_auc"])
    # No candidate trained on a holdout row: its training rows are its window's batches minus the holdout.
    held = set(zip(holdout[B], holdout[selection.ROW]))
    for t in sel.trials:
        rows = train[train[B].isin(t.window.batches)]
        assert t.train_rows == len(rows) and not held & set(zip(rows[B], rows[selection.ROW]))
    assert sel.trials[4].train_rows == int(((df[B] == "b3") | (df[B] == "b4")).sum()) - len(holdout)
    table = selection.table(sel)
    assert list(table["winner"]).count(True) == 1 and len(table) == 6


def test_select_refuses_training_rows_from_the_holdout(tmp_path):
    cfg = _cfg(tmp_path)
    df = _training_set(cfg, sizes=(1000, 1000))
    with pytest.raises(ValueError, match="holdout rows"):
        selection.select(df, df[df[selection.HOLDOUT]], cfg, [selection.Window("all", "all", ("b0", "b1"))])


def test_the_search_adds_budget_settings_on_the_best_window(tmp_path):
    cfg = _cfg(
        tmp_path,
        "estimator: {name: hist_gradient_boosting, params: {max_iter: 30}}\n"
        "training: {search_budget: 2, windows: [all, newest], newest_batches: 1}\n",
    )
    df = _training_set(cfg, sizes=(1000, 1000, 1000), drift_from=99)
    train, holdout = df[~df[selection.HOLDOUT]], df[df[selection.HOLDOUT]]
    windows = selection.candidate_windows(["b0", "b1", "b2"], train[B].value_counts().to_dict(), cfg, None)
    sel = selection.select(train, holdout, cfg, windows)
    searched = [t for t in sel.trials if t.search]
    assert len(sel.trials) == 4 and len(searched) == 2
    # on the window the rule chose among the first candidates: one concept, so the widest
    assert all(t.window.kind == "all" and t.estimator.params["max_iter"] == 30 for t in searched)
    assert len({repr(sorted(t.estimator.params.items())) for t in sel.trials}) == 3
    assert sel.trials[sel.top].backtest_mean == max(t.backtest_mean for t in sel.trials)
    assert sel.origins == ("b1", "holdout")  # b0 has nothing before it


def test_more_data_wins_a_tie_and_a_clear_lead_keeps_the_narrow_window(tmp_path):
    """training.prefer_more_data: the widest window is registered unless a narrower one beats it by
    more than gate.max_regression, its paired interval above 0, on 2+ batches where their fits
    differ; after a real concept change the regime's lead is that clear and the regime wins."""
    cfg = _cfg(tmp_path, "training: {windows: [all, newest], newest_batches: 1}\ngate: {max_regression: 0.05}\n")
    df = _training_set(cfg, sizes=(1000, 1000, 1000), drift_from=99)  # one concept: more data cannot hurt
    train, holdout = df[~df[selection.HOLDOUT]], df[df[selection.HOLDOUT]]
    windows = selection.candidate_windows(["b0", "b1", "b2"], train[B].value_counts().to_dict(), cfg, None)
    sel = selection.select(train, holdout, cfg, windows)
    print("stable:", [(t.name, round(t.metrics["roc_auc"], 4)) for t in sel.trials], sel.note)
    assert sel.winner.window.kind == "all", sel.note
    if sel.top != sel.best:
        assert "kept over the backtest's best" in sel.note and "prefer_more_data" in sel.note, sel.note
    off = selection.select(
        train,
        holdout,
        cfg.model_copy(update={"training": cfg.training.model_copy(update={"prefer_more_data": False})}),
        windows,
    )
    assert off.best == off.top and off.note == ""

    cfg = _cfg(tmp_path, "training: {min_regime_rows: 500}\n")
    df = _training_set(cfg)  # the concept changes at b3
    train, holdout = df[~df[selection.HOLDOUT]], df[df[selection.HOLDOUT]]
    windows = selection.candidate_windows([f"b{i}" for i in range(5)], train[B].value_counts().to_dict(), cfg, "b3")
    sel = selection.select(train, holdout, cfg, windows, "b3")
    print("drifted:", [(t.name, round(t.metrics["roc_auc"], 4)) for t in sel.trials], sel.note)
    assert sel.winner.window.kind == "regime" and sel.best == sel.top, sel.note


@pytest.mark.parametrize(
    "extra, expected",
    [
        (
            "estimator: {name: random_forest}\nestimators: [{name: hist_gradient_boosting}]\n",
            "models.churn.estimators: give either estimator or estimators, not both",
        ),
        ("estimators: [{name: ridge}]\n", "models.churn.estimators.0.name: estimator ridge needs task: regression"),
        (
            "estimators: [{name: random_forest}, {name: hist_gradient_boosting, params: {max_dept: 3}}]\n",
            "models.churn.estimators.1.params: unknown parameter(s) 'max_dept'",
        ),
        ("estimators: []\n", "models.churn.estimators:"),
        (
            "training: {windows: [all, everything]}\n",
            "models.churn.training.windows.1: expected 'all', 'newest' or 'regime'",
        ),
        ("training: {windows: [all, all]}\n", "models.churn.training.windows: expected each window at most once"),
        ("training: {search_budget: -1}\n", "models.churn.training.search_budget:"),
        ("training: {newest_batches: 0}\n", "models.churn.training.newest_batches:"),
    ],
)
def test_bad_selection_keys_fail_at_load_naming_the_key(tmp_path, extra, expected):
    write_config(tmp_path, extra=extra)
    with pytest.raises(ConfigError) as e:
        load_settings(tmp_path / "ml_platform.yaml")
    msg = str(e.value)
    assert expected in msg and "\n" not in msg, msg


def test_estimators_list_and_the_single_estimator_key(tmp_path):
    assert [e.name for e in _cfg(tmp_path).estimator_list] == ["hist_gradient_boosting"]
    cfg = _cfg(tmp_path, "estimators: [{name: random_forest}, {name: logistic_regression}]\n")
    assert [e.name for e in cfg.estimator_list] == ["random_forest", "logistic_regression"]
