"""core/payoff.ledger on a synthetic history: two drift episodes (one recovered after a blocked
candidate, one still open), a rejected candidate, a rollback, and the served metric around moves."""

from datetime import UTC, datetime

from ml_platform.core import stage_files
from ml_platform.core.audit import AuditEntry
from ml_platform.core.batch_record import BatchRecord
from ml_platform.core.payoff import BatchFacts, VersionFacts, ledger

T0 = 1_700_000_000.0


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=UTC).isoformat()


def move(t, prev, to, kind="deploy", trigger="performance", actor="dagster run x"):
    return AuditEntry(
        at=iso(t),
        model="m",
        previous=prev,
        to=to,
        actor=actor,
        trigger=trigger,
        reason="",
        kind=kind,
        gate={},
        endpoint="reloaded",
        intent="i",
    )


def batch(i, served, metric=None, drifted=False, dropped=False, stable=True):
    return BatchFacts(
        f"b{i}",
        T0 + 100 * i,
        drifted=drifted,
        dropped=dropped,
        stable=stable and not drifted and not dropped,
        served_version=served,
        served_metric=metric,
    )


def history():
    batches = [
        batch(0, None),  # first batch: trains v1
        batch(1, 1, 0.90),
        batch(2, 1, 0.91),
        batch(3, 1, 0.89),
        batch(4, 1, 0.70, drifted=True, dropped=True),  # episode 1 starts (landed T0+400)
        batch(5, 1, 0.71, drifted=True, dropped=True),  # v2 blocked by the gate, v3 deployed at T0+560
        batch(6, 3, 0.88),
        batch(7, 3, 0.87),
        batch(8, 3, None, drifted=True),  # episode 2 (covariate only): subsides
        batch(9, 3, 0.88),
        batch(10, 3, None, drifted=True),  # episode 3: still open
    ]
    versions = [
        VersionFacts(1, "arrival", T0 + 10, "passed", train_seconds=4.0),
        VersionFacts(
            2, "performance", T0 + 420, "failed", failing=["min_metric: 0.61 < 0.7"], train_seconds=5.0, gate_delta=-0.2
        ),
        VersionFacts(3, "performance", T0 + 520, "passed", train_seconds=6.5, gate_delta=0.15),
        VersionFacts(
            4,
            "manual",
            T0 + 950,
            "passed",
            approval="rejected",
            approval_note="rejected by ann: no",
            train_seconds=None,
        ),
    ]
    audit = [
        move(T0 + 20, None, 1, trigger="arrival"),
        move(T0 + 560, 1, 3),
        AuditEntry(
            at=iso(T0 + 960),
            model="m",
            previous=3,
            to=3,
            actor="ann (cli)",
            trigger="approval",
            reason="rejected v4",
            kind="reject",
            gate={},
            endpoint="unchanged",
            intent="",
            candidate=4,
        ),
    ]
    return batches, versions, audit


def test_counts_blocked_and_training_time():
    p = ledger("roc_auc", *history())
    assert p.retrains == 4 and p.retrains_by_trigger == {"arrival": 1, "manual": 1, "performance": 2}
    assert [(b.version, b.by) for b in p.blocked] == [(2, "gate"), (4, "person")], p.blocked
    assert p.blocked[0].why == ["min_metric: 0.61 < 0.7"]
    assert p.bad_deploys_prevented == 1
    assert p.train_seconds_total == 15.5 and p.train_runs_timed == 3
    assert p.train_seconds_by_trigger == {"arrival": 4.0, "performance": 11.5}
    assert (
        p.train_seconds_per_retrain == round(15.5 / 3, 3)
        and p.to_dict()["train_seconds_per_retrain"] == p.train_seconds_per_retrain
    )


def test_a_staged_candidate_rejected_by_a_person_is_theirs_not_the_gates():
    batches, versions, audit = history()
    live = "live_shadow: rejected by ann (cli) during its shadow (3/5 requests): no"
    versions[3] = VersionFacts(5, "manual", T0 + 950, "failed", failing=[live], approval="rejected", approval_note="no")
    versions.append(VersionFacts(6, "manual", T0 + 990, "failed", failing=["live_shadow: agree on 40% of 500 rows"]))
    p = ledger("roc_auc", batches, versions, audit)
    assert [(b.version, b.by) for b in p.blocked] == [(2, "gate"), (5, "person"), (6, "gate")], p.blocked


def test_a_stage_rolled_back_is_a_persons_and_one_without_evidence_no_bad_deploy():
    batches, versions, audit = history()
    rolled = f"live_shadow: {stage_files.rolled_back_reason('cli', 'canary')}"
    late = f"live_shadow: {stage_files.NO_EVIDENCE}0/200 mirrored requests after max_hours (1 h)"
    versions.append(VersionFacts(5, "manual", T0 + 990, "failed", failing=[rolled]))
    versions.append(VersionFacts(6, "manual", T0 + 995, "failed", failing=[late]))
    p = ledger("roc_auc", batches, versions, audit)
    got = [(b.version, b.by) for b in p.blocked]
    assert got == [(2, "gate"), (4, "person"), (5, "person"), (6, "timeout")], p.blocked
    assert p.bad_deploys_prevented == 1  # only the gate's refusal of v2


