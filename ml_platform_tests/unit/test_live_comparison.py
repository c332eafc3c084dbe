"""The live comparison ``live_shadow`` (core/staging.py) as a pure function: agreement, score
distance, errors, latency, and the gate's paired-bootstrap rule on labelled live rows; the evidence
files the endpoint writes read back as rows; the check's place in the gate registry."""

import numpy as np
import orjson
import pandas as pd
import pytest

from ml_platform.core import approval
from ml_platform.core import staging as live
from ml_platform.names import (
    COL_ERROR,
    COL_ID,
    COL_REQUEST,
    LIVE_CHECK,
    approval_checks,
    gate_checks,
    gate_passed,
    gate_reason_tag,
    gate_tag,
    offline_checks,
)
from ml_platform.settings import ModelConfig

BASE = {
    "landing_dir": "landing",
    "target": "y",
    "task": "classification",
    "id_column": "id",
    "features": {"x": {"type": "numeric"}},
    "deploy": {"strategy": "shadow", "shadow": {"min_requests": 10}},
    "gate": {"min_comparison_rows": 50, "resamples": 200},
}


def cfg(**deploy) -> ModelConfig:
    return ModelConfig.model_validate({**BASE, "deploy": {**BASE["deploy"], **deploy}})


def proba(p) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    return np.column_stack([1 - p, p])


def evidence(champ, cand, *, errors=None, latency=(1.0,), ids=None, failures=()) -> live.Evidence:
    n = len(champ)
    rows = pd.DataFrame({COL_REQUEST: [f"r{i}" for i in range(n)], COL_ID: ids if ids is not None else list(range(n))})
    rows[COL_ERROR] = pd.Series(errors if errors is not None else [None] * n, dtype=object)
    return live.Evidence(2, rows, proba(champ), proba(cand), [0, 1], np.asarray(latency, float), 0, list(failures))


def test_the_live_check_is_registered_only_for_staged_models():
    assert gate_checks(cfg())[-1] == LIVE_CHECK
    assert LIVE_CHECK not in offline_checks(cfg())
    direct = ModelConfig.model_validate({**BASE, "deploy": {}})
    assert LIVE_CHECK not in gate_checks(direct)


def test_a_person_approves_a_shadow_after_its_live_check_and_a_canary_before_it_starts():
    assert approval_checks(cfg(approval="required")) == gate_checks(cfg())  # live_shadow included
    assert LIVE_CHECK not in approval_checks(cfg(strategy="canary", approval="required"))
    passed = {gate_tag(c): "passed" for c in offline_checks(cfg())}
    live_passed = {**passed, gate_tag(LIVE_CHECK): "passed", gate_reason_tag(LIVE_CHECK): "v4 matches champion v2"}
    versions = [(3, passed), (4, live_passed)]
    waiting = approval.awaiting(versions, 2, gate_passed=lambda t: gate_passed(t, approval_checks(cfg())))
    assert [(a.version, a.live) for a in waiting] == [(4, "v4 matches champion v2")]


def test_a_candidate_that_agrees_passes():
    rng = np.random.default_rng(0)
    p = rng.uniform(size=300)
    j = live.compare(
        evidence(p, np.clip(p + rng.normal(0, 0.02, 300), 0, 1)), cfg(), champion_version=1, classes=[0, 1]
    )
    assert j.verdict.passed, j.verdict.reason
    assert j.verdict.figures["agreement"] > 0.9 and j.verdict.figures["score_distance"] < 0.1
    assert "no labelled rows yet" in j.verdict.reason
    assert {r["verdict"] for r in j.table} == {"pass"}


def test_disagreement_distance_errors_latency_each_refuse_with_a_reason():
    rng = np.random.default_rng(1)
    p = rng.uniform(size=200)
    j = live.compare(
        evidence(p, (1 - p) ** 3, errors=["boom"] + [None] * 199, latency=[1.0] * 50 + [80.0] * 5),
        cfg(),
        champion_version=1,
        classes=[0, 1],
    )
    why = j.verdict.reason
    assert not j.verdict.passed
    assert "agree on" in why and "KS" in why and "failed on 1 of 200" in why and "latency budget 50.0" in why, why
    assert sum(r["verdict"] == "FAIL" for r in j.table) == 4


