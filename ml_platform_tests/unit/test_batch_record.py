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


@pytest.mark.parametrize(
    "content", ['{"partition": "bad", "sha256": "cd", "arri', "[1, 2]", '{"partition": "bad", "arrival": "soon"}']
)
def test_a_corrupt_record_is_skipped_naming_its_file_and_kept(tmp_path, caplog, content):
    """Issue 20: one truncated record stopped `status` and `run` with a JSONDecodeError naming no file."""
    catalog.update_record(tmp_path, "good", sha256="ab", arrival=1.0, status="validated")
    bad = tmp_path / "batches" / "bad.json"
    bad.write_text(content)
    with caplog.at_level("WARNING", logger="ml_platform.catalog"):
        assert [r.partition for r in catalog.read_records(tmp_path)] == ["good"]
        assert catalog.known_sha256(tmp_path) == {"ab"}
        assert catalog.read_record(tmp_path, "bad") is None
    assert str(bad) in caplog.text and "unreadable" in caplog.text
    assert bad.read_text() == content  # readers never move or delete it
    # the next write to that batch keeps the bad file aside and starts a fresh record
    rec = catalog.update_record(tmp_path, "bad", status="raw", sha256="cd")
    assert rec.status == "raw" and catalog.read_record(tmp_path, "bad").sha256 == "cd"
    kept = list(bad.parent.glob("bad.json.corrupt-*"))
    assert len(kept) == 1 and kept[0].read_text() == content
    assert sorted(r.partition for r in catalog.read_records(tmp_path)) == ["bad", "good"]
