"""The challenger check (core/challenger.py) and its trigger (core/policy): a refit on the labelled
batches before a batch, scored on it next to the champion, retrains when its gain's lower bound
reaches retrain.challenger_min_gain; a refit that only repeats the champion does not."""

import numpy as np
import pandas as pd

from ml_platform.core import challenger, training
from ml_platform.core.batch_record import BatchRecord
from ml_platform.core.frames import model_inputs
from ml_platform.core.policy import decide
from ml_platform.settings import ModelConfig


def _cfg(**retrain) -> ModelConfig:
    return ModelConfig.model_validate(
        {
            "landing_dir": "unused",
            "target": "y",
            "task": "classification",
            "features": {f"x{j}": {"type": "numeric"} for j in range(3)},
            "estimator": {"name": "hist_gradient_boosting", "params": {"max_iter": 40}},
            "retrain": retrain,
        }
    )


def _batch(n, rng, slope):
    """P(y) moves with ``slope`` on x0: a relationship that moves a little batch by batch."""
    x = rng.normal(size=(n, 3))
    logit = slope * x[:, 0] - 0.8 * x[:, 1] + 0.5 * np.sin(2 * x[:, 2])
    return pd.DataFrame(x, columns=["x0", "x1", "x2"]).assign(y=(rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int))


def _check(cfg, champion_rows, prior, batch):
    champ = training.fit(champion_rows, cfg)
    out = champ.predict_proba(model_inputs(batch, cfg))
    return challenger.check(prior, batch, out, champ.classes_, cfg, train_batches=3)


def test_a_moved_relationship_pays_and_an_unchanged_one_does_not():
    rng = np.random.default_rng(0)
    cfg = _cfg()
    old = _batch(4000, rng, 1.0)
    moved = [_batch(2000, rng, s) for s in (-0.5, -1.0, -1.5)]  # the slope on x0 turns around
    paid = _check(cfg, old, pd.concat([old, *moved[:2]], ignore_index=True), moved[2])
    print(paid.summary())
    assert paid.pays and paid.ci_low >= 0.005 and paid.challenger > paid.champion, paid
    same = [_batch(2000, rng, 1.0) for _ in range(3)]
    held = _check(cfg, old, pd.concat([old, *same[:2]], ignore_index=True), same[2])
    assert not held.pays and held.ci_low < 0.005, held
    assert (
        challenger.check(old, same[2], np.zeros((2000, 2)), [0, 1], _cfg(challenger_min_gain=None), train_batches=1)
        is None
    )  # turned off


def test_the_policy_retrains_when_retraining_pays(settings):
    cfg = settings.models["churn"]
    stable = {"verdict": "stable", "share_drifted": 0.0, "drifted_features": [], "rows": 2000}
    perf = {
        "method": "measured",
        "metric": "roc_auc",
        "rows": 2000,
        "value": 0.80,
        "ci_low": 0.78,
        "ci_high": 0.82,
        "baseline": 0.80,
        "baseline_ci": [0.78, 0.82],
        "drop": 0.0,
        "significant": False,
        "champion_version": 1,
    }
    ch = challenger.ChallengerCheck("roc_auc", 2000, 8000, 4, 0.82, 0.80, 0.02, 0.011, 0.029, 0.98, 0.005, True)
    rec = BatchRecord(
        "b5",
        status="validated",
        valid_rows=2000,
        labelled=True,
        drift=stable,
        performance={**perf, "challenger": ch.to_dict()},
    )
    d = decide(rec, [], cfg, has_champion=True)
    assert d.retrain and d.trigger == "challenger" and d.regime_start is None, d
    assert "refitted on 4 labelled batch(es) that arrived before it (8000 rows)" in d.reason and "+0.0200" in d.reason
    small = challenger.ChallengerCheck("roc_auc", 2000, 8000, 4, 0.803, 0.80, 0.003, -0.004, 0.01, 0.98, 0.005, False)
    rec.performance = {**perf, "challenger": small.to_dict()}
    d = decide(rec, [], cfg, has_champion=True)
    assert not d.retrain and "below retrain.challenger_min_gain 0.005" in d.reason, d.reason
    # a gain above min_gain whose interval's lower end is not: the reason names the lower end, not
    # just "+0.0106 ... below 0.005" (which read as if 0.0106 were below 0.005)
    wide = challenger.ChallengerCheck(
        "roc_auc", 2000, 8000, 4, 0.8106, 0.80, 0.0106, -0.0029, 0.0228, 0.98, 0.005, False
    )
    rec.performance = {**perf, "challenger": wide.to_dict()}
    d = decide(rec, [], cfg, has_champion=True)
    assert "+0.0106" in d.reason and "lower end -0.0029 below retrain.challenger_min_gain 0.005" in d.reason, d.reason


