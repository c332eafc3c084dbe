"""A staged candidate in the endpoint (in-process): a shadow never answers and scores a copy of
every request off the request path; a canary answers a sticky share; a canary that fails on live
traffic is rolled back at once; overload drops mirrored requests and counts them; the scorer is a
process per worker that ends with its stage."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import warnings

import numpy as np
import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from ml_platform.core.staging import count_rows, read_evidence
from ml_platform.names import COL_ID, COL_REQUEST
from ml_platform.serving import shadow_scorer, staging
from ml_platform.serving.app import create_app
from ml_platform.serving.batching import IN_FLIGHT
from ml_platform.serving.model import load_version
from ml_platform.serving.store import ModelStore
from ml_platform_tests.serving.conftest import CLF, REG, publish, records

COLS = ["customer_id", "tenure", "charges", "plan", "region"]
RID = "X-Request-Id"


@pytest.fixture
def world(tmp_path, clf):
    root = tmp_path / "serving"
    store = ModelStore(root)
    publish(store, CLF, clf, 1)
    publish(store, CLF, clf, 2, point=False)
    return store, tmp_path / "stage"


def _client(store, stage_dir):
    return TestClient(create_app(store.root, [CLF], poll_seconds=0.05, stage_dir=stage_dir))


def _rows(clf, n):
    return records(clf.frame.head(n), COLS)


def _evidence(stage_dir, version=2):
    return read_evidence(stage_dir / CLF, version)


def test_shadow_never_answers_and_scores_a_copy_of_each_request(world, clf):
    store, stage_dir = world
    store.stage(CLF, {"version": 2, "mode": "shadow", "share": 1.0, "champion": 1})
    rows = _rows(clf, 40)
    with _client(store, stage_dir) as c:
        assert c.get("/v2/health/ready").status_code == 200
        for i, row in enumerate(rows):
            r = c.post(
                f"/models/{CLF}/invocations", json={"dataframe_records": [row]}, headers={"X-Request-Id": f"r{i}"}
            )
            assert r.status_code == 200 and r.headers["x-model-version"] == "1"
        time.sleep(0.3)
    ev = _evidence(stage_dir)
    assert ev.n == 40
    assert set(ev.rows[COL_REQUEST]) == {f"r{i}" for i in range(40)}
    assert (ev.candidate_scores == ev.champion_scores).all()  # the same graph
    assert set(ev.rows[COL_ID]) == {r["customer_id"] for r in rows}
    assert len(ev.latency_ms) >= 1
    stats = json.loads(next((stage_dir / CLF).glob("stage-v2-stats-*.json")).read_text())
    assert stats["mirrored"] == 40 and stats["dropped"] == 0


def test_canary_answers_a_sticky_share(world, clf):
    store, stage_dir = world
    store.stage(CLF, {"version": 2, "mode": "canary", "share": 0.3, "champion": 1})
    rows = records(clf.frame.head(300), COLS)
    with _client(store, stage_dir) as c:
        first = {}
        for row in rows:
            r = c.post(f"/models/{CLF}/invocations", json={"dataframe_records": [row]})
            first[row["customer_id"]] = r.headers["x-model-version"]
        for row in rows[:60]:  # the same ids again: the same version
            r = c.post(f"/models/{CLF}/invocations", json={"dataframe_records": [row]})
            assert r.headers["x-model-version"] == first[row["customer_id"]]
    share = sum(v == "2" for v in first.values()) / len(first)
    assert 0.2 < share < 0.4, share
    ev = _evidence(stage_dir)
    again = sum(first[r["customer_id"]] == "2" for r in rows[:60])
    assert ev.n == sum(v == "2" for v in first.values()) + again  # every canary answer, both scores
    assert len(ev.latency_ms) == ev.n  # canary: every answer of the candidate timed


def test_canary_without_ids_routes_by_the_row_on_both_protocols(world, clf):
    """No id column in the request: sticky by the first row, text columns included (a 500 before)."""
    store, stage_dir = world
    store.stage(CLF, {"version": 2, "mode": "canary", "share": 0.5, "champion": 1})
    rows = records(clf.frame.head(60), [c for c in COLS if c != "customer_id"])
    answered = {}
    with _client(store, stage_dir) as c:
        for i, row in enumerate(rows * 2):
            if (i + i // len(rows)) % 2:  # each row once through each protocol
                inputs = [
                    {"name": k, "shape": [1], "datatype": "BYTES" if isinstance(v, str) else "FP64", "data": [v]}
                    for k, v in row.items()
                ]
                r = c.post(f"/v2/models/{CLF}/infer", json={"inputs": inputs})
            else:
                r = c.post(f"/models/{CLF}/invocations", json={"dataframe_records": [row]})
            assert r.status_code == 200, r.text
            key = json.dumps(row, sort_keys=True)
            assert answered.setdefault(key, r.headers["x-model-version"]) == r.headers["x-model-version"], (
                "the same row went to another version"
            )
    assert set(answered.values()) == {"1", "2"}, answered


def test_failing_canary_is_rolled_back_at_once(world, clf):
    store, stage_dir = world
    store.stage(CLF, {"version": 2, "mode": "canary", "share": 0.5, "champion": 1})
    rows = records(clf.frame.head(100), COLS)
    with _client(store, stage_dir) as c:
        stage = c.app.state.serving.slots[CLF].stage
        assert stage is not None

        def broken(feeds):
            raise RuntimeError("boom")

        stage.model.run = broken
        versions = [
            c.post(f"/models/{CLF}/invocations", json={"dataframe_records": [row]}).headers["x-model-version"]
            for row in rows
        ]
    assert set(versions) == {"1"}  # the failing request itself was answered by the champion
    assert stage.failed and "boom" in stage.failed
    marks = staging.failed_marker(stage_dir / CLF, 2)
    assert marks and "boom" in marks[0].read_text()


def test_overload_drops_and_counts(world, clf, monkeypatch):
    store, stage_dir = world
    monkeypatch.setattr(staging, "MAX_QUEUED_ROWS", 5)
    monkeypatch.setattr(staging, "SEND_SECONDS", 30.0)  # nothing is sent during the test
    store.stage(CLF, {"version": 2, "mode": "shadow", "share": 1.0, "champion": 1})
    with _client(store, stage_dir) as c:
        c.post("/admin/reload")
        for row in _rows(clf, 12):
            assert c.post(f"/models/{CLF}/invocations", json={"dataframe_records": [row]}).status_code == 200
        stage = c.app.state.serving.slots[CLF].stage
        assert stage.queued_rows == 5 and stage.dropped == 7


def test_a_scorer_that_cannot_keep_up_makes_the_worker_drop_not_queue(world, clf, monkeypatch):
    """The scorer stopped (SIGSTOP): its pipe fills, later batches are dropped and counted; the
    champion answers throughout; once it runs again, what it got is recorded with the counts."""
    store, stage_dir = world
    monkeypatch.setattr(shadow_scorer, "PIPE_BYTES", 4096)  # the smallest pipe: full after a few batches
    monkeypatch.setattr(staging, "SEND_SECONDS", 0.005)
    store.stage(CLF, {"version": 2, "mode": "shadow", "share": 1.0, "champion": 1})
    rows = _rows(clf, 200)
    with _client(store, stage_dir) as c:
        stage = c.app.state.serving.slots[CLF].stage
        scorer = stage.scorer.proc
        os.kill(scorer.pid, signal.SIGSTOP)
        try:
            for row in rows:
                assert c.post(f"/models/{CLF}/invocations", json={"dataframe_records": [row]}).status_code == 200
            time.sleep(0.1)
            assert stage.dropped > 0 and stage.mirrored > 0
            assert stage.mirrored + stage.dropped + stage.queued_rows == len(rows)
            # after a batch the scorer could not take, requests are counted, not recorded (backoff)
            assert stage.backoff_until > 0
            stage.backoff_until = time.monotonic() + 60
            before, queued = stage.dropped, stage.queued_rows
            assert c.post(f"/models/{CLF}/invocations", json={"dataframe_records": [rows[0]]}).status_code == 200
            assert stage.queued_rows == queued and stage.dropped == before + 1
            dropped = stage.dropped
        finally:
            os.kill(scorer.pid, signal.SIGCONT)
    assert scorer.poll() == 0  # it wrote what it had and exited with the worker
    stats = json.loads(next((stage_dir / CLF).glob("stage-v2-stats-*.json")).read_text())
    sent = len(rows) + 1  # and the one request during the backoff
    assert stats["dropped"] == dropped and stats["mirrored"] == sent - dropped
    assert _evidence(stage_dir).n == sent - dropped


def test_unstaged_candidate_is_unloaded(world, clf):
    store, stage_dir = world
    store.stage(CLF, {"version": 2, "mode": "shadow", "share": 1.0, "champion": 1})
    with _client(store, stage_dir) as c:
        c.post("/admin/reload")
        stage = c.app.state.serving.slots[CLF].stage
        assert stage.version == 2
        scorer = stage.scorer.proc
        assert scorer.poll() is None
        store.unstage(CLF)
        c.post("/admin/reload")
        assert c.app.state.serving.slots[CLF].stage is None
        assert scorer.poll() == 0  # its process ended with the stage
        assert c.get("/v2/health/ready").status_code == 200


def test_a_slow_load_does_not_undo_a_newer_pointer(world, clf, monkeypatch):
    """The poll and POST /admin/reload both follow staged.json: the poll's load (slow: a thread and a
    scorer's start) must not land after, and undo, the reload's newer pointer (seen with two busy
    workers: one stayed in shadow for good after the pointer said canary)."""
    store, stage_dir = world
    delays = [1.0]  # the first load (the poll's) is slow, later ones are not
    build = staging.Stages._build

    def slow_build(self, *args):
        time.sleep(delays.pop(0) if delays else 0.0)
        return build(self, *args)

    monkeypatch.setattr(staging.Stages, "_build", slow_build)
    with _client(store, stage_dir) as c:
        shadow = {"version": 2, "mode": "shadow", "share": 1.0, "champion": 1}
        store.stage(CLF, shadow)
        time.sleep(0.3)  # the poll has seen it and is loading
        c.post("/admin/reload")  # a deploy's reload meanwhile
        store.stage(CLF, {**shadow, "mode": "canary", "share": 0.3})
        c.post("/admin/reload")
        time.sleep(1.2)  # past the slow load
        stage = c.app.state.serving.slots[CLF].stage
        assert (stage.version, stage.mode, stage.share) == (2, "canary", 0.3)


def test_the_scorer_idles_on_its_workers_own_core_and_batches_beside_other_work():
    """Pinned to one CPU with its worker, the scorer runs only in the worker's idle time
    (SCHED_IDLE); with several CPUs it shares them with other work at SCHED_BATCH."""
    import subprocess
    import sys

    code = (
        "import os; from ml_platform.serving.shadow_scorer import _policy; "
        "os.sched_setaffinity(0, {{min(os.sched_getaffinity(0))}}) if {pin} else None; "
        "print(_policy() == os.SCHED_IDLE, _policy() == os.SCHED_BATCH)"
    )
    pinned = subprocess.run([sys.executable, "-c", code.format(pin=True)], capture_output=True, text=True)
    assert pinned.stdout.split() == ["True", "False"], pinned.stdout + pinned.stderr
    if len(os.sched_getaffinity(0)) > 1:
        shared = subprocess.run([sys.executable, "-c", code.format(pin=False)], capture_output=True, text=True)
        assert shared.stdout.split() == ["False", "True"], shared.stdout + shared.stderr


def test_the_sends_of_one_wake_up_are_scored_as_one_batch_per_champion():
    """The scorer joins the frames it read in one wake-up (one model call instead of one per
    20-ms send), but never across a champion swap, and an empty frame (final counts) adds none."""
    import marshal

    def msg(champion, recs, dropped=0):
        head = {"mode": "shadow", "candidate": 2, "champion": champion, "plan": (), "id_column": None}
        head |= {"dtypes": ["<i8"], "records": len(recs), "ts": 1.0 if recs else 0.0, "dropped": dropped}
        return head, b"".join(marshal.dumps(r, 2) for r in recs)

    got = shadow_scorer.merged(
        [msg(1, [("a",), ("b",)]), msg(1, [("c",)], dropped=3), msg(2, [("d",)]), msg(2, [], dropped=5)]
    )
    assert [(h["champion"], h["records"], h["dropped"], h["ts"]) for h, _ in got] == [(1, 3, 3, 1.0), (2, 1, 5, 1.0)], (
        got
    )
    first = got[0]
    assert marshal.loads(b"[" + shadow_scorer._COUNT.pack(3) + first[1]) == [("a",), ("b",), ("c",)]
    # rows after an empty frame keep their own time
    got = shadow_scorer.merged([msg(1, []), msg(1, [("a",)])])
    assert [(h["records"], h["ts"]) for h, _ in got] == [(0, 0.0), (1, 1.0)], got


def _until(cond, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not cond():
        assert time.monotonic() < deadline, f"not within {seconds}s"
        time.sleep(0.02)


class _Alone:
    """What uvicorn with ``serving/protocol.py`` tells the app: this request is the only one in
    flight (``batching.IN_FLIGHT``), so a shadow's copy is scored in the worker after the answer."""

    def __init__(self, app, flight: int = 1):
        self.app, self.on, self.flight = app, True, flight

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and self.on:
            scope[IN_FLIGHT] = {object() for _ in range(self.flight)}
        await self.app(scope, receive, send)


