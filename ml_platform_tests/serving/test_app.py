"""The endpoint in process (Starlette TestClient): every route, every kind of bad request,
parity with ``core.export.onnx_predict``, hot reload and infra validation."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest

from ml_platform.core.export import onnx_predict, session
from ml_platform.serving.app import create_app
from ml_platform.serving.store import ModelStore
from ml_platform_tests.serving.conftest import (
    CLF,
    REG,
    TestClient,
    publish,
    records,
    split_body,
)

CLF_COLS = ["customer_id", "tenure", "charges", "plan", "region"]
GOOD = {"customer_id": "x1", "tenure": 10.0, "charges": 55.5, "plan": "pro", "region": 3}


def clf_url(name=CLF):
    return f"/models/{name}/invocations"


def assert_error(resp, status, kind, field="__any__", in_message=None):
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert set(err) == {"kind", "field", "message"}
    assert err["kind"] == kind, err
    if field != "__any__":
        assert err["field"] == field, err
    if in_message:
        assert in_message in err["message"], err
    return err


# ------------------------------------------------------------------ predictions
def test_mlflow_split_matches_onnx_predict(client, clf):
    df = clf.frame.iloc[:60]
    resp = client.post(clf_url(), json=split_body(records(df, CLF_COLS), CLF_COLS))
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-model-version"] == "1"
    preds = resp.json()["predictions"]
    ref = onnx_predict(session(clf.onnx), df, clf.cfg)
    got = np.array([[p["probabilities"][str(c)] for c in clf.meta["classes"]] for p in preds], dtype=np.float32)
    np.testing.assert_array_equal(got, ref)
    classes = np.array(clf.meta["classes"])
    assert [p["label"] for p in preds] == classes[ref.argmax(axis=1)].tolist()
    assert all(set(p["probabilities"]) == {"0", "1"} for p in preds)


def test_mlflow_records_and_inputs_agree(client, clf):
    df = clf.frame.iloc[:25]
    rows = records(df, CLF_COLS)
    ref = onnx_predict(session(clf.onnx), df, clf.cfg)
    columnar = {c: [r[c] for r in rows] for c in CLF_COLS}
    for body in ({"dataframe_records": rows}, {"inputs": rows}, {"inputs": columnar}):
        resp = client.post(clf_url(), json=body)
        assert resp.status_code == 200, resp.text
        got = [p["probabilities"]["1"] for p in resp.json()["predictions"]]
        np.testing.assert_array_equal(np.array(got, dtype=np.float32), ref[:, 1])


def test_regression_matches_onnx_predict(client, reg):
    cols = list(reg.cfg.features)
    df = reg.frame.iloc[:40]
    resp = client.post(f"/models/{REG}/invocations", json={"dataframe_records": records(df, cols)})
    assert resp.status_code == 200, resp.text
    ref = onnx_predict(session(reg.onnx), df, reg.cfg)
    np.testing.assert_array_equal(np.array(resp.json()["predictions"], dtype=np.float32), ref)


def test_v2_infer_matches_onnx_predict(client, clf, reg):
    df = clf.frame.iloc[:20]
    rows = records(df, CLF_COLS)
    inputs = [
        {"name": "tenure", "shape": [20], "datatype": "FP64", "data": [r["tenure"] for r in rows]},
        {"name": "charges", "shape": [20, 1], "datatype": "FP32", "data": [[r["charges"]] for r in rows]},
        {"name": "plan", "shape": [20], "datatype": "BYTES", "data": [r["plan"] for r in rows]},
        {"name": "region", "shape": [20], "datatype": "INT64", "data": [r["region"] for r in rows]},
        {"name": "customer_id", "shape": [20], "datatype": "BYTES", "data": [r["customer_id"] for r in rows]},
    ]
    resp = client.post(f"/v2/models/{CLF}/infer", json={"id": "req-1", "inputs": inputs})
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-model-version"] == "1"
    body = resp.json()
    assert body["model_name"] == CLF and body["model_version"] == "1" and body["id"] == "req-1"
    out = {o["name"]: o for o in body["outputs"]}
    ref = onnx_predict(session(clf.onnx), df, clf.cfg)
    assert out["probabilities"]["shape"] == [20, 2] and out["probabilities"]["datatype"] == "FP32"
    np.testing.assert_array_equal(np.array(out["probabilities"]["data"], dtype=np.float32), ref.reshape(-1))
    assert out["label"]["shape"] == [20] and out["label"]["datatype"] == "INT64"
    assert out["label"]["data"] == ref.argmax(axis=1).tolist()

    only = client.post(f"/v2/models/{CLF}/infer", json={"inputs": inputs, "outputs": [{"name": "label"}]})
    assert [o["name"] for o in only.json()["outputs"]] == ["label"]

    rrows = records(reg.frame.iloc[:5], list(reg.cfg.features))
    rinputs = [
        {
            "name": c,
            "shape": [5],
            "datatype": "BYTES" if c in ("city", "zone") else "FP64",
            "data": [r[c] if c != "zone" else str(r[c]) for r in rrows],
        }
        for c in reg.cfg.features
    ]
    rresp = client.post(f"/v2/models/{REG}/infer", json={"inputs": rinputs})
    assert rresp.status_code == 200, rresp.text
    (pred,) = rresp.json()["outputs"]
    assert pred["name"] == "predictions" and pred["shape"] == [5]
    np.testing.assert_array_equal(
        np.array(pred["data"], dtype=np.float32), onnx_predict(session(reg.onnx), reg.frame.iloc[:5], reg.cfg)
    )


def test_integer_codes_and_their_strings_are_one_category(client):
    probs = []
    for code in (3, 3.0, "3"):
        resp = client.post(clf_url(), json={"dataframe_records": [{**GOOD, "region": code}]})
        assert resp.status_code == 200, resp.text
        probs.append(resp.json()["predictions"][0]["probabilities"])
    assert probs[0] == probs[1] == probs[2]


def test_nulls_follow_training_rules(client, clf):
    row = {**GOOD, "tenure": None, "plan": None}
    resp = client.post(clf_url(), json={"dataframe_records": [row]})
    assert resp.status_code == 200, resp.text
    import pandas as pd

    ref = onnx_predict(session(clf.onnx), pd.DataFrame([{**row, "tenure": np.nan}]), clf.cfg)
    assert np.float32(resp.json()["predictions"][0]["probabilities"]["1"]) == ref[0, 1]


def test_invocations_serves_the_only_model(single_client, client):
    resp = single_client.post("/invocations", json={"dataframe_records": [GOOD]})
    assert resp.status_code == 200 and resp.headers["x-model-version"] == "1"
    err = assert_error(client.post("/invocations", json={"dataframe_records": [GOOD]}), 400, "model_required", "model")
    assert CLF in err["message"] and REG in err["message"]


# ---------------------------------------------------------------- other routes
def test_v2_metadata(client):
    resp = client.get(f"/v2/models/{CLF}")
    assert resp.status_code == 200 and resp.headers["x-model-version"] == "1"
    meta = resp.json()
    assert meta["name"] == CLF and meta["versions"] == ["1"] and meta["platform"] == "onnxruntime"
    assert {i["name"]: i["datatype"] for i in meta["inputs"]} == {
        "tenure": "FP32",
        "charges": "FP32",
        "plan": "BYTES",
        "region": "BYTES",
    }
    assert [o["name"] for o in meta["outputs"]] == ["label", "probabilities"]
    assert meta["last_rejection"] is None and meta["ready"] is True
    assert client.get(f"/v2/models/{REG}").json()["outputs"][0]["name"] == "predictions"
    assert_error(client.get("/v2/models/nope"), 404, "unknown_model", "model")
    assert client.get(f"/v2/models/{CLF}/ready").status_code == 200


def test_health(client):
    assert client.get("/v2/health/live").json() == {"live": True}
    ready = client.get("/v2/health/ready")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    assert client.get("/v2").json()["models"] == sorted([CLF, REG])


def test_metrics_exposition(client):
    client.post(clf_url(), json={"dataframe_records": [GOOD, GOOD]})
    client.post(clf_url(), json={"dataframe_records": [{**GOOD, "tenure": "x"}]})
    client.post("/models/nope/invocations", json={})
    client.post(f"/models/{REG}/invocations", json={"dataframe_records": [REG_ROW]})
    text = client.get("/metrics").text
    assert 'ml_platform_requests_total{model="churn",version="1",protocol="mlflow"} 1' in text
    assert 'ml_platform_rows_total{model="churn",version="1"} 2' in text
    assert 'ml_platform_request_errors_total{model="churn",version="1",kind="wrong_type"} 1' in text
    assert 'ml_platform_request_errors_total{model="_unknown",version="",kind="unknown_model"} 1' in text
    assert 'ml_platform_request_latency_seconds_bucket{model="churn",protocol="mlflow",le="+Inf"} 1' in text
    assert 'ml_platform_predictions_total{model="churn",version="1",class=' in text
    assert 'ml_platform_prediction_value_count{model="price",version="1"} 1' in text
    assert 'ml_platform_model_version{model="churn"} 1' in text
    assert "# TYPE ml_platform_request_latency_seconds histogram" in text


REG_ROW = {"size": 70.0, "rooms": 2, "city": "milan", "zone": 1}


def test_openapi_describes_the_routes(client):
    doc = client.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    for path in (
        "/models/{name}/invocations",
        "/invocations",
        "/v2/models/{name}/infer",
        "/v2/models/{name}",
        "/v2/health/live",
        "/v2/health/ready",
        "/metrics",
        "/admin/reload",
    ):
        assert path in doc["paths"], path


def test_unknown_route_and_method_are_json(client):
    assert_error(client.get("/nope"), 404, "not_found", None)
    assert_error(client.get(clf_url()), 405, "method_not_allowed", None)


# ------------------------------------------------------------------ bad requests
def post_raw(client, body: bytes, url=None, ctype="application/json"):
    return client.post(url or clf_url(), content=body, headers={"content-type": ctype})


BAD_MLFLOW = {
    "not_json": (b"{not json", "invalid_json", "body", None),
    "empty_body": (b"", "empty_body", "body", None),
    "body_is_a_list": (b"[1, 2]", "bad_request", None, None),
    "no_known_key": (b'{"rows": []}', "bad_request", None, None),
    "two_keys": (
        json.dumps({"dataframe_split": {}, "dataframe_records": []}).encode(),
        "bad_request",
        "dataframe_records",
        None,
    ),
    "params_not_supported": (
        json.dumps({"dataframe_records": [GOOD], "params": {}}).encode(),
        "bad_request",
        "params",
        None,
    ),
    "split_not_object": (b'{"dataframe_split": [1]}', "bad_request", "dataframe_split", None),
    "split_columns_not_list": (
        b'{"dataframe_split": {"columns": "tenure", "data": []}}',
        "bad_request",
        "dataframe_split.columns",
        None,
    ),
    "ragged_rows": (
        json.dumps(
            {"dataframe_split": {"columns": CLF_COLS, "data": [["a", 1.0, 2.0, "pro", 3], ["b", 1.0, "pro", 3]]}}
        ).encode(),
        "bad_request",
        "dataframe_split.data[1]",
        "row 1",
    ),
    "row_not_a_list": (
        json.dumps({"dataframe_split": {"columns": CLF_COLS, "data": [{"a": 1}]}}).encode(),
        "bad_request",
        "dataframe_split.data[0]",
        "row 0",
    ),
    "empty_data": (
        json.dumps({"dataframe_split": {"columns": CLF_COLS, "data": []}}).encode(),
        "empty",
        "dataframe_split.data",
        None,
    ),
    "empty_records": (b'{"dataframe_records": []}', "empty", "dataframe_records", None),
    "record_not_object": (b'{"dataframe_records": [[1, 2]]}', "bad_request", "dataframe_records[0]", "row 0"),
    "missing_column": (
        json.dumps({"dataframe_records": [{k: v for k, v in GOOD.items() if k != "plan"}]}).encode(),
        "missing_column",
        "plan",
        None,
    ),
    "missing_in_split": (
        json.dumps(
            {"dataframe_split": {"columns": ["tenure", "charges", "plan"], "data": [[1.0, 2.0, "pro"]]}}
        ).encode(),
        "missing_column",
        "region",
        None,
    ),
    "unknown_column": (
        json.dumps({"dataframe_records": [{**GOOD, "colour": "red"}]}).encode(),
        "unknown_column",
        "colour",
        None,
    ),
    "duplicate_column": (
        json.dumps(
            {"dataframe_split": {"columns": CLF_COLS + ["plan"], "data": [["a", 1.0, 2.0, "pro", 3, "pro"]]}}
        ).encode(),
        "bad_request",
        "plan",
        None,
    ),
    "non_string_column_name": (
        json.dumps({"dataframe_split": {"columns": [1, 2], "data": [[1, 2]]}}).encode(),
        "bad_request",
        "dataframe_split.columns",
        None,
    ),
    "string_in_numeric": (
        json.dumps({"dataframe_records": [GOOD, {**GOOD, "tenure": "12"}]}).encode(),
        "wrong_type",
        "tenure",
        "row 1",
    ),
    "bool_in_numeric": (
        json.dumps({"dataframe_records": [{**GOOD, "charges": True}]}).encode(),
        "wrong_type",
        "charges",
        "row 0",
    ),
    # a JSON boolean in a categorical is the category 'true'/'false' (serving/values.py): not an allowed plan
    "bool_not_an_allowed_category": (
        json.dumps({"dataframe_records": [{**GOOD, "plan": True}]}).encode(),
        "out_of_schema",
        "plan",
        "row 0",
    ),
    "nested_in_numeric": (
        json.dumps({"dataframe_records": [{**GOOD, "charges": {"$gt": 1}}]}).encode(),
        "wrong_type",
        "charges",
        "row 0",
    ),
    "list_in_categorical": (
        json.dumps({"dataframe_records": [{**GOOD, "plan": ["pro"]}]}).encode(),
        "wrong_type",
        "plan",
        "row 0",
    ),
    "null_not_nullable": (
        json.dumps({"dataframe_records": [{**GOOD, "charges": None}]}).encode(),
        "null_not_allowed",
        "charges",
        "row 0",
    ),
    "below_min": (
        json.dumps({"dataframe_records": [GOOD, GOOD, {**GOOD, "tenure": -1}]}).encode(),
        "out_of_schema",
        "tenure",
        "row 2",
    ),
    "above_max_in_batch": (
        json.dumps({"dataframe_records": [GOOD] * 40 + [{**GOOD, "tenure": 601}]}).encode(),
        "out_of_schema",
        "tenure",
        "row 40",
    ),
    "huge_number": (
        b'{"dataframe_records": [{"tenure": 1, "charges": 1e300, "plan": "pro", "region": 1}]}',
        "out_of_schema",
        "charges",
        "float32",
    ),
    "unknown_category": (
        json.dumps({"dataframe_records": [{**GOOD, "plan": "gold"}]}).encode(),
        "out_of_schema",
        "plan",
        "row 0",
    ),
    "nan_literal": (
        b'{"dataframe_records": [{"tenure": NaN, "charges": 1, "plan": "pro", "region": 1}]}',
        "invalid_json",
        "body",
        None,
    ),
    "deep_nesting": (b'{"dataframe_records": ' + b"[" * 2000 + b"]" * 2000 + b"}", "invalid_json", "body", None),
}


@pytest.mark.parametrize("case", sorted(BAD_MLFLOW))
def test_bad_mlflow_request(client, case):
    body, kind, field, in_message = BAD_MLFLOW[case]
    resp = post_raw(client, body)
    err = assert_error(resp, 400, kind, field, in_message)
    assert resp.headers["x-model-version"] == "1"
    assert err["message"]
    assert client.post(clf_url(), json={"dataframe_records": [GOOD]}).status_code == 200  # still serving


def test_oversized_body_is_413(client):
    big = json.dumps({"dataframe_records": [GOOD] * 2000}).encode()
    assert len(big) > 64 * 1024
    assert_error(post_raw(client, big), 413, "payload_too_large", "body")


def test_oversized_chunked_body_is_413(client):
    def chunks():
        for _ in range(100):
            yield b" " * 1024

    assert_error(
        client.post(clf_url(), content=chunks(), headers={"content-type": "application/json"}),
        413,
        "payload_too_large",
        "body",
    )


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", "text/csv"])
def test_wrong_content_type_is_415(client, ctype):
    assert_error(
        post_raw(client, json.dumps({"dataframe_records": [GOOD]}).encode(), ctype=ctype),
        415,
        "unsupported_media_type",
        "content-type",
    )


def test_missing_content_type_is_415(client):
    resp = client.post(clf_url(), content=b'{"dataframe_records": []}')
    assert_error(resp, 415, "unsupported_media_type", "content-type")


def test_content_type_with_charset_is_fine(client):
    resp = post_raw(client, json.dumps({"dataframe_records": [GOOD]}).encode(), ctype="application/json; charset=utf-8")
    assert resp.status_code == 200


def test_unknown_model_is_404(client):
    err = assert_error(
        client.post("/models/nope/invocations", json={"dataframe_records": [GOOD]}), 404, "unknown_model", "model"
    )
    assert CLF in err["message"]
    assert_error(client.post("/v2/models/nope/infer", json={"inputs": []}), 404, "unknown_model", "model")


def v2_inputs(n=1, **override):
    base = {
        "tenure": {"name": "tenure", "shape": [n], "datatype": "FP32", "data": [10.0] * n},
        "charges": {"name": "charges", "shape": [n], "datatype": "FP32", "data": [50.0] * n},
        "plan": {"name": "plan", "shape": [n], "datatype": "BYTES", "data": ["pro"] * n},
        "region": {"name": "region", "shape": [n], "datatype": "INT64", "data": [2] * n},
    }
    for k, v in override.items():
        if v is None:
            base.pop(k)
        else:
            base[k] = {**base.get(k, {"name": k}), **v}
    return list(base.values())


BAD_V2 = {
    "inputs_missing": ({"id": "x"}, "bad_request", "inputs"),
    "inputs_not_list": ({"inputs": {"tenure": 1}}, "bad_request", "inputs"),
    "inputs_empty": ({"inputs": []}, "empty", "inputs"),
    "tensor_not_object": ({"inputs": [1, 2]}, "bad_request", "inputs[0]"),
    "missing_input": ({"inputs": v2_inputs(plan=None)}, "missing_column", "plan"),
    "unknown_input": (
        {"inputs": v2_inputs(colour={"shape": [1], "datatype": "BYTES", "data": ["red"]})},
        "unknown_column",
        "colour",
    ),
    "bad_datatype": ({"inputs": v2_inputs(tenure={"datatype": "FLOAT"})}, "bad_request", "inputs[0].datatype"),
    "datatype_not_a_string": ({"inputs": v2_inputs(plan={"datatype": []})}, "bad_request", "inputs[2].datatype"),
    "bytes_for_numeric": ({"inputs": v2_inputs(tenure={"datatype": "BYTES", "data": ["1"]})}, "wrong_type", "tenure"),
    "bool_for_numeric": ({"inputs": v2_inputs(tenure={"datatype": "BOOL", "data": [True]})}, "wrong_type", "tenure"),
    "bool_tensor_holds_number": ({"inputs": v2_inputs(plan={"datatype": "BOOL", "data": [1]})}, "wrong_type", "plan"),
    "string_in_int_tensor": ({"inputs": v2_inputs(region={"data": ["2"]})}, "wrong_type", "region"),
    "shape_mismatch": ({"inputs": v2_inputs(tenure={"shape": [2]})}, "bad_request", "tenure"),
    "bad_shape": ({"inputs": v2_inputs(tenure={"shape": [1, 2]})}, "bad_request", "tenure"),
    "unequal_rows": ({"inputs": v2_inputs(tenure={"shape": [2], "data": [1.0, 2.0]})}, "bad_request", "charges"),
    "zero_rows": ({"inputs": v2_inputs(n=0)}, "empty", "inputs"),
    "data_not_list": ({"inputs": v2_inputs(plan={"data": "pro"})}, "bad_request", "plan"),
    "nested_garbage": ({"inputs": v2_inputs(plan={"data": [{"a": [1]}]})}, "wrong_type", "plan"),
    "unknown_output": ({"inputs": v2_inputs(), "outputs": [{"name": "scores"}]}, "bad_request", "outputs"),
    "unknown_key": ({"inputs": v2_inputs(), "tensors": []}, "bad_request", "tensors"),
    "null_not_nullable": ({"inputs": v2_inputs(charges={"data": [None]})}, "null_not_allowed", "charges"),
}


@pytest.mark.parametrize("case", sorted(BAD_V2))
def test_bad_v2_request(client, case):
    body, kind, field = BAD_V2[case]
    resp = client.post(f"/v2/models/{CLF}/infer", json=body)
    assert_error(resp, 400, kind, field)
    assert client.post(f"/v2/models/{CLF}/infer", json={"inputs": v2_inputs()}).status_code == 200


# --------------------------------------------------------------- model lifecycle
def test_no_champion_answers_503(serving_dir):
    with TestClient(create_app(serving_dir, [CLF, "fresh"], poll_seconds=3600)) as c:
        assert_error(
            c.post("/models/fresh/invocations", json={"dataframe_records": [GOOD]}), 503, "no_champion", "model"
        )
        assert c.get("/v2/health/ready").status_code == 200  # no champion does not block readiness
        assert c.get("/v2/models/fresh").json()["ready"] is False
        assert c.get("/v2/models/fresh/ready").status_code == 503


def test_admin_reload_needs_the_token(serving_dir):
    with TestClient(create_app(serving_dir, [CLF], admin_token="s3cret", poll_seconds=3600)) as c:
        assert_error(c.post("/admin/reload"), 401, "unauthorized", "authorization")
        assert_error(c.post("/admin/reload", headers={"Authorization": "Bearer nope"}), 401, "unauthorized")
        ok = c.post("/admin/reload", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        assert ok.json()["models"][CLF] == {"version": 1, "status": "unchanged", "reason": None, "serving_version": 1}
        assert_error(
            c.post("/admin/reload?model=nope", headers={"Authorization": "Bearer s3cret"}),
            404,
            "unknown_model",
            "model",
        )


def test_admin_reload_loads_and_rejects(serving_dir, clf):
    store = ModelStore(serving_dir)
    with TestClient(create_app(serving_dir, [CLF, REG], poll_seconds=3600)) as c:
        publish(store, CLF, clf, 2)
        res = c.post(f"/admin/reload?model={CLF}").json()["models"]
        assert list(res) == [CLF]
        assert res[CLF]["status"] == "loaded" and res[CLF]["version"] == 2
        assert c.post(clf_url(), json={"dataframe_records": [GOOD]}).headers["x-model-version"] == "2"

        store.publish(CLF, 3, b"this is not an onnx graph", clf.meta_for(3))
        store.point(CLF, 3)
        res = c.post("/admin/reload").json()["models"]
        assert res[CLF]["status"] == "rejected" and res[CLF]["version"] == 3
        assert "ONNX Runtime cannot load" in res[CLF]["reason"] and res[CLF]["serving_version"] == 2
        assert res[REG]["status"] == "unchanged"
        resp = c.post(clf_url(), json={"dataframe_records": [GOOD]})
        assert resp.status_code == 200 and resp.headers["x-model-version"] == "2"
        rej = c.get(f"/v2/models/{CLF}").json()["last_rejection"]
        assert rej["version"] == 3 and "ONNX" in rej["reason"]
        ready = c.get("/v2/health/ready")  # the old model still serves, but not the champion
        assert ready.status_code == 503 and "v3 rejected" in ready.json()["models"][CLF]["reason"]
        assert 'ml_platform_model_reloads_total{model="churn",status="rejected"} 1' in c.get("/metrics").text


@pytest.mark.parametrize(
    "bad_meta, reason",
    [
        ({"smoke_rows": [{"tenure": "abc", "charges": 1.0, "plan": "pro", "region": 1}]}, "smoke_rows do not fit"),
        ({"classes": [0, 1, 2]}, "probabilities"),
        ({"features": {"tenure": {"type": "numeric"}}}, "do not match"),
    ],
)
def test_infra_validation_rejects(serving_dir, clf, bad_meta, reason):
    store = ModelStore(serving_dir)
    with TestClient(create_app(serving_dir, [CLF], poll_seconds=3600)) as c:
        publish(store, CLF, clf, 2, **bad_meta)
        res = c.post("/admin/reload").json()["models"][CLF]
        assert res["status"] == "rejected" and reason in res["reason"], res
        assert c.post(clf_url(), json={"dataframe_records": [GOOD]}).headers["x-model-version"] == "1"


def test_latency_budget_is_enforced(serving_dir):
    with TestClient(create_app(serving_dir, [CLF], latency_budget_ms=1e-6, poll_seconds=3600)) as c:
        assert c.get("/v2/health/ready").status_code == 503
        rej = c.get(f"/v2/models/{CLF}").json()["last_rejection"]
        assert "latency" in rej["reason"]
        assert_error(c.post(clf_url(), json={"dataframe_records": [GOOD]}), 503, "no_champion", "model")


def test_poller_swaps_and_old_model_objects_keep_working(client, serving_dir, clf):
    state = client.app.state.serving
    old = state.slots[CLF].model
    publish(ModelStore(serving_dir), CLF, clf, 2)
    deadline = time.time() + 10
    while time.time() < deadline:
        resp = client.post(clf_url(), json={"dataframe_records": [GOOD]})
        assert resp.status_code == 200
        if resp.headers["x-model-version"] == "2":
            break
        time.sleep(0.02)
    assert resp.headers["x-model-version"] == "2"
    # a request that grabbed the old model before the swap finishes on it
    parsed = old.schema.parse_mlflow({"dataframe_records": [GOOD]})
    assert old.run(parsed.feeds)[1].shape == (1, 2)


def test_rollback_by_pointer(single_client, serving_dir, clf):
    store = ModelStore(serving_dir)
    publish(store, CLF, clf, 2)
    assert single_client.post("/admin/reload").json()["models"][CLF]["status"] == "loaded"
    store.rollback(CLF)
    res = single_client.post("/admin/reload").json()["models"][CLF]
    assert res["status"] == "loaded" and res["version"] == 1
    assert single_client.get(f"/v2/models/{CLF}").json()["pointer"]["previous"] == 2


# ------------------------------------------------------------------- live sample
def test_live_sample_is_written_and_bounded(serving_dir, tmp_path):
    app = create_app(
        serving_dir,
        [CLF],
        sample_dir=tmp_path / "live",
        sample_max_rows=3,
        sample_flush_seconds=3600,
        poll_seconds=3600,
    )
    with TestClient(app) as c:
        for body in ({"dataframe_records": [GOOD, {**GOOD, "tenure": None}]}, {"dataframe_records": [GOOD] * 2}):
            assert c.post(clf_url(), json=body).status_code == 200
        state = app.state.serving
        assert state.sampler.rows == 2 and state.sampler.dropped == {CLF: 2}
    files = list((tmp_path / "live" / CLF).glob("live-*.jsonl"))  # flushed on shutdown
    assert len(files) == 1
    rows = [json.loads(line) for line in files[0].read_text().splitlines()]
    assert len(rows) == 2
    assert rows[1]["tenure"] is None and rows[0]["plan"] == "pro" and rows[0]["region"] == "3"
    assert rows[0]["customer_id"] == "x1" and rows[0]["_version"] == 1
    assert rows[0]["_prediction"] in (0, 1) and set(rows[0]["_probabilities"]) == {"0", "1"}
    assert rows[0]["_ts"].endswith("+00:00")


@pytest.mark.parametrize("token", [None, "s3cret-token"])
def test_the_deploys_smoke_rows_stay_out_of_the_live_sample(serving_dir, tmp_path, token):
    """A request marked X-ML-Platform-Smoke (the deploy's smoke test) is answered like any other
    but not sampled, so live_drift never judges smoke rows. With an admin token, only a request
    that carries the token is exempt: a client cannot hide its traffic from monitoring."""
    app = create_app(
        serving_dir,
        [CLF],
        sample_dir=tmp_path / "live",
        sample_flush_seconds=3600,
        poll_seconds=3600,
        admin_token=token,
    )
    body = {"dataframe_records": [GOOD]}
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    with TestClient(app) as c:
        smoke = c.post(clf_url(), json=body, headers={"X-ML-Platform-Smoke": "1", **auth})
        assert smoke.status_code == 200 and smoke.headers["x-model-version"] == "1", smoke.text
        state = app.state.serving
        assert state.sampler.rows == 0, "smoke rows were sampled"
        if token:
            assert (
                c.post(
                    clf_url(), json=body, headers={"X-ML-Platform-Smoke": "1", "Authorization": "Bearer wrong"}
                ).status_code
                == 200
            )
            assert state.sampler.rows == 1, "a smoke header without the admin token must still be sampled"
        else:
            assert c.post(clf_url(), json=body).status_code == 200
            assert state.sampler.rows == 1


# ---------------------------------------------------------------- import hygiene
def test_endpoint_imports_no_heavy_stack():
    code = (
        "import sys, ml_platform.serving.app, ml_platform.serving.server, ml_platform.serving.store;"
        "print(sorted(m for m in ('dagster', 'sklearn', 'mlflow', 'pandas', 'pandera', 'skl2onnx')"
        " if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_unpoint_unloads(single_client, serving_dir):
    ModelStore(serving_dir).unpoint(CLF)
    res = single_client.post("/admin/reload").json()["models"][CLF]
    assert res["status"] == "unloaded" and res["serving_version"] is None
    assert_error(single_client.post(clf_url(), json={"dataframe_records": [GOOD]}), 503, "no_champion", "model")
    assert single_client.get("/v2/health/ready").status_code == 200  # no champion: nothing to wait for
    assert single_client.post("/admin/reload").json()["models"][CLF]["status"] == "unchanged"


def test_live_sample_keeps_to_its_rows_per_second_budget(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from ml_platform.serving import sample

    clock = [1000.0]
    monkeypatch.setattr(sample.time, "time", lambda: clock[0])
    s = sample.LiveSampler(tmp_path, max_rows=1000, rows_per_second=5)
    model = SimpleNamespace(name=CLF)
    one, eight = SimpleNamespace(n=1), SimpleNamespace(n=8)
    assert [s.add(model, one, None) for _ in range(7)] == [True] * 5 + [False] * 2
    clock[0] += 1.0  # next second: a fresh budget; a request is taken whole, then nothing
    assert [s.add(model, one, None), s.add(model, eight, None), s.add(model, one, None)] == [True, True, False]
    assert s.rows == 14 and s.dropped == {CLF: 3}
    items, dropped = s.take()
    assert len(items) == 7 and dropped == {CLF: 3} and s.rows == 0


def test_live_sample_directory_keeps_to_its_disk_cap(tmp_path):
    from ml_platform.serving.sample import LiveSampler

    d = tmp_path / CLF
    d.mkdir()
    for i in range(5):
        (d / f"live-2026112{i}T000000000000Z-1.jsonl").write_bytes(b"x" * 1000)
    (d / ".live-20261129T000000000000Z-1.jsonl.tmp").write_bytes(b"x" * 5000)  # being written: not ours
    s = LiveSampler(tmp_path, max_bytes=2500)
    assert s.trim(d) == 3
    assert sorted(p.name for p in d.iterdir()) == [
        ".live-20261129T000000000000Z-1.jsonl.tmp",
        "live-20261123T000000000000Z-1.jsonl",
        "live-20261124T000000000000Z-1.jsonl",
    ]
    s.max_bytes = 10  # the newest file always stays
    assert s.trim(d) == 1 and [p.name for p in d.glob("live-*")] == ["live-20261124T000000000000Z-1.jsonl"]
    written = s.write_lines({CLF: [b'{"a": 1}\n']})  # writing trims too
    assert written == {CLF: 1} and len(list(d.glob("live-*"))) == 1
