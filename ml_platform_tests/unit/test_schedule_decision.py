"""The weekly schedule retrains only when labelled data was validated since what the champion or
the newest candidate learnt from (core/policy.scheduled)."""

from ml_platform.core.batch_record import BatchRecord
from ml_platform.core.policy import scheduled


def _rec(p: str, *, labelled=True, validated_at=100.0, status="validated") -> BatchRecord:
    return BatchRecord(p, status=status, valid_rows=1000, labelled=labelled, validated_at=validated_at)


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
    assert not d.retrain and "(newest: b2)" in d.reason and "refit the same rows" in d.reason, d.reason


def test_the_newest_candidates_run_start_decides_what_is_new(settings):
    """``since``: the run that built the newest candidate (passed or blocked by the gate)."""
    cfg = settings.models["churn"]
    recs = [_rec("b1", validated_at=10), _rec("b2", validated_at=20), _rec("b3", validated_at=30)]
    d = scheduled(recs, cfg, champion=1, champion_batches=["b1"], since=25)  # a blocked candidate saw b2
    assert d.retrain and "1 new labelled batch(es)" in d.reason and "first: b3" in d.reason, d.reason
    blocked = scheduled(recs, cfg, champion=1, champion_batches=["b1"], since=35)
    assert not blocked.retrain and "the newest candidate's run started" in blocked.reason, blocked.reason
    # A late file (old mtime, sorted before the window's newest batch) validated after the run is new.
    late = [_rec("b0", validated_at=40)] + recs
    assert scheduled(late, cfg, champion=1, champion_batches=["b3"], since=35).retrain


def test_an_unknown_window_still_skips_when_a_candidate_saw_everything(settings):
    cfg = settings.models["churn"]
    recs = [_rec("b1", validated_at=10)]
    assert not scheduled(recs, cfg, champion=2, champion_batches=None, since=15).retrain
    d = scheduled(recs + [_rec("b2", validated_at=20)], cfg, champion=2, champion_batches=None, since=15)
    assert d.retrain and "champion v2's training batches are unknown" in d.reason, d.reason
    assert scheduled(recs, cfg, champion=2, champion_batches=None).retrain  # nothing recorded: the safe side


def test_no_champion_and_in_flight(settings):
    cfg = settings.models["churn"]
    assert not scheduled([], cfg, champion=None).retrain
    assert scheduled([_rec("b1")], cfg, champion=None).retrain
    busy = scheduled([_rec("b1")], cfg, champion=None, retrain_in_flight=True)
    assert not busy.retrain and "already queued or running" in busy.reason