def test_a_request_alone_is_scored_in_the_worker_and_recorded_as_the_scorer_would(world, clf, monkeypatch):
    monkeypatch.setattr(staging, "INLINE_MAX_MS", 1e6)  # a preempted call on a busy machine: still here
    store, stage_dir = world
    store.stage(CLF, {"version": 2, "mode": "shadow", "share": 1.0, "champion": 1})
    rows = _rows(clf, 25)
    app = create_app(store.root, [CLF], poll_seconds=0.05, stage_dir=stage_dir)
    alone = _Alone(app)
    with TestClient(alone) as c:
        stage = app.state.serving.slots[CLF].stage
        for prefix, on in (("w", True), ("s", False)):  # in the worker, then (not alone) by the scorer
            alone.on = on
            for i, row in enumerate(rows):
                r = c.post(
                    f"/models/{CLF}/invocations", json={"dataframe_records": [row]}, headers={RID: f"{prefix}{i}"}
                )
                assert r.status_code == 200 and r.headers["x-model-version"] == "1", r.text
        _until(lambda: stage.scored_here == 25)  # appended to the .frames file at the next send
        assert stage.inline, stage.inline_ms
    frames = sorted((stage_dir / CLF).glob("stage-v2-*.frames"))
    assert len(frames) == 1 and frames[0].name.endswith(f"-{os.getpid()}.frames"), frames
    ev = _evidence(stage_dir)
    assert ev.n == 50 and (ev.candidate_scores == ev.champion_scores).all()
    by = ev.rows.assign(k=ev.rows[COL_REQUEST].str[1:].astype(int), src=ev.rows[COL_REQUEST].str[0])
    w, s = (by[by.src == x].sort_values("k").reset_index(drop=True) for x in ("w", "s"))
    assert list(w[COL_ID]) == list(s[COL_ID])  # the same rows, whoever scored them
    for col in COLS[1:]:
        if col in ("tenure", "charges"):
            np.testing.assert_allclose(w[col].astype(float), s[col].astype(float), rtol=1e-6)
        else:
            assert list(w[col].astype(str)) == list(s[col].astype(str)), col
    assert len(ev.latency_ms) >= 25  # each call in the worker timed