def test_episodes_recovered_subsided_open():
    p = ledger("roc_auc", *history())
    got = [
        (e.first_batch, e.status, e.batches, e.recovered_by, e.time_to_recovery_seconds, e.retrains, e.blocked)
        for e in p.episodes
    ]
    assert got == [
        ("b4", "recovered", 2, 3, 160.0, 2, 1),  # landed T0+400, v3 serving at T0+560
        ("b8", "subsided", 1, None, None, 0, 0),
        ("b10", "open", 1, None, None, 0, 0),
    ], got
    assert p.episodes[0].performance_dropped and not p.episodes[1].performance_dropped
    assert p.to_dict()["median_time_to_recovery_seconds"] == 160.0


def test_served_metric_around_each_promotion_and_reject_is_not_a_move():
    p = ledger("roc_auc", *history())
    assert [(r.previous, r.to) for r in p.promotions] == [(None, 1), (1, 3)], p.promotions
    first, second = p.promotions
    assert first.served_before is None and first.batches_before == 0
    assert abs(second.served_before - (0.89 + 0.70 + 0.71) / 3) < 1e-9 and second.batches_before == 3
    assert abs(second.served_after - (0.88 + 0.87 + 0.88) / 3) < 1e-9 and second.batches_after == 3
    assert second.gate_delta == 0.15


def test_rollback_after_a_deploy_closes_nothing_and_is_listed():
    batches, versions, audit = history()
    audit.append(move(T0 + 1000, 3, 1, kind="rollback", trigger="manual", actor="cli"))
    p = ledger("roc_auc", batches, versions, audit)
    assert p.promotions[-1].kind == "rollback" and p.promotions[-1].gate_delta is None
    assert p.episodes[-1].status == "open"  # a rollback is not a new champion for a drift episode


def test_files_landed_at_once_are_judged_by_when_they_were_scored():
    """`ml-platform run` on files that landed together: b2 drifts, v2 takes over while b3 and b4
    wait; they are scored by v2. Recovery is measured from b2's landing."""
    landed = T0

    def b(i, served, metric, **kw):
        return BatchFacts(f"b{i}", landed, scored_at=T0 + 60 * i, served_version=served, served_metric=metric, **kw)

    batches = [
        b(0, None, None),
        b(1, 1, 0.77, stable=True),
        b(2, 1, 0.49, drifted=True, dropped=True),
        b(3, 2, 0.76, stable=True),
        b(4, 2, 0.74, stable=True),
    ]
    versions = [
        VersionFacts(1, "arrival", T0 + 30, "passed", train_seconds=3.0),
        VersionFacts(2, "performance", T0 + 150, "passed", train_seconds=4.0, gate_delta=0.2),
    ]
    audit = [move(T0 + 40, None, 1, trigger="arrival"), move(T0 + 170, 1, 2)]
    p = ledger("roc_auc", batches, versions, audit)
    (e,) = p.episodes
    assert (e.status, e.recovered_by, e.time_to_recovery_seconds, e.retrains) == ("recovered", 2, 170.0, 1), e
    second = p.promotions[1]
    assert abs(second.served_before - (0.77 + 0.49) / 2) < 1e-9 and second.batches_before == 2
    assert abs(second.served_after - 0.75) < 1e-9 and second.batches_after == 2


def test_empty_history():
    p = ledger("rmse", [], [], [])
    d = p.to_dict()
    assert d["retrains"] == 0 and d["episodes"] == [] and d["median_time_to_recovery_seconds"] is None
    assert "timeline" not in d


def test_from_record_reads_the_catalog_fields():
    rec = {
        "partition": "p",
        "arrival": 5.0,
        "drift": {"verdict": "stable"},
        "performance": {"value": 0.8, "significant": False, "champion_version": 2},
        "estimate": {"significant": False, "champion_version": 2},
    }
    b = BatchFacts.from_record(BatchRecord.from_dict(rec))
    assert (b.landed_at, b.drifted, b.dropped, b.stable, b.served_version, b.served_metric) == (
        5.0,
        False,
        False,
        True,
        2,
        0.8,
    )
    b = BatchFacts.from_record(
        BatchRecord(
            "q",
            ingested_at=7,
            drift={"verdict": "not enough data"},
            performance={"skipped": "batch carries no labels"},
            estimate={"significant": True, "champion_version": 1},
        )
    )
    assert (b.landed_at, b.dropped, b.stable, b.served_version, b.served_metric) == (7.0, True, False, 1, None)


def test_the_sparkline_does_not_draw_noise_as_a_cliff():
    """0.5101 vs 0.5098 were drawn as a full bar next to an empty one; now a move smaller than
    2 % of the metric stays in the middle rows, and a real drop still spans the scale."""
    from types import SimpleNamespace

    from ml_platform.defs.assets.payoff import sparkline, value_range

    def line(values):
        timeline = [SimpleNamespace(served_metric=v, served_version=1) for v in values]
        return sparkline(SimpleNamespace(timeline=timeline, metric="roc_auc"))

    flat = line([None, 0.5101, 0.5098])
    assert flat.startswith("·") and "█" not in flat and "▁" not in flat, flat
    assert "(roc_auc 0.510 .. 0.510)" in flat, flat
    drop = line([0.90, 0.89, 0.50])
    assert drop[:3] == "█▇▁", drop
    lo, hi = value_range([1200.0, 1201.0])  # regression scale: the span follows the size
    assert hi - lo >= 0.02 * 1201 - 1e-9
