"""The batch catalog: one small JSON record per ingested batch under the model's storage.

It is what the CLI (`run`, `status`) and the sensors agree on: which landing content was
already ingested (by sha256), in which order it arrived, and what became of it. The
Dagster event log holds the same facts as asset metadata for the UI.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def _records_dir(model_dir: Path) -> Path:
    return model_dir / "batches"


def write_json_atomic(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1, default=str)
    os.replace(tmp, path)


def update_record(model_dir: Path, partition: str, **fields) -> dict:
    """Merge ``fields`` into the batch record (created on first call)."""
    path = _records_dir(model_dir) / f"{partition}.json"
    rec = json.loads(path.read_text()) if path.exists() else {"partition": partition}
    rec.update(fields)
    write_json_atomic(path, rec)
    return rec


def read_record(model_dir: Path, partition: str) -> dict | None:
    path = _records_dir(model_dir) / f"{partition}.json"
    return json.loads(path.read_text()) if path.exists() else None


def read_records(model_dir: Path) -> list[dict]:
    """Every batch record, in arrival order."""
    d = _records_dir(model_dir)
    if not d.is_dir():
        return []
    recs = [json.loads(p.read_text()) for p in d.glob("*.json")]
    return sorted(recs, key=lambda r: (r.get("arrival", 0), r.get("file", ""), r["partition"]))


def records_stamp(model_dir: Path) -> int:
    """Changes whenever a record is written (each write renames a file into the folder)."""
    d = _records_dir(model_dir)
    return d.stat().st_mtime_ns if d.is_dir() else 0


def known_sha256(model_dir: Path) -> set[str]:
    return {r["sha256"] for r in read_records(model_dir) if r.get("sha256")}