def test_a_candidate_too_slow_for_the_worker_is_left_to_the_scorer(world, clf, monkeypatch):
    monkeypatch.setattr(staging, "INLINE_MAX_MS", 0.0)  # any call is too slow
    store, stage_dir = world
    store.stage(CLF, {"version": 2, "mode": "shadow", "share": 1.0, "champion": 1})
    app = create_app(store.root, [CLF], poll_seconds=0.05, stage_dir=stage_dir)
    with TestClient(_Alone(app)) as c:
        stage = app.state.serving.slots[CLF].stage
        for row in _rows(clf, 10):
            assert c.post(f"/models/{CLF}/invocations", json={"dataframe_records": [row]}).status_code == 200
        _until(lambda: stage.scored_here == 1)
        assert not stage.inline
    assert _evidence(stage_dir).n == 10


@pytest.mark.parametrize("share", [1.0, 0.0])  # all of its time (a loaded machine), or none
def test_copies_of_requests_that_were_not_alone_are_scored_here_in_batches_within_a_share(
    world, clf, monkeypatch, share
):
    """Under load (other requests in flight) a shadow's single-row copies are scored in the
    worker in batches of INLINE_BATCH, each after an answer went out (the rest at the next send),
    while they take under INLINE_SHARE of its time; beyond it they are dropped and counted."""
    monkeypatch.setattr(staging, "INLINE_SHARE", share)
    monkeypatch.setattr(staging, "INLINE_MAX_MS", 1e6)
    monkeypatch.setattr(staging, "SEND_SECONDS", 30)  # no send in between: the batches are the answers'
    store, stage_dir = world
    store.stage(CLF, {"version": 2, "mode": "shadow", "share": 1.0, "champion": 1})
    rows = _rows(clf, staging.INLINE_BATCH + 8)
    app = create_app(store.root, [CLF], poll_seconds=0.05, stage_dir=stage_dir)
    with TestClient(_Alone(app, flight=3)) as c:
        stage = app.state.serving.slots[CLF].stage
        for i, row in enumerate(rows):
            r = c.post(f"/models/{CLF}/invocations", json={"dataframe_records": [row]}, headers={RID: f"b{i}"})
            assert r.status_code == 200 and r.headers["x-model-version"] == "1", r.text
        if share:  # the full batch was scored once its last answer went out; the rest waits for a send
            assert len(stage.batch) == 8 and stage.srecords == staging.INLINE_BATCH, stage.srecords
        else:  # with no share to spend, a copy is counted as dropped at once, never kept
            assert not stage.batch and stage.dropped == len(rows), stage.dropped
        scorer = stage.scorer
    got = (stage.scored_here, stage.dropped, scorer.scored)  # the last send: at shutdown
    ev = _evidence(stage_dir)
    if share:
        assert got == (len(rows), 0, 0) and ev.n == len(rows), got
        assert (ev.candidate_scores == ev.champion_scores).all() and set(ev.rows[COL_REQUEST]) == {
            f"b{i}" for i in range(len(rows))
        }
        assert len(ev.latency_ms) == 1  # a batch's time is not a row's latency: one row timed alone
    else:
        assert got == (0, len(rows), 0) and ev.n == 0 and ev.dropped == len(rows), (got, ev.dropped)


