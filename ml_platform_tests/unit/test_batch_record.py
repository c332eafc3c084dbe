import json

import pytest

from ml_platform.core import catalog
from ml_platform.core.batch_record import BatchRecord


def test_update_merges_typed_fields_and_keeps_the_json_shape(tmp_path):
    rec = catalog.update_record(tmp_path, "p", file="a.csv", arrival=2.0, rows=10, status="raw", reason=None)
    assert isinstance(rec, BatchRecord) and rec.status == "raw" and rec.decision is None
    catalog.update_record(
        tmp_path,
        "p",
        status="validated",
        valid_rows=9,
        labelled=True,
        drift={"verdict": "drifted"},
        performance={"value": 0.7, "significant": True},
    )
    on_disk = json.loads((tmp_path / "batches" / "p.json").read_text())
    assert on_disk == {
        "partition": "p",
        "file": "a.csv",
        "arrival": 2.0,
        "rows": 10,
        "status": "validated",
        "valid_rows": 9,
        "labelled": True,
        "drift": {"verdict": "drifted"},
        "performance": {"value": 0.7, "significant": True},
    }
    r = catalog.read_record(tmp_path, "p")
    assert r.trainable and r.drifted and r.dropped() and r.measured_value == 0.7 and r.row_count == 9


def test_an_unknown_field_is_refused_by_name(tmp_path):
    with pytest.raises(TypeError, match="valid_row"):
        catalog.update_record(tmp_path, "p", valid_row=3)
    assert catalog.read_record(tmp_path, "p") is None


def test_old_and_unknown_keys_survive_a_rewrite(tmp_path):
    path = tmp_path / "batches" / "old.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"partition": "old", "sha256": "ab", "arrival": 1, "legacy_note": "kept"}))
    assert catalog.known_sha256(tmp_path) == {"ab"}
    rec = catalog.update_record(tmp_path, "old", status="failed")
    assert rec.extra == {"legacy_note": "kept"} and not rec.trainable and rec.landed_at == 1.0
    assert json.loads(path.read_text())["legacy_note"] == "kept"
