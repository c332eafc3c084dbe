"""The landing zone: which files are ready, in what order, and reading them with clear errors."""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

SUPPORTED = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
# Partial-write conventions of common tools: never picked up.
IN_PROGRESS_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".inprogress")


class BatchReadError(ValueError):
    """A landing file that cannot be read as a batch; the message names the file."""


@dataclass(frozen=True)
class LandingFile:
    path: Path
    sha256: str
    mtime: float
    size: int

    @property
    def partition_key(self) -> str:
        """Stable, readable and content-addressed: '<file name>-<sha256[:8]>'."""
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", self.path.name)[:80]
        return f"{name}-{self.sha256[:8]}"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def scan_landing(landing_dir: Path, *, settle_seconds: float = 2.0, known_sha256: set[str] = frozenset(),
                 hash_cache: dict | None = None, now: float | None = None) -> list[LandingFile]:
    """Files ready for ingestion, in arrival order (modification time, then name).

    A file counts as still being written while it was modified less than ``settle_seconds``
    ago or carries a partial-write suffix. Files whose content was already ingested
    (``known_sha256``) are skipped, so a re-dropped or renamed copy is not ingested twice.
    ``hash_cache`` (path -> [mtime, size, sha]) avoids re-hashing unchanged files each tick.
    """
    if not landing_dir.is_dir():
        return []
    now = time.time() if now is None else now
    ready = []
    for p in landing_dir.iterdir():
        if not p.is_file() or p.name.startswith((".", "_")) or p.name.endswith(IN_PROGRESS_SUFFIXES):
            continue
        st = p.stat()
        if now - st.st_mtime < settle_seconds:
            continue
        key = str(p)
        cached = hash_cache.get(key) if hash_cache is not None else None
        if cached and cached[0] == st.st_mtime and cached[1] == st.st_size:
            sha = cached[2]
        else:
            sha = file_sha256(p)
            if hash_cache is not None:
                hash_cache[key] = [st.st_mtime, st.st_size, sha]
        if sha not in known_sha256:
            ready.append(LandingFile(p, sha, st.st_mtime, st.st_size))
    ready.sort(key=lambda f: (f.mtime, f.path.name))
    # Two files with the same content in one scan: the first arrival wins.
    seen, unique = set(), []
    for f in ready:
        if f.sha256 not in seen:
            seen.add(f.sha256)
            unique.append(f)
    return unique


def read_batch(path: Path, *, display_name: str | None = None) -> pd.DataFrame:
    """Read a CSV or Parquet batch; any problem raises BatchReadError naming the file."""
    name = display_name or str(path)
    fmt = SUPPORTED.get(path.suffix.lower())
    if fmt is None:
        raise BatchReadError(f"{name}: unsupported file type {path.suffix or '(none)'!r}; "
                             f"expected one of {sorted(SUPPORTED)}")
    if path.stat().st_size == 0:
        raise BatchReadError(f"{name}: file is empty")
    try:
        if fmt == "csv":
            with open(path, "rb") as f:
                head = f.read(4096)
            if b"\x00" in head:
                raise BatchReadError(f"{name}: binary content in a .csv file (is it another format?)")
            df = pd.read_csv(path, low_memory=False)
        else:
            df = pd.read_parquet(path)
    except BatchReadError:
        raise
    except pd.errors.EmptyDataError:
        raise BatchReadError(f"{name}: no columns to read (empty CSV)") from None
    except UnicodeDecodeError as e:
        raise BatchReadError(f"{name}: not UTF-8 text at byte {e.start} (is it another format?)") from None
    except Exception as e:  # pyarrow / parser errors carry the detail (truncation, magic bytes, line)
        raise BatchReadError(f"{name}: cannot be read as {fmt}: {type(e).__name__}: {e}") from None
    if df.empty:
        raise BatchReadError(f"{name}: has a header but no rows")
    return df