def test_batches_under_load_are_paced_over_time_not_spent_at_the_start_of_each_second(world, clf, monkeypatch):
    """A batch that took t begins the next no sooner than t / INLINE_SHARE after it began; copies
    in between are dropped (counted): the worker's share for the shadow is spread evenly over
    time, and so are the copies scored."""
    monkeypatch.setattr(staging, "INLINE_SHARE", 1e-9)  # one batch, then a pause of days
    monkeypatch.setattr(staging, "INLINE_MAX_MS", 1e6)
    monkeypatch.setattr(staging, "SEND_SECONDS", 30)
    store, stage_dir = world
    store.stage(CLF, {"version": 2, "mode": "shadow", "share": 1.0, "champion": 1})
    rows = _rows(clf, staging.INLINE_BATCH + 12)
    app = create_app(store.root, [CLF], poll_seconds=0.05, stage_dir=stage_dir)
    with TestClient(_Alone(app, flight=3)) as c:
        stage = app.state.serving.slots[CLF].stage

        def post(i):
            r = c.post(f"/models/{CLF}/invocations", json={"dataframe_records": [rows[i]]}, headers={RID: f"p{i}"})
            assert r.status_code == 200 and r.headers["x-model-version"] == "1", r.text

        for i in range(staging.INLINE_BATCH + 4):
            post(i)
        assert stage.srecords == staging.INLINE_BATCH and not stage.batch, (stage.srecords, len(stage.batch))
        assert stage.dropped == 4 and stage.paced_until > time.perf_counter() + 3600, stage.paced_until
        stage.paced_until = time.perf_counter()  # the pause is over
        for i in range(staging.INLINE_BATCH + 4, len(rows)):
            post(i)
        assert len(stage.batch) == 8 and stage.dropped == 4, (len(stage.batch), stage.dropped)
    ev = _evidence(stage_dir)  # the 8 in the open batch: scored at shutdown
    assert ev.n == staging.INLINE_BATCH + 8 and ev.dropped == 4, (ev.n, ev.dropped)
    assert f"p{staging.INLINE_BATCH}" not in set(ev.rows[COL_REQUEST])


