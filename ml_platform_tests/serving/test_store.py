"""The atomic model store: layout, pointer swaps, immutability."""

from __future__ import annotations

import json
import threading

import pytest

from ml_platform.serving.store import ModelStore, VersionConflict


def test_publish_point_read(tmp_path):
    store = ModelStore(tmp_path)
    assert store.current("m") is None and store.versions("m") == []
    store.publish("m", 1, b"onnx-1", {"name": "m", "version": 1, "x": 1})
    assert store.versions("m") == [1]
    assert store.current("m") is None  # published is not serving
    ptr = store.point("m", 1)
    assert ptr["version"] == 1 and ptr["onnx"] == "v1.onnx" and ptr["meta"] == "v1.json"
    assert ptr["previous"] is None and ptr["updated_at"]
    assert json.loads((tmp_path / "m" / "current.json").read_text()) == ptr
    assert store.read("m", 1) == (b"onnx-1", {"name": "m", "version": 1, "x": 1})
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [".lock", "current.json", "v1.json", "v1.onnx"]


def test_point_sets_previous_and_rollback(tmp_path):
    store = ModelStore(tmp_path)
    for v in (1, 2, 3):
        store.publish("m", v, f"onnx-{v}".encode(), {"version": v})
    store.point("m", 1)
    assert store.point("m", 2)["previous"] == 1
    assert store.point("m", 2)["previous"] == 1  # re-pointing keeps previous
    assert store.point("m", 3)["previous"] == 2
    assert store.rollback("m")["version"] == 2
    assert store.current("m")["previous"] == 3
    assert store.rollback("m", to_version=1)["version"] == 1
    assert store.versions("m") == [1, 2, 3]


def test_versions_are_immutable(tmp_path):
    store = ModelStore(tmp_path)
    store.publish("m", 1, b"a", {"version": 1})
    store.publish("m", 1, b"a", {"version": 1})  # same bytes: a no-op
    with pytest.raises(VersionConflict, match="m v1 is already published .* with different content"):
        store.publish("m", 1, b"b", {"version": 1})
    with pytest.raises(VersionConflict):  # a sound copy is never repaired into another model
        store.publish("m", 1, b"b", {"version": 1}, repair=True)
    assert store.read("m", 1)[0] == b"a" and store.damaged("m", 1) is None
    store.publish("m", 1, b"a", {"version": 1, "note": "x"}, repair=True)  # same graph: metadata rewritten
    assert store.read("m", 1)[1]["note"] == "x"
    store.onnx_path("m", 1).write_bytes(b"garbage")  # a damaged copy (its recorded sha256 differs)
    assert "does not match" in store.damaged("m", 1)
    with pytest.raises(VersionConflict):
        store.publish("m", 1, b"b", {"version": 1})
    store.publish("m", 1, b"b", {"version": 1}, repair=True)
    assert store.read("m", 1)[0] == b"b"


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.publish("m", 0, b"x", {}),
        lambda s: s.publish("m", True, b"x", {}),
        lambda s: s.publish("m", 1, b"", {}),
        lambda s: s.publish("m", 1, b"x", {"version": 2}),
        lambda s: s.publish("../evil", 1, b"x", {}),
        lambda s: s.point("m", 7),
        lambda s: s.rollback("m"),
    ],
)
def test_rejects_bad_calls(tmp_path, call):
    with pytest.raises((ValueError, FileNotFoundError)):
        call(ModelStore(tmp_path))


def test_pointer_is_never_torn(tmp_path):
    """Readers see a whole pointer while a writer swaps it as fast as it can."""
    store = ModelStore(tmp_path)
    for v in (1, 2):
        store.publish("m", v, b"x%d" % v, {"version": v})
    store.point("m", 1)
    stop, seen, bad = threading.Event(), set(), []

    def reader():
        while not stop.is_set():
            try:
                seen.add(store.current("m")["version"])
            except Exception as e:  # noqa: BLE001
                bad.append(e)

    t = threading.Thread(target=reader)
    t.start()
    for i in range(200):
        store.point("m", 1 + i % 2)
    stop.set()
    t.join()
    assert not bad and seen <= {1, 2}
    assert not [p for p in (tmp_path / "m").iterdir() if p.name.endswith(".tmp")]


def test_unpoint(tmp_path):
    store = ModelStore(tmp_path)
    store.publish("m", 1, b"x", {"version": 1})
    assert store.unpoint("m") is None
    store.point("m", 1)
    assert store.unpoint("m")["version"] == 1
    assert store.current("m") is None and store.versions("m") == [1]


def test_a_garbage_pointer_is_named_and_a_repair_replaces_it(tmp_path):
    store = ModelStore(tmp_path)
    store.publish("m", 1, b"onnx-1", {"version": 1})
    store.point("m", 1)
    (tmp_path / "m" / "current.json").write_text("not json at all")
    with pytest.raises(ValueError, match=r"current\.json: not a valid pointer \(not JSON"):
        store.current("m")
    ptr = store.point("m", 1)  # what reconcile does with the version the registry names
    assert ptr["version"] == 1 and ptr["previous"] is None and store.current("m") == ptr
