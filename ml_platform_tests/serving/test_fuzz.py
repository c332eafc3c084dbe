"""Random JSON at the scoring routes: whatever arrives, the answer is never a 5xx, and a
4xx always carries the error body."""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ml_platform.serving.app import create_app
from ml_platform_tests.serving.conftest import CLF, REG, TestClient

CLF_COLUMNS = ["customer_id", "tenure", "charges", "plan", "region"]

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(["pro", "basic", "3", "", "\x00", "NaN"])
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
columns = st.lists(st.sampled_from(CLF_COLUMNS + ["other", ""]) | st.text(max_size=5), max_size=6)
cells = scalars | st.lists(scalars, max_size=2) | st.dictionaries(st.text(max_size=3), scalars, max_size=2)

split_bodies = st.builds(
    lambda cols, rows: {"dataframe_split": {"columns": cols, "data": rows}},
    st.one_of(st.just(CLF_COLUMNS), columns),
    st.lists(st.lists(cells, min_size=0, max_size=6), max_size=4),
)
record_bodies = st.builds(
    lambda recs, key: {key: recs},
    st.lists(st.fixed_dictionaries({}, optional={c: cells for c in CLF_COLUMNS + ["extra"]}), max_size=4),
    st.sampled_from(["dataframe_records", "inputs"]),
)
tensor = st.fixed_dictionaries(
    {
        "name": st.sampled_from(CLF_COLUMNS + ["size", "x"]),
        "shape": st.lists(st.integers(-1, 3), min_size=0, max_size=3),
        "datatype": st.sampled_from(["FP32", "FP64", "INT64", "BYTES", "BOOL", "UINT8", "STRING"]),
        "data": st.lists(cells, max_size=4),
    },
    optional={"parameters": json_values},
)
v2_bodies = st.fixed_dictionaries(
    {"inputs": st.lists(tensor, max_size=6)},
    optional={"id": json_values, "outputs": json_values, "parameters": json_values},
)

any_body = st.one_of(json_values, split_bodies, record_bodies, v2_bodies)
FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", 150)),
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def fuzz_client(tmp_path_factory, clf, reg):
    from ml_platform.serving.store import ModelStore
    from ml_platform_tests.serving.conftest import publish

    root = tmp_path_factory.mktemp("fuzz") / "serving"
    store = ModelStore(root)
    publish(store, CLF, clf, 1)
    publish(store, REG, reg, 1)
    with TestClient(create_app(root, [CLF, REG], poll_seconds=3600, max_body_bytes=64 * 1024)) as c:
        yield c


def check(resp):
    assert resp.status_code < 500, resp.text
    if resp.status_code >= 400:
        err = resp.json()["error"]
        assert isinstance(err["kind"], str) and isinstance(err["message"], str)
        assert err["field"] is None or isinstance(err["field"], str)


@FUZZ
@given(body=any_body, model=st.sampled_from([CLF, REG]))
def test_fuzz_invocations(fuzz_client, body, model):
    check(
        fuzz_client.post(
            f"/models/{model}/invocations", content=json.dumps(body), headers={"content-type": "application/json"}
        )
    )


@FUZZ
@given(body=any_body, model=st.sampled_from([CLF, REG]))
def test_fuzz_v2_infer(fuzz_client, body, model):
    check(
        fuzz_client.post(
            f"/v2/models/{model}/infer", content=json.dumps(body), headers={"content-type": "application/json"}
        )
    )


@FUZZ
@given(raw=st.binary(max_size=200))
def test_fuzz_raw_bytes(fuzz_client, raw):
    check(fuzz_client.post(f"/models/{CLF}/invocations", content=raw, headers={"content-type": "application/json"}))
    assert fuzz_client.get("/v2/health/live").status_code == 200
