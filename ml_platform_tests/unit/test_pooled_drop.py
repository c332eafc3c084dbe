"""The measured drop test: a batch's interval wholly below the champion's holdout interval, or
the pooled interval of the last 2-3 labelled batches (a drop too small for one batch's rows),
and how often it retrains on a stable stream (core/estimate.pooled, core/policy)."""

import numpy as np

from ml_platform.core import estimate
from ml_platform.core.batch_record import BatchRecord, Decision
from ml_platform.core.policy import decide

Z = 1.959964


def _figure(value: float, se: float = 0.0087, version: int = 1, base: float = 0.887, base_se: float = 0.0082) -> dict:
    """A measured figure as monitoring records it (``Performance.to_dict``), judged like measure()."""
    perf = estimate.Performance(
        "measured",
        "roc_auc",
        2000,
        value,
        value - Z * se,
        value + Z * se,
        base,
        [base - Z * base_se, base + Z * base_se],
        champion_version=version,
    )
    return estimate._judge(perf, True).to_dict()


def _rec(p: str, value: float, **kw) -> BatchRecord:
    return BatchRecord(
        p,
        status="validated",
        valid_rows=2000,
        labelled=True,
        drift={"verdict": "stable", "share_drifted": 0.0, "drifted_features": [], "rows": 2000},
        performance=_figure(value, **kw),
        decision=Decision(False, "none", "held", at=0.0),
    )


def test_one_batch_counts_when_its_interval_clears_the_holdouts():
    small, large = _figure(0.856), _figure(0.850)  # holdout CI [0.8709, 0.9031]
    assert not small["significant"] and small["ci_high"] > 0.8709, small
    assert large["significant"], large


def test_two_batches_pooled_show_a_drop_neither_shows_alone(settings):
    cfg = settings.models["churn"]
    a, b = _rec("b1", 0.856), _rec("b2", 0.856)
    assert not a.performance["significant"] and not b.performance["significant"]
    pooled = estimate.pooled([a.performance, b.performance])
    assert pooled is not None and pooled.significant and pooled.rows == 4000, pooled
    assert pooled.ci_high - pooled.ci_low < a.performance["ci_high"] - a.performance["ci_low"]

    first = decide(a, [], cfg, has_champion=True)
    assert not first.retrain, first.reason
    d = decide(b, [a], cfg, has_champion=True)
    assert d.retrain and d.trigger == "performance", d.reason
    assert "over the last 2 labelled batches (4000 rows)" in d.reason and "v1 holdout 0.8870" in d.reason, d.reason
    assert d.regime_start == "b1", d  # the pooled window's first batch: the regime window starts there


def test_batches_of_another_champion_or_before_a_retrain_are_not_pooled(settings):
    cfg = settings.models["churn"]
    old = _rec("b1", 0.856, version=1)
    new = _rec("b2", 0.856, version=2)
    assert estimate.pooled([old.performance, new.performance]) is None
    assert not decide(new, [old], cfg, has_champion=True).retrain
    retrained = _rec("b1", 0.856)
    retrained.decision = Decision(True, "performance", "a drop", at=0.0)
    assert not decide(_rec("b2", 0.856), [retrained], cfg, has_champion=True).retrain


def test_a_pooled_drop_smaller_than_min_drop_does_not_retrain(settings):
    cfg = settings.models["churn"]
    tight = dict(se=0.001, base_se=0.001)  # huge batches: a 0.004 drop is "significant"
    a, b = _rec("b1", 0.883, **tight), _rec("b2", 0.883, **tight)
    assert estimate.pooled([a.performance, b.performance]).significant
    d = decide(b, [a], cfg, has_champion=True)  # retrain.min_drop 0.005
    assert not d.retrain, d.reason


def test_a_stable_stream_rarely_retrains(settings):
    """No drop at all: 20 labelled batches against one holdout whose own figure is noisy too.
    Every batch is looked at 3 times (alone, pooled over 2 and 3), always against the same
    holdout; the share of streams that retrain anyway stays small (a z test on the combined
    error retrained on ~28 % of them)."""
    cfg = settings.models["churn"]
    rng = np.random.default_rng(7)
    streams, alarms = 150, 0
    for _ in range(streams):
        base = 0.88 + rng.normal(0, 0.0082)
        hist: list[BatchRecord] = []
        for i in range(20):
            r = _rec(f"b{i}", 0.88 + rng.normal(0, 0.0087), base=base)
            d = decide(r, hist, cfg, has_champion=True)
            if d.retrain:
                alarms += 1
                break
            r.decision = d
            hist.append(r)
    print(f"stable streams that retrained: {alarms}/{streams}")
    assert alarms / streams <= 0.10, f"{alarms}/{streams} stable streams retrained"
