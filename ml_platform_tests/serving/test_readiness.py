"""Readiness does not lie (issue 8): ``/v2/health/ready`` (and ``/ping``, ``/health``) is 200
only when every model with a champion pointer serves exactly the pointer's version; a
missing or corrupt champion file is reported (model, version, reason), never papered over
by loading another version."""

from __future__ import annotations

import json
import logging

import pytest

from ml_platform.serving.app import create_app
from ml_platform.serving.store import ModelStore
from ml_platform_tests.serving.conftest import CLF, REG, TestClient, publish

GOOD = {"customer_id": "x1", "tenure": 10.0, "charges": 55.5, "plan": "pro", "region": 3}
URL = f"/models/{CLF}/invocations"


def not_ready(c, name=CLF):
    """-> the per-model entry of a 503 readiness answer, checked on all three routes."""
    for path in ("/v2/health/ready", "/ping", "/health"):
        r = c.get(path)
        assert r.status_code == 503, (path, r.text)
        body = r.json()
        assert body["ready"] is False and name in body["reason"], body
    entry = body["models"][name]
    assert entry["ready"] is False and entry["reason"]
    m = c.get(f"/v2/models/{name}/ready")
    assert m.status_code == 503 and m.json()["ready"] is False and m.json()["reason"] == entry["reason"]
    return entry


def is_ready(c):
    for path in ("/v2/health/ready", "/ping", "/health"):
        r = c.get(path)
        assert r.status_code == 200 and r.json()["ready"] is True, (path, r.text)
    return r.json()["models"]


@pytest.mark.parametrize(
    "breakage, in_reason",
    [
        ("garbage_onnx", "ONNX Runtime cannot load"),
        ("missing_onnx", "v2.onnx"),
        ("corrupt_meta", "cannot read v2"),
        ("missing_meta", "v2.json"),
    ],
)
def test_broken_champion_at_start_is_reported_not_replaced(serving_dir, clf, caplog, breakage, in_reason):
    store = ModelStore(serving_dir)
    publish(store, CLF, clf, 2)  # v1 is published too: it must NOT be served instead
    if breakage == "garbage_onnx":
        store.onnx_path(CLF, 2).write_bytes(b"not an onnx graph")
    elif breakage == "missing_onnx":
        store.onnx_path(CLF, 2).unlink()
    elif breakage == "corrupt_meta":
        store.meta_path(CLF, 2).write_text('{"version": 2, "task": ')
    else:
        store.meta_path(CLF, 2).unlink()
    with caplog.at_level(logging.INFO, logger="ml_platform.serving"):
        app = create_app(serving_dir, [CLF, REG], poll_seconds=3600)
    with TestClient(app) as c:
        entry = not_ready(c)
        assert entry["champion"] == 2 and entry["version"] is None and entry["loaded"] is False
        assert "v2" in entry["reason"] and in_reason in entry["reason"], entry
        assert c.get("/v2/health/ready").json()["models"][REG]["ready"] is True
        r = c.post(URL, json={"dataframe_records": [GOOD]})
        assert r.status_code == 503 and r.json()["error"]["kind"] == "no_champion"
        assert c.get(f"/v2/models/{CLF}").json()["ready"] is False
        assert (
            c.post(
                f"/models/{REG}/invocations",
                json={"dataframe_records": [{"size": 70.0, "rooms": 2, "city": "milan", "zone": 1}]},
            ).status_code
            == 200
        )
    text = caplog.text
    assert "churn v2 rejected" in text and "nothing serving" in text
    assert "churn v1 loaded" not in text  # no fallback


def test_pointer_to_an_unpublished_version_at_start(serving_dir):
    ptr = ModelStore(serving_dir).pointer_path(CLF)
    ptr.write_text(json.dumps({**json.loads(ptr.read_text()), "version": 7, "onnx": "v7.onnx", "meta": "v7.json"}))
    with TestClient(create_app(serving_dir, [CLF], poll_seconds=3600)) as c:
        entry = not_ready(c)
        assert entry["champion"] == 7 and "v7" in entry["reason"] and "nothing serving" in entry["reason"]


def test_unreadable_pointer_blocks_readiness(serving_dir):
    ModelStore(serving_dir).pointer_path(CLF).write_text("{torn")
    with TestClient(create_app(serving_dir, [CLF], poll_seconds=3600)) as c:
        entry = not_ready(c)
        assert "unreadable champion pointer" in entry["reason"]