def test_a_regressor_scored_both_ways_reads_back_as_one_set_of_rows(tmp_path, reg, monkeypatch):
    """Copies scored in the worker (.frames) and by the scorer (.jsonl) of a [N, 1]-output model."""
    monkeypatch.setattr(staging, "INLINE_MAX_MS", 1e6)  # a preempted call on a busy machine: still here
    store = ModelStore(tmp_path / "serving")
    publish(store, REG, reg, 1)
    publish(store, REG, reg, 2, point=False)
    store.stage(REG, {"version": 2, "mode": "shadow", "share": 1.0, "champion": 1})
    stage_dir = tmp_path / "stage"
    app = create_app(store.root, [REG], poll_seconds=0.05, stage_dir=stage_dir)
    alone = _Alone(app)
    rows = records(reg.frame.head(10), ["size", "rooms", "city", "zone"])
    with TestClient(alone) as c:
        for on in (True, False):
            alone.on = on
            for row in rows:
                assert c.post(f"/models/{REG}/invocations", json={"dataframe_records": [row]}).status_code == 200
    assert {p.suffix for p in (stage_dir / REG).glob("stage-v2-2*")} == {".frames", ".jsonl"}
    ev = read_evidence(stage_dir / REG, 2)
    assert ev.n == 20 and ev.champion_scores.shape == (20,) and ev.candidate_scores.shape == (20,)
    np.testing.assert_allclose(ev.candidate_scores, ev.champion_scores)


