"""The batch catalog: one small JSON record per ingested batch under the model's storage.

It is what the CLI (`run`, `status`) and the sensors agree on: which landing content was
already ingested (by sha256), in which order it arrived, and what became of it. The
Dagster event log holds the same facts as asset metadata for the UI. Records are typed
(``core/batch_record.BatchRecord``); the JSON files keep the shape they always had.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from ml_platform.core.batch_record import FIELDS, BatchRecord, Decision


def _records_dir(model_dir: Path) -> Path:
    return model_dir / "batches"


def write_json_atomic(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1, default=str)
    os.replace(tmp, path)


def update_record(model_dir: Path, partition: str, **fields) -> BatchRecord:
    """Merge ``fields`` (``BatchRecord`` field names) into the batch record, created on first call."""
    unknown = sorted(set(fields) - FIELDS) + sorted({"partition"} & set(fields))
    if unknown:
        raise TypeError(f"update_record: not a batch record field: {', '.join(unknown)}")
    path = _records_dir(model_dir) / f"{partition}.json"
    rec = _load(path) if path.exists() else BatchRecord(partition)
    for k, v in fields.items():
        setattr(rec, k, Decision.from_dict(v) if k == "decision" else v)
    write_json_atomic(path, rec.to_dict())
    return rec


def _load(path: Path) -> BatchRecord:
    return BatchRecord.from_dict(json.loads(path.read_text()))


def read_record(model_dir: Path, partition: str) -> BatchRecord | None:
    path = _records_dir(model_dir) / f"{partition}.json"
    return _load(path) if path.exists() else None


def read_records(model_dir: Path) -> list[BatchRecord]:
    """Every batch record, in arrival order."""
    d = _records_dir(model_dir)
    if not d.is_dir():
        return []
    recs = [_load(p) for p in d.glob("*.json")]
    return sorted(recs, key=lambda r: (r.arrival or 0, r.file or "", r.partition))


def records_stamp(model_dir: Path) -> int:
    """Changes whenever a record is written (each write renames a file into the folder)."""
    d = _records_dir(model_dir)
    return d.stat().st_mtime_ns if d.is_dir() else 0


def known_sha256(model_dir: Path) -> set[str]:
    return {r.sha256 for r in read_records(model_dir) if r.sha256}
