"""The single-row fast path gives what the general path gives: same feeds, same errors,
same answers and metrics; and the corked transport only merges writes, never reorders."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import orjson
import pytest

from ml_platform.serving.errors import RequestError
from ml_platform.serving.model import LoadedModel
from ml_platform_tests.serving.conftest import CLF, REG

GOOD = {"customer_id": "x1", "tenure": 10.0, "charges": 55.5, "plan": "pro", "region": 3}

ROWS = [
    GOOD,
    {**GOOD, "tenure": None, "plan": None, "region": "1"},
    {**GOOD, "tenure": 0, "charges": -1e30, "region": 3.0},
    {**GOOD, "tenure": 600, "charges": 1e-300, "region": 12345678901234567890},
    {**GOOD, "tenure": math.nan},
    {k: v for k, v in GOOD.items() if k != "customer_id"},
    # errors, each must match the general path's kind, field and message
    {**GOOD, "tenure": "x"},
    {**GOOD, "tenure": True},
    {**GOOD, "tenure": 601},
    {**GOOD, "tenure": -1},
    {**GOOD, "charges": None},
    {**GOOD, "charges": 1e39},
    {**GOOD, "charges": -(10**40)},
    {**GOOD, "plan": "gold"},
    {**GOOD, "plan": 3},
    {**GOOD, "plan": ["pro"]},
    {**GOOD, "region": False},
    {**GOOD, "region": {"a": 1}},
    {**GOOD, "extra": 1},
    {k: v for k, v in GOOD.items() if k != "charges"},
    {**{k: v for k, v in GOOD.items() if k != "charges"}, "extra": 1},
    {**GOOD, "tenure": "x", "plan": "gold"},
]


@pytest.fixture(scope="module")
def clf_model(clf) -> LoadedModel:
    return LoadedModel(CLF, 1, clf.onnx, clf.meta_for(1))


def _general(schema, row):
    """The general per-column path (what every request used before the fast path)."""
    cols = {f.name: (row.get(f.name),) for f in schema.features}
    feeds = {}
    for f in schema.features:
        missing = [c for c in schema.names if c not in row]
        if missing:
            schema._missing(missing[0], 0)
        for k in row:
            if k not in schema.allowed:
                schema._unknown(k)
        arr = f.convert(cols[f.name])
        feeds[f.name] = arr.reshape(-1, 1) if f.rank2 else arr
    return feeds


def _outcome(fn):
    try:
        return "ok", fn()
    except RequestError as e:
        return "error", (e.kind, e.field, e.message, e.status)


@pytest.mark.parametrize("row", ROWS, ids=range(len(ROWS)))
def test_single_row_feeds_and_errors_match_general_path(clf_model, row):
    schema = clf_model.schema
    fast = _outcome(lambda: schema.parse_records([row]))
    slow = _outcome(lambda: _general(schema, row))
    assert fast[0] == slow[0], (fast, slow)
    if fast[0] == "error":
        assert fast[1] == slow[1]
        # ... and the same as a two-row request's error on row 0 (the small-batch path)
        two = _outcome(lambda: schema.parse_records([row, GOOD]))
        assert two == fast
        return
    parsed, feeds = fast[1], slow[1]
    assert parsed.n == 1 and list(parsed.feeds) == list(feeds)
    for name, want in feeds.items():
        got = parsed.feeds[name]
        assert got.shape == want.shape and got.dtype == want.dtype, name
        assert got.flags.c_contiguous
        if got.dtype == object:
            assert got.tolist() == want.tolist()
        else:
            np.testing.assert_array_equal(got, want)
    assert parsed.ids == ([row.get("customer_id")])
    # the live sample's columns are the feeds, flattened
    assert orjson.dumps({k: v.tolist() for k, v in parsed.columns.items()}) == orjson.dumps(
        {k: v.reshape(-1).tolist() for k, v in feeds.items()}
    )  # NaN -> null, as the sample writes
    # and the model answers exactly as it does on the general path's feeds
    for a, b in zip(clf_model.run(parsed.feeds), clf_model.run(feeds)):
        np.testing.assert_array_equal(a, b)


def test_small_batches_match_row_by_row(clf_model):
    schema = clf_model.schema
    rows = [r for r in ROWS[:6]]
    batch = schema.parse_records(rows)
    split = schema.parse_split({"columns": list(GOOD), "data": [[r.get(c) for c in GOOD] for r in rows[:5]]})
    lab, proba = clf_model.run(batch.feeds)
    for i, r in enumerate(rows):
        one_lab, one_proba = clf_model.run(schema.parse_records([r]).feeds)
        assert one_lab[0] == lab[i]
        np.testing.assert_array_equal(one_proba[0], proba[i])
    np.testing.assert_array_equal(clf_model.run(split.feeds)[1], proba[:5])


def test_metrics_count_single_and_multi_row_requests(client):
    url = f"/models/{CLF}/invocations"
    for _ in range(3):
        assert client.post(url, json={"dataframe_records": [GOOD]}).status_code == 200
    assert client.post(url, json={"dataframe_records": [GOOD, GOOD]}).status_code == 200
    assert client.post("/invocations", json={"dataframe_records": [GOOD]}).status_code == 400  # 2 models
    r = client.post(
        f"/v2/models/{CLF}/infer",
        json={
            "inputs": [
                {
                    "name": k,
                    "shape": [1],
                    "datatype": "FP32" if isinstance(v, float) else "BYTES" if isinstance(v, str) else "INT64",
                    "data": [v],
                }
                for k, v in GOOD.items()
            ]
        },
    )
    assert r.status_code == 200, r.text
    text = client.get("/metrics").text
    assert 'ml_platform_requests_total{model="churn",version="1",protocol="mlflow"} 4' in text
    assert 'ml_platform_requests_total{model="churn",version="1",protocol="v2"} 1' in text
    assert 'ml_platform_rows_total{model="churn",version="1"} 6' in text
    assert 'ml_platform_request_latency_seconds_count{model="churn",protocol="mlflow"} 4' in text
    preds = [line for line in text.splitlines() if line.startswith("ml_platform_predictions_total{")]
    assert sum(int(line.rsplit(" ", 1)[1]) for line in preds) == 6, preds
    assert len({line.rsplit(" ", 1)[0] for line in preds}) == len(preds)  # one series per class


def test_single_row_answer_matches_batch_answer(client):
    url = f"/models/{CLF}/invocations"
    one = client.post(url, json={"dataframe_records": [GOOD]})
    two = client.post(url, json={"dataframe_records": [GOOD, GOOD]})
    assert one.headers["x-model-version"] == "1" and one.headers["content-type"] == "application/json"
    assert one.json()["predictions"][0] == two.json()["predictions"][0]
    reg = client.post(
        f"/models/{REG}/invocations",
        json={"dataframe_records": [{"size": 70.0, "rooms": 2, "city": "milan", "zone": 1}]},
    )
    assert reg.status_code == 200 and isinstance(reg.json()["predictions"][0], float)


def test_unexpected_error_on_fast_path_is_a_json_500(client, monkeypatch):
    state = client.app.state.serving

    def boom(*a, **k):
        raise RuntimeError("sampler exploded")

    monkeypatch.setattr(state.sampler, "add", boom)
    r = client.post(f"/models/{CLF}/invocations", json={"dataframe_records": [GOOD]})
    assert r.status_code == 500
    assert r.json()["error"]["kind"] == "internal"


@pytest.mark.parametrize(
    "body,ct,kind,status",
    [
        (b"", "application/json", "empty_body", 400),
        (b"   ", "application/json", "empty_body", 400),
        (b"null", "application/json", "bad_request", 400),
        (b"{nope", "application/json", "invalid_json", 400),
        (b"{}", "text/plain", "unsupported_media_type", 415),
        (b'{"dataframe_records": [{}]}', "application/json; charset=utf-8", "missing_column", 400),
    ],
)
def test_body_errors_on_the_fast_read(client, body, ct, kind, status):
    r = client.post(f"/models/{CLF}/invocations", content=body, headers={"content-type": ct})
    assert r.status_code == status, r.text
    assert r.json()["error"]["kind"] == kind


# ---------------------------------------------------------------- corked transport
class _FakeTransport:
    def __init__(self):
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data):
        self.writes.append(bytes(data))

    def writelines(self, lines):
        self.writes.append(b"".join(lines))

    def is_closing(self):
        return self.closed

    def close(self):
        self.closed = True

    def get_write_buffer_size(self):
        return 0

    def get_extra_info(self, name, default=None):
        return ("127.0.0.1", 1) if name == "peername" else default


def test_corked_transport_joins_head_and_body_and_keeps_order():
    pytest.importorskip("httptools")
    from ml_platform.serving.protocol import CorkedTransport

    async def main():
        loop = asyncio.get_running_loop()
        raw = _FakeTransport()
        t = CorkedTransport(raw, loop)
        head = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"
        t.write(head)
        assert raw.writes == []
        t.write(b"{}")
        assert raw.writes == [head + b"{}"]  # one write for both
        # a head alone (HEAD, 100-continue, a slow streaming body) goes out on the next turn
        t.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        assert len(raw.writes) == 1
        await asyncio.sleep(0)
        assert raw.writes[-1] == b"HTTP/1.1 100 Continue\r\n\r\n"
        # bodies that are not heads pass straight through; close flushes what is held
        t.write(b"chunk")
        t.write(head)
        t.close()
        assert raw.writes[-2:] == [b"chunk", head] and raw.closed
        assert t.get_extra_info("peername") == ("127.0.0.1", 1)  # delegated
        await asyncio.sleep(0)  # the pending flush finds nothing to do
        assert raw.writes[-1] == head

    asyncio.run(main())
