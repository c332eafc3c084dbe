"""The batch catalog: one small JSON record per ingested batch under the model's storage.

It is what the CLI (`run`, `status`) and the sensors agree on: which landing content was
already ingested (by sha256), in which order it arrived, and what became of it. The
Dagster event log holds the same facts as asset metadata for the UI. Records are typed
(``core/batch_record.BatchRecord``); the JSON files keep the shape they always had.

A record that cannot be read (truncated by a disk fault, hand-edited into invalid JSON) never
stops the readers: it is skipped with a warning naming the file, and the first write to that
batch moves it aside (``<partition>.json.corrupt-<ns>``, kept for inspection) and starts a
fresh record. Nothing is deleted.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from ml_platform.core import files
from ml_platform.core.batch_record import FIELDS, BatchRecord, Decision


def _records_dir(model_dir: Path) -> Path:
    return model_dir / "batches"


def write_json_atomic(path: Path, data, what: str = "a state file") -> None:
    files.write_json(path, data, what)


def update_record(
    model_dir: Path, partition: str, *, unless: Callable[[BatchRecord], bool] | None = None, **fields
) -> BatchRecord:
    """Merge ``fields`` (``BatchRecord`` field names) into the batch record, created on first call.
    ``unless``: when the record as it is now satisfies it, nothing is written (checked and written
    under the one lock): the record is returned unchanged."""
    unknown = sorted(set(fields) - FIELDS) + sorted({"partition"} & set(fields))
    if unknown:
        raise TypeError(f"update_record: not a batch record field: {', '.join(unknown)}")
    path = _records_dir(model_dir) / f"{partition}.json"
    # Read-modify-write under a lock: two processes updating one batch never lose a field.
    with files.file_lock(_records_dir(model_dir) / ".lock", what="the batch records' lock"):
        try:
            rec = _load(path) if path.exists() else BatchRecord(partition)
        except CorruptRecord as e:
            kept = path.with_name(f"{path.name}.corrupt-{time.time_ns()}")
            with contextlib.suppress(FileNotFoundError):  # another writer moved it first
                os.replace(path, kept)
                log.warning("%s; moved aside to %s, a fresh record is started", e, kept.name)
            rec = BatchRecord(partition)
        if unless is not None and path.exists() and unless(rec):
            return rec
        for k, v in fields.items():
            setattr(rec, k, Decision.from_dict(v) if k == "decision" else v)
        write_json_atomic(path, rec.to_dict(), f"the record of batch {partition}")
    return rec


class CorruptRecord(ValueError):
    """A batch record file that is not a readable record; the message names the file."""


log = logging.getLogger("ml_platform.catalog")
_warned: set = set()  # (path, mtime_ns, size) of corrupt records already warned about


def _load(path: Path) -> BatchRecord:
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError(f"a JSON {type(data).__name__}, not an object")
        rec = BatchRecord.from_dict(data)  # TypeError naming a field of the wrong type
    except (ValueError, TypeError, AttributeError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        raise CorruptRecord(f"batch record {path} is unreadable ({type(e).__name__}: {str(e)[:200]})") from None
    return rec


def _load_or_skip(path: Path) -> BatchRecord | None:
    """The record at ``path``, or None (with a warning naming the file, once per version of it)."""
    try:
        return _load(path)
    except FileNotFoundError:
        return None
    except CorruptRecord as e:
        try:
            st = path.stat()
            key = (str(path), st.st_mtime_ns, st.st_size)
        except OSError:
            key = (str(path), None, None)
        if key not in _warned:
            _warned.add(key)
            log.warning("%s: skipped (kept in place; the next write to this batch moves it aside)", e)
        return None


def read_record(model_dir: Path, partition: str) -> BatchRecord | None:
    """The batch's record; None when there is none or it is unreadable (see the module docstring)."""
    path = _records_dir(model_dir) / f"{partition}.json"
    return _load_or_skip(path) if path.exists() else None


def read_records(model_dir: Path) -> list[BatchRecord]:
    """Every batch record, in arrival order."""
    d = _records_dir(model_dir)
    if not d.is_dir():
        return []
    recs = [r for r in (_load_or_skip(p) for p in d.glob("*.json")) if r is not None]
    return sorted(recs, key=lambda r: (r.arrival or 0, r.file or "", r.partition))


def records_stamp(model_dir: Path) -> int:
    """Changes whenever a record is written (each write renames a file into the folder)."""
    d = _records_dir(model_dir)
    return d.stat().st_mtime_ns if d.is_dir() else 0


def known_sha256(model_dir: Path) -> set[str]:
    return {r.sha256 for r in read_records(model_dir) if r.sha256}
