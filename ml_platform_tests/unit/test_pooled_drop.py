"""The measured drop test: one batch against the holdout on their combined error, and a drop
too small for one batch's rows pooled over the last 2-3 labelled batches (core/estimate.pooled,
core/policy)."""

from ml_platform.core import estimate
from ml_platform.core.batch_record import BatchRecord, Decision
from ml_platform.core.policy import decide

Z = 1.959964


def _figure(value: float, se: float = 0.0087, version: int = 1, base: float = 0.887, base_se: float = 0.0082) -> dict:
    """A measured figure as monitoring records it (``Performance.to_dict``), judged like measure()."""
    perf = estimate.Performance("measured", "roc_auc", 2000, value, value - Z * se, value + Z * se, base,
                                [base - Z * base_se, base + Z * base_se], champion_version=version)
    return estimate._judge(perf, True, 0.05).to_dict()


def _rec(p: str, value: float, **kw) -> BatchRecord:
    return BatchRecord(p, status="validated", valid_rows=2000, labelled=True,
                       drift={"verdict": "stable", "share_drifted": 0.0, "drifted_features": [], "rows": 2000},
                       performance=_figure(value, **kw), decision=Decision(False, "none", "held", at=0.0))


def test_one_batch_is_judged_on_the_combined_error_of_batch_and_holdout():
    small, large = _figure(0.866), _figure(0.850)
    # 0.021 below: inside 1.96 x hypot(0.0087, 0.0082) = 0.0234; the old "intervals do not
    # overlap" rule would need 1.96 x (0.0087 + 0.0082) = 0.033 for the 0.037 one too.
    assert not small["significant"], small
    assert large["significant"], large


def test_two_batches_pooled_show_a_drop_neither_shows_alone(settings):
    cfg = settings.models["churn"]
    a, b = _rec("b1", 0.866), _rec("b2", 0.866)
    assert not a.performance["significant"] and not b.performance["significant"]
    pooled = estimate.pooled([a.performance, b.performance])
    assert pooled is not None and pooled.significant and pooled.rows == 4000, pooled
    assert pooled.ci_high - pooled.ci_low < a.performance["ci_high"] - a.performance["ci_low"]

    first = decide(a, [], cfg, has_champion=True)
    assert not first.retrain, first.reason
    d = decide(b, [a], cfg, has_champion=True)
    assert d.retrain and d.trigger == "performance", d.reason
    assert "over the last 2 labelled batches (4000 rows)" in d.reason and "v1 holdout 0.8870" in d.reason, d.reason


def test_batches_of_another_champion_or_before_a_retrain_are_not_pooled(settings):
    cfg = settings.models["churn"]
    old = _rec("b1", 0.866, version=1)
    new = _rec("b2", 0.866, version=2)
    assert estimate.pooled([old.performance, new.performance]) is None
    assert not decide(new, [old], cfg, has_champion=True).retrain
    retrained = _rec("b1", 0.866)
    retrained.decision = Decision(True, "performance", "a drop", at=0.0)
    assert not decide(_rec("b2", 0.866), [retrained], cfg, has_champion=True).retrain


def test_a_pooled_drop_smaller_than_min_drop_does_not_retrain(settings):
    cfg = settings.models["churn"]
    tight = dict(se=0.001, base_se=0.001)  # huge batches: a 0.004 drop is "significant"
    a, b = _rec("b1", 0.883, **tight), _rec("b2", 0.883, **tight)
    assert estimate.pooled([a.performance, b.performance]).significant
    d = decide(b, [a], cfg, has_champion=True)  # retrain.min_drop 0.005
    assert not d.retrain, d.reason