def test_a_live_failure_refuses_and_no_rows_refuse():
    j = live.compare(
        evidence([0.2], [0.2], failures=["3 of its last 50 live calls exceeded"]),
        cfg(),
        champion_version=1,
        classes=[0, 1],
    )
    assert not j.verdict.passed and "failed on live traffic: 3 of its last" in j.verdict.reason
    empty = live.Evidence(2, pd.DataFrame())
    assert not live.compare(empty, cfg(), champion_version=1, classes=[0, 1]).verdict.passed


def test_labelled_live_rows_use_the_gates_bootstrap_rule():
    rng = np.random.default_rng(2)
    n = 300
    y = rng.integers(0, 2, n)
    champ = np.clip(y * 0.6 + rng.uniform(0, 0.4, n), 0, 1)  # ranks well
    cand = np.clip(champ + rng.normal(0, 0.25, n), 0, 1)  # close to it, but noisier: worse
    labels = pd.Series(y, index=[str(i) for i in range(n)])
    loose = cfg(live_check={"min_agreement": 0.5, "max_score_distance": 0.5})
    j = live.compare(evidence(champ, cand), loose, champion_version=1, classes=[0, 1], labels=labels)
    assert j.labelled_rows == n
    assert not j.verdict.passed and "labelled live rows" in j.verdict.reason, j.verdict.reason
    assert "interval" in j.verdict.reason  # the paired bootstrap's interval, as not_worse_than_champion
    same = live.compare(evidence(champ, champ), loose, champion_version=1, classes=[0, 1], labels=labels)
    assert same.verdict.passed, same.verdict.reason
    few = live.compare(evidence(champ, cand), loose, champion_version=1, classes=[0, 1], labels=labels.head(10))
    assert few.verdict.passed and any(r["verdict"] == "not judged" for r in few.table)


def test_after_a_concept_change_labelled_rows_outrank_agreement_and_score_distance():
    """A candidate retrained for a new concept disagrees with the stale champion by design: when
    enough labelled live rows say it is better, the sanity bars do not refuse it; without labels,
    or when the labels say it is worse, they still do."""
    rng = np.random.default_rng(3)
    n = 300
    y = rng.integers(0, 2, n)
    stale = np.clip((1 - y) * 0.6 + rng.uniform(0, 0.4, n), 0, 1)  # the old concept: inverted now
    fresh = np.clip(y * 0.8 + rng.uniform(0, 0.2, n), 0, 1)  # and surer: another score distribution
    labels = pd.Series(y, index=[str(i) for i in range(n)])
    j = live.compare(evidence(stale, fresh), cfg(), champion_version=1, classes=[0, 1], labels=labels)
    assert j.verdict.passed, j.verdict.reason
    assert "overruled" in j.verdict.reason and "agree on" in j.verdict.reason, j.verdict.reason
    verdicts = {r["criterion"].split(" (")[0]: r["verdict"] for r in j.table}
    assert verdicts["agreement"] == verdicts["score distance"] == "overruled by the labelled rows", j.table
    unlabelled = live.compare(evidence(stale, fresh), cfg(), champion_version=1, classes=[0, 1])
    assert not unlabelled.verdict.passed and "agree on" in unlabelled.verdict.reason
    assert unlabelled.wants_labels  # labels could still decide: a shadow waits for them
    worse = live.compare(evidence(fresh, stale), cfg(), champion_version=1, classes=[0, 1], labels=labels)
    assert not worse.verdict.passed and "agree on" in worse.verdict.reason and "labelled" in worse.verdict.reason
    assert not worse.wants_labels and not j.wants_labels
    few = live.compare(evidence(stale, fresh), cfg(), champion_version=1, classes=[0, 1], labels=labels.head(10))
    assert not few.verdict.passed and few.wants_labels and few.labelled_rows == 10  # more may come
    erring = live.compare(
        evidence(stale, fresh, errors=["boom"] + [None] * (n - 1)), cfg(), champion_version=1, classes=[0, 1]
    )
    assert not erring.verdict.passed and not erring.wants_labels  # an error refuses whatever labels say


def test_ks_distance():
    a = np.linspace(0, 1, 101)
    assert live.ks_distance(a, a) == 0
    assert live.ks_distance(a, a + 2) == 1
    assert live.ks_distance(a, a + 0.5) == pytest.approx(0.5, abs=0.02)


