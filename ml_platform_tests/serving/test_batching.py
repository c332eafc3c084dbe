"""Concurrent single-row requests share ONNX Runtime calls, and each still gets exactly
its own answer; a row that breaks its batch fails alone."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest

from ml_platform.serving.app import create_app
from ml_platform.serving.batching import MAX_BATCH_ROWS, RowBatcher
from ml_platform.serving.model import LoadedModel
from ml_platform.serving.requests import Parsed
from ml_platform_tests.serving.conftest import CLF, records

COLS = ["customer_id", "tenure", "charges", "plan", "region"]


@pytest.fixture(scope="module")
def clf_model(clf) -> LoadedModel:
    return LoadedModel(CLF, 1, clf.onnx, clf.meta_for(1))


def _rows(clf, n: int) -> list[dict]:
    return records(clf.frame.iloc[:n], COLS)


def _submit_all(batcher: RowBatcher, parsed: list[Parsed]) -> list:
    async def go():
        futs = [batcher.submit(p) for p in parsed]  # all in one loop turn
        return await asyncio.gather(*futs, return_exceptions=True)

    return asyncio.run(go())


def test_one_loop_turn_is_one_call_and_rows_keep_their_answers(clf, clf_model):
    parsed = [clf_model.schema.parse_records([r]) for r in _rows(clf, 40)]
    calls: list[int] = []
    got = _submit_all(RowBatcher(clf_model, calls.append), parsed)
    assert calls == [40]
    for p, (lab, proba) in zip(parsed, got):
        want_lab, want_proba = clf_model.run(p.feeds)  # the row on its own
        assert lab.shape == (1,) and proba.shape == (1, 2)
        assert lab[0] == want_lab[0]
        np.testing.assert_array_equal(proba, want_proba)  # trees: rows are independent


def test_a_backlog_runs_in_calls_of_at_most_max_rows(clf, clf_model):
    rows = _rows(clf, 50)
    parsed = [clf_model.schema.parse_records([rows[i % 50]]) for i in range(MAX_BATCH_ROWS + 7)]
    calls: list[int] = []
    got = _submit_all(RowBatcher(clf_model, calls.append), parsed)
    assert calls == [MAX_BATCH_ROWS, 7]
    assert [g[0][0] for g in got] == [clf_model.run(p.feeds)[0][0] for p in parsed]


def test_a_row_that_breaks_the_batch_fails_alone(clf, clf_model):
    parsed = [clf_model.schema.parse_records([r]) for r in _rows(clf, 5)]
    nums, cats = parsed[2].row
    parsed[2] = Parsed(1, None, None, None, (["not a number"] + nums[1:], cats), clf_model.schema)
    got = _submit_all(RowBatcher(clf_model), parsed)
    assert isinstance(got[2], ValueError)
    for i in (0, 1, 3, 4):
        np.testing.assert_array_equal(got[i][1], clf_model.run(parsed[i].feeds)[1])


def test_concurrent_http_requests_are_batched_and_answered_right(serving_dir, clf):
    app = create_app(serving_dir, [CLF], poll_seconds=3600)
    rows = _rows(clf, 60)
    url = f"/models/{CLF}/invocations"

    async def go():
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                alone = [(await c.post(url, json={"dataframe_records": [r]})).json() for r in rows]
                together = await asyncio.gather(*[c.post(url, json={"dataframe_records": [r]}) for r in rows])
                metrics = (await c.get("/metrics")).text
        return alone, together, metrics

    alone, together, metrics = asyncio.run(go())
    assert all(r.status_code == 200 and r.headers["x-model-version"] == "1" for r in together)
    assert [r.json() for r in together] == alone
    count = next(
        line
        for line in metrics.splitlines()
        if line.startswith('ml_platform_inference_batch_rows_count{model="churn"}')
    )
    calls = int(float(count.rsplit(" ", 1)[1]))
    # 60 requests one by one + 60 at once (+ none for metrics): the 60 at once shared calls
    assert 60 < calls < 120, metrics
    assert 'ml_platform_inference_batch_rows_sum{model="churn"} 120' in metrics


def test_a_model_whose_rows_are_not_independent_is_not_batched(clf, monkeypatch):
    """Validation compares each smoke row alone with the batch; a graph where rows influence
    each other (simulated: every row shifted by the first row of its call) keeps row-by-row calls."""
    m = LoadedModel(CLF, 1, clf.onnx, clf.meta_for(1))
    m.validate(50.0)
    assert m.batchable
    real = m.run
    monkeypatch.setattr(m, "run", lambda feeds: [o + o[:1] if o.dtype.kind == "f" else o for o in real(feeds)])
    m.validate(50.0)
    assert not m.batchable


def test_bad_requests_among_concurrent_good_ones_fail_alone(serving_dir, clf):
    app = create_app(serving_dir, [CLF], poll_seconds=3600)
    rows = _rows(clf, 30)
    url = f"/models/{CLF}/invocations"
    bad = [
        {**rows[0], "tenure": "x"},
        {**rows[1], "plan": "gold"},
        {k: v for k, v in rows[2].items() if k != "charges"},
    ]

    async def go():
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
                alone = [(await c.post(url, json={"dataframe_records": [r]})).json() for r in rows]
                mixed = [{"dataframe_records": [r]} for r in rows]
                for i, b in enumerate(bad):
                    mixed.insert(5 + 7 * i, {"dataframe_records": [b]})
                return alone, await asyncio.gather(*[c.post(url, json=body) for body in mixed])

    alone, answers = asyncio.run(go())
    errors = [r for r in answers if r.status_code != 200]
    assert [(r.status_code, r.json()["error"]["field"]) for r in errors] == [
        (400, "tenure"),
        (400, "plan"),
        (400, "charges"),
    ]
    assert [r.json() for r in answers if r.status_code == 200] == alone