def test_a_short_write_leaves_no_torn_block_and_a_closed_stage_keeps_nothing(world, clf, monkeypatch):
    monkeypatch.setattr(staging, "INLINE_MAX_MS", 1e6)  # a preempted call on a busy machine: still here
    store, stage_dir = world
    champ, cand = load_version(store, CLF, 1, None), load_version(store, CLF, 2, None)
    out = stage_dir / CLF
    out.mkdir(parents=True)
    stage = staging.Stage({"version": 2, "mode": "shadow", "share": 1.0}, cand, 10.0, out)
    parsed = [champ.schema.parse_mlflow({"dataframe_records": [r]}) for r in _rows(clf, 4)]

    def one(p) -> bool:
        kept = stage.mirror(None, p, champ.run(p.feeds), champ, alone=True, here=True)
        stage.score_due()
        stage.send()
        return kept

    assert one(parsed[0])
    real = os.write
    half = lambda fd, data: real(fd, data[: len(data) // 2] if fd == stage.frames_fd else data)  # noqa: E731
    with monkeypatch.context() as m:
        m.setattr(staging.os, "write", half)  # a full disk: the kernel takes half the block
        assert one(parsed[1])
    assert one(parsed[2])
    asyncio.run(stage.close())  # no scorer: the stage still writes and closes what it scored here
    assert not one(parsed[3])  # a copy reaching a closed stage is not kept
    assert (stage.mirrored, stage.dropped, stage.queued_rows, stage.frames_fd) == (2, 1, 0, None)
    assert count_rows(out, 2) == 2 and read_evidence(out, 2).n == 2


def test_a_batch_the_candidate_fails_goes_to_the_scorer_and_the_client_never_sees_it(world, clf):
    store, stage_dir = world
    store.stage(CLF, {"version": 2, "mode": "shadow", "share": 1.0, "champion": 1})
    rows = _rows(clf, staging.INLINE_BATCH)
    app = create_app(store.root, [CLF], poll_seconds=0.05, stage_dir=stage_dir)
    with TestClient(_Alone(app, flight=3)) as c:
        stage = app.state.serving.slots[CLF].stage
        real = stage.model.run

        def run(feeds):
            if len(next(iter(feeds.values()))) > 1:
                raise RuntimeError("boom")
            return real(feeds)

        stage.model.run = run  # in the worker only: the scorer has its own copy of the candidate
        for row in rows:
            assert c.post(f"/models/{CLF}/invocations", json={"dataframe_records": [row]}).status_code == 200
        assert stage.scored_here == 0 and stage.srecords == 0
        assert not stage.inline and stage.paced_until > 0  # the scorer's from now on; its time counted
    ev = _evidence(stage_dir)
    assert ev.n == len(rows) and not list((stage_dir / CLF).glob("*.frames"))


def test_one_slow_call_does_not_send_a_fast_candidate_to_the_scorer(world, clf, monkeypatch):
    """A cold or preempted call (here 20 ms, 20 times the limit) is no verdict: the average is."""
    monkeypatch.setattr(staging, "INLINE_MAX_MS", 1.0)  # 100 times the usual call: a busy machine's margin
    store, stage_dir = world
    store.stage(CLF, {"version": 2, "mode": "shadow", "share": 1.0, "champion": 1})
    app = create_app(store.root, [CLF], poll_seconds=0.05, stage_dir=stage_dir)
    with TestClient(_Alone(app)) as c:
        stage = app.state.serving.slots[CLF].stage
        real, calls = stage.model.run, []

        def run(feeds):
            calls.append(1)
            if len(calls) == 1:
                time.sleep(0.02)
            return real(feeds)

        stage.model.run = run
        for row in _rows(clf, 25):
            assert c.post(f"/models/{CLF}/invocations", json={"dataframe_records": [row]}).status_code == 200
        _until(lambda: stage.scored_here == 25)
        assert stage.inline and stage.inline_ms < staging.INLINE_MAX_MS, stage.inline_ms