def test_evidence_blocks_read_back_as_rows(tmp_path):
    block = {
        "ts": "2026-01-01T00:00:00.000+00:00",
        "mode": "shadow",
        "candidate": 2,
        "champion": 1,
        "rows": 3,
        "rid": ["a", "b/0", "b/1"],
        "id_column": "id",
        "id": [7, 8, None],
        "features": {"x": [1.0, 2.0, None]},
        "champion_out": {"label": [0, 1, 1], "probabilities": [[0.9, 0.1], [0.2, 0.8], [0.4, 0.6]]},
        "candidate_out": {"label": [0, 1, 0], "probabilities": [[0.8, 0.2], [0.3, 0.7], [0.6, 0.4]]},
        "candidate_ms": 0.5,
        "error": None,
    }
    (tmp_path / "stage-v2-20260101T000000000000Z-1.jsonl").write_bytes(orjson.dumps(block) + b"\nnot json\n")
    (tmp_path / "stage-v2-stats-1.json").write_bytes(orjson.dumps({"dropped": 4}))
    (tmp_path / "stage-v3-20260101T000000000000Z-1.jsonl").write_bytes(orjson.dumps({**block, "candidate": 3}))
    ev = live.read_evidence(tmp_path, 2)
    assert ev.n == 3 and list(ev.rows[COL_REQUEST]) == ["a", "b/0", "b/1"] and ev.dropped == 4
    assert ev.candidate_scores.shape == (3, 2) and list(ev.latency_ms) == [0.5]
    assert live.count_rows(tmp_path, 2) == 3 and live.count_rows(tmp_path, 4) == 0


def test_rows_the_worker_scored_read_back_like_the_scorers_and_a_torn_block_ends_the_file(tmp_path, caplog):
    """``.frames`` (serving/staging.py, Stage.score_due): marshal records in blocks; a worker
    killed mid-append leaves a torn last block, which is not counted; a block that does not
    decode is skipped with a warning naming the file."""
    import marshal

    from ml_platform.core.stage_files import pack_block

    def block(recs, body=None):
        head = {"mode": "shadow", "candidate": 2, "champion": 1, "id_column": "id", "records": len(recs)}
        head |= {"ts": "2026-01-01T00:00:00.000+00:00", "plan": [["x", True, 0, True], ["plan", False, 0, True]]}
        return pack_block(head, body if body is not None else b"".join(marshal.dumps(r, 2) for r in recs))

    def rec(rid, x, plan, ident, p):
        return (rid, ([x], [plan]), [ident], [[int(p > 0.5)], [[1 - p, p]]], [[1], [[0.3, 0.7]]], 0.01)

    good = block([rec("a", 1.5, "pro", 7, 0.8), rec(None, None, "basic", 8, 0.2)]) + block(
        [rec("c", 3.0, "pro", 9, 0.6)]
    )
    bad = block([rec("d", 1.0, "pro", 1, 0.5)], body=b"\xff" * 10)  # a body that does not decode
    torn = block([rec("e", 2.0, "pro", 2, 0.5)])[:-3]
    name = "stage-v2-20260101T000000000000Z-1.frames"
    (tmp_path / name).write_bytes(good + bad + torn)
    assert live.count_rows(tmp_path, 2) == 3 + 1  # heads are counted; the torn block is not
    with caplog.at_level("WARNING"):
        ev = live.read_evidence(tmp_path, 2)
    assert ev.n == 3, ev.rows
    assert list(ev.rows[COL_REQUEST]) == ["a", f"{name[:-7]}-1-1", "c"]  # a made-up id where none came
    assert list(ev.rows[COL_ID]) == [7, 8, 9] and list(ev.rows["plan"]) == ["pro", "basic", "pro"]
    assert ev.rows["x"].iloc[0] == 1.5 and pd.isna(ev.rows["x"].iloc[1])
    np.testing.assert_allclose(ev.champion_scores, [[0.2, 0.8], [0.8, 0.2], [0.4, 0.6]])
    np.testing.assert_allclose(ev.candidate_scores, [[0.3, 0.7]] * 3)
    assert list(ev.latency_ms) == [0.01] * 3
    assert name in caplog.text and "block 3" in caplog.text, caplog.text