def test_rejected_swap_keeps_serving_but_is_not_ready(serving_dir, clf):
    store = ModelStore(serving_dir)
    with TestClient(create_app(serving_dir, [CLF, REG], poll_seconds=3600)) as c:
        assert is_ready(c)[CLF] == {
            "ready": True,
            "loaded": True,
            "version": 1,
            "champion": 1,
            "reason": None,
            "required": True,
        }
        store.publish(CLF, 2, b"\x00 not onnx", clf.meta_for(2))
        store.point(CLF, 2)
        # the pointer moved, the poller has not looked yet: v2 is not what serves
        entry = not_ready(c)
        assert entry["champion"] == 2 and entry["version"] == 1 and "not loaded yet" in entry["reason"]

        res = c.post("/admin/reload").json()["models"][CLF]
        assert res["status"] == "rejected" and res["serving_version"] == 1
        entry = not_ready(c)
        assert entry["champion"] == 2 and entry["version"] == 1
        assert "v2 rejected" in entry["reason"] and "ONNX Runtime cannot load" in entry["reason"]
        assert "v1 keeps serving" in entry["reason"]
        r = c.post(URL, json={"dataframe_records": [GOOD]})  # zero downtime: v1 still answers
        assert r.status_code == 200 and r.headers["x-model-version"] == "1"

        store.rollback(CLF)  # the pointer names v1 again: ready without a reload
        assert is_ready(c)[CLF]["version"] == 1
        assert c.post("/admin/reload").json()["models"][CLF]["status"] == "unchanged"
        assert is_ready(c)[CLF]["ready"] is True

        publish(store, CLF, clf, 3)
        assert c.post("/admin/reload").json()["models"][CLF]["status"] == "loaded"
        assert is_ready(c)[CLF] == {
            "ready": True,
            "loaded": True,
            "version": 3,
            "champion": 3,
            "reason": None,
            "required": True,
        }
        assert c.get(f"/v2/models/{CLF}/ready").json()["version"] == 3


def test_model_without_pointer_is_not_ready_but_does_not_block(serving_dir):
    ModelStore(serving_dir).unpoint(REG)
    with TestClient(create_app(serving_dir, [CLF, REG], poll_seconds=3600)) as c:
        models = is_ready(c)
        assert models[REG]["ready"] is False and models[REG]["required"] is False
        assert models[REG]["reason"] == "no champion published"
        assert c.get(f"/v2/models/{REG}/ready").status_code == 503
        assert c.get(f"/v2/models/{CLF}/ready").status_code == 200


def test_lost_pointer_keeps_the_loaded_version_serving_and_is_not_ready(serving_dir):
    """Issue 20: `current.json` deleted under a running endpoint unloaded its valid model (503 to
    every request) while readiness said ready. A pointer gone without `unpoint`'s tombstone was
    lost: the loaded version keeps serving (as for a garbage pointer) and readiness says why."""
    store = ModelStore(serving_dir)
    with TestClient(create_app(serving_dir, [CLF, REG], poll_seconds=3600)) as c:
        assert is_ready(c)[CLF]["version"] == 1
        store.pointer_path(CLF).unlink()
        res = c.post("/admin/reload").json()["models"][CLF]
        assert res["status"] == "rejected" and res["serving_version"] == 1 and "current.json" in res["reason"]
        r = c.post(URL, json={"dataframe_records": [GOOD]})
        assert r.status_code == 200 and r.headers["x-model-version"] == "1"
        entry = not_ready(c)
        assert entry["version"] == 1 and entry["champion"] is None and entry["required"] is True
        assert "current.json is missing" in entry["reason"] and "v1 keeps serving" in entry["reason"]
        assert "reconcile" in entry["reason"]
        # the pointer rebuilt (what `reconcile` does): ready again, nothing reloaded
        store.point(CLF, 1)
        assert c.post("/admin/reload").json()["models"][CLF]["status"] == "unchanged"
        assert is_ready(c)[CLF]["version"] == 1
        # removed on purpose (a champion move to none): unloaded, nothing to wait for
        store.unpoint(CLF)
        assert c.post("/admin/reload").json()["models"][CLF]["status"] == "unloaded"
        models = is_ready(c)
        assert models[CLF]["required"] is False and models[CLF]["reason"] == "no champion published"
        assert c.post(URL, json={"dataframe_records": [GOOD]}).status_code == 503


def test_lost_pointer_at_start_is_not_ready(serving_dir):
    ModelStore(serving_dir).pointer_path(CLF).unlink()
    with TestClient(create_app(serving_dir, [CLF, REG], poll_seconds=3600)) as c:
        entry = not_ready(c)
        assert "current.json is missing" in entry["reason"] and "nothing serving" in entry["reason"]
        assert c.post(URL, json={"dataframe_records": [GOOD]}).status_code == 503
