"""A partition's immutable raw copy (``raw/<partition>/<file>``) and the lock its writers take.

Two runs of one partition can meet (a retry, the landing sensor's run after `ml-platform run`
left a request alone, a UI materialization): each looks for a copy, makes one and records it
under ``partition_lock``, so the second finds the first one's copy and record, never its copy
in progress (a dot-file it would remove as a failed attempt's)."""

from __future__ import annotations

from pathlib import Path

from ml_platform.core import files
from ml_platform.names import raw_copy_lock

LOCK_TIMEOUT_SECONDS = 900  # the holder reads the batch too; a killed holder lets go at once


def partition_lock(dest_dir: Path):
    """Held from the look for a stored copy to the batch record (``dest_dir``: the partition's
    raw folder; the lock file is beside it, so removing a failed copy's folder keeps it)."""
    lock = dest_dir.with_name(raw_copy_lock(dest_dir.name))
    return files.file_lock(lock, timeout=LOCK_TIMEOUT_SECONDS, what=f"the raw copy lock of {dest_dir.name}")


def stored_copy(dest_dir: Path) -> Path | None:
    """The complete raw copy of a partition, if one was made (call under ``partition_lock``).
    Dot-files are copies in progress: under the lock, one is a failed attempt's and is removed
    here, so it is never taken for the batch."""
    if not dest_dir.is_dir():
        return None
    done = None
    for p in sorted(dest_dir.iterdir()):
        if p.name.startswith("."):
            p.unlink(missing_ok=True)
        elif done is None:
            done = p
    return done