def test_a_failed_check_is_said_and_never_retrains(settings):
    cfg = settings.models["churn"]
    rec = BatchRecord(
        "b5",
        status="validated",
        valid_rows=2000,
        labelled=True,
        drift={"verdict": "stable", "share_drifted": 0.0, "drifted_features": [], "rows": 2000},
        performance={
            "method": "measured",
            "metric": "roc_auc",
            "rows": 2000,
            "value": 0.8,
            "ci_low": 0.78,
            "ci_high": 0.82,
            "baseline": 0.8,
            "baseline_ci": [0.78, 0.82],
            "drop": 0.0,
            "significant": False,
            "champion_version": 1,
            "challenger": {"error": "MemoryError: "},
        },
    )
    assert not rec.retraining_pays
    d = decide(rec, [], cfg, has_champion=True)
    assert not d.retrain and "challenger check failed: MemoryError" in d.reason, d.reason


def test_a_drop_that_also_pays_says_both(settings):
    cfg = settings.models["churn"]
    ch = challenger.ChallengerCheck("roc_auc", 2000, 8000, 4, 0.78, 0.70, 0.08, 0.06, 0.10, 0.98, 0.005, True)
    rec = BatchRecord(
        "b5",
        status="validated",
        valid_rows=2000,
        labelled=True,
        drift={"verdict": "stable", "share_drifted": 0.0, "drifted_features": [], "rows": 2000},
        performance={
            "method": "measured",
            "metric": "roc_auc",
            "rows": 2000,
            "value": 0.70,
            "ci_low": 0.68,
            "ci_high": 0.72,
            "baseline": 0.80,
            "baseline_ci": [0.78, 0.82],
            "drop": 0.10,
            "significant": True,
            "champion_version": 1,
            "challenger": ch.to_dict(),
        },
    )
    d = decide(rec, [], cfg, has_champion=True)
    assert d.trigger == "performance" and "; retraining pays too: a model refitted" in d.reason, d.reason


def test_the_files_of_one_run_share_one_challenger_fit_on_what_came_before_the_run(monkeypatch):
    def rec(p, status="validated"):
        return BatchRecord(p, status=status, validated_path=f"/v/{p}.parquet", labelled=True)

    recs = [rec("a"), rec("b", "failed"), rec("c"), rec("d"), rec("e"), rec("f")]
    names = lambda rs: [r.partition for r in rs]  # noqa: E731
    assert names(challenger.prior_records(recs, "e", ["e"], None)) == ["a", "c", "d"]  # alone: all before it
    assert names(challenger.prior_records(recs, "f", ["d", "e", "f"], None)) == ["a", "c"]  # before its run
    assert names(challenger.prior_records(recs, "e", ["f", "e", "d"], 1)) == ["c"]  # any order; the window
    assert challenger.prior_records(recs, "a", ["a", "c"], None) == []

    fits = []
    real_fit = training.fit
    monkeypatch.setattr(training, "fit", lambda df, cfg: fits.append(len(df)) or real_fit(df, cfg))
    rng = np.random.default_rng(1)
    cfg, prior = _cfg(), _batch(1500, rng, 1.0)
    champ = training.fit(prior, cfg)
    fits.clear()
    for _ in range(3):  # three files of one run: one fit
        batch = _batch(500, rng, 1.0)
        out = champ.predict_proba(model_inputs(batch, cfg))
        got = challenger.check(prior, batch, out, champ.classes_, cfg, train_batches=2, fit_key=("m", ("a", "c")))
        assert got is not None and got.train_rows == 1500
    assert fits == [1500], fits
    challenger.check(prior, batch, out, champ.classes_, cfg, train_batches=2, fit_key=("m", ("a", "c", "d")))
    assert fits == [1500, 1500], "another window is another fit"
