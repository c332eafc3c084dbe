"""The weekly schedule retrains only when labelled data landed since what the champion (or the
last retrain) learnt from (core/policy.scheduled)."""

from ml_platform.core.batch_record import BatchRecord, Decision
from ml_platform.core.policy import scheduled


def _rec(p: str, *, labelled=True, validated_at=100.0, retrained=False, status="validated") -> BatchRecord:
    d = Decision(True, "performance", "a drop", at=validated_at) if retrained else None
    return BatchRecord(p, status=status, valid_rows=1000, labelled=labelled, validated_at=validated_at, decision=d)


def test_new_labelled_batches_after_the_champions_window_retrain(settings):
    cfg = settings.models["churn"]
    recs = [_rec("b1"), _rec("b2"), _rec("b3"), _rec("b4")]
    d = scheduled(recs, cfg, champion=3, champion_batches=["b1", "b2"])
    assert d.retrain and d.trigger == "schedule", d.reason
    assert "2 new labelled batch(es), 2000 rows" in d.reason and "first: b3" in d.reason, d.reason


def test_nothing_new_skips_with_the_reason(settings):
    cfg = settings.models["churn"]
    recs = [_rec("b1"), _rec("b2"), _rec("b3", labelled=False), _rec("b4", status="rejected")]
    d = scheduled(recs, cfg, champion=3, champion_batches=["b2"])  # a regime window: b1 was left out on purpose
    assert not d.retrain and "newest used: b2" in d.reason and "refit the same rows" in d.reason, d.reason


def test_a_retrain_decision_counts_as_used_even_when_its_candidate_was_blocked(settings):
    cfg = settings.models["churn"]
    recs = [_rec("b1"), _rec("b2"), _rec("b3", retrained=True)]
    assert not scheduled(recs, cfg, champion=1, champion_batches=["b1"]).retrain
    assert scheduled(recs + [_rec("b4")], cfg, champion=1, champion_batches=["b1"]).retrain


def test_the_last_scheduled_run_counts_as_used(settings):
    cfg = settings.models["churn"]
    recs = [_rec("b1", validated_at=10), _rec("b2", validated_at=20)]
    assert scheduled(recs, cfg, champion=1, champion_batches=["b1"], since=15).retrain
    d = scheduled(recs, cfg, champion=1, champion_batches=["b1"], since=25)
    assert not d.retrain, d.reason


def test_no_champion_unknown_window_and_in_flight(settings):
    cfg = settings.models["churn"]
    assert not scheduled([], cfg, champion=None).retrain
    assert scheduled([_rec("b1")], cfg, champion=None).retrain
    assert scheduled([_rec("b1")], cfg, champion=2, champion_batches=None).retrain  # unknown: the safe side
    busy = scheduled([_rec("b1")], cfg, champion=None, retrain_in_flight=True)
    assert not busy.retrain and "already queued or running" in busy.reason
