"""The landing zone: which files are ready, in what order, and reading them with clear errors."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from ml_platform.core import files
from ml_platform.names import ARCHIVE_DIR, column_name

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


class RefusedFile(BatchReadError):
    """A landing entry that is not a regular file inside the landing dir (a symbolic link,
    a device, a path resolving elsewhere): never read, never copied into storage."""


def _open_regular(path: Path):
    """Open ``path`` for reading only if it is a regular file and not a symbolic link
    (``O_NOFOLLOW``: a link swapped in after a check is refused too)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        if os.path.islink(path):
            raise RefusedFile(
                f"{path.name}: refused: a symbolic link, not a regular file "
                "(landing files are never followed out of the landing dir)"
            ) from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise RefusedFile(f"{path.name}: refused: not a regular file")
    return os.fdopen(fd, "rb")


def refusal(path: Path, landing_dir: Path) -> str | None:
    """Why ``path`` must not be ingested from ``landing_dir`` (None when it may): a symbolic
    link, not a regular file, or a path that does not resolve to an entry of the landing dir."""
    if path.is_symlink():
        return f"{path.name}: refused: a symbolic link (landing files must be regular files in {landing_dir})"
    try:
        st = path.lstat()
    except FileNotFoundError:
        return None  # gone: the caller reports it
    if not stat.S_ISREG(st.st_mode):
        return f"{path.name}: refused: not a regular file"
    if path.resolve().parent != landing_dir.resolve():
        return f"{path.name}: refused: it resolves outside the landing dir {landing_dir}"
    return None


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with _open_regular(path) as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def copy_regular_file(src: Path, dest: Path) -> None:
    """Copy a regular, non-link ``src`` to ``dest`` atomically (a dot-file then a rename);
    on any failure the partial copy is removed, so ``dest`` is either complete or absent."""
    fin = _open_regular(src)  # reading the user's file fails as itself, not as a storage fault
    with fin:
        st = os.fstat(fin.fileno())

        def copy(tmp: Path) -> None:
            with open(tmp, "wb") as fout:
                shutil.copyfileobj(fin, fout, 1 << 20)
            os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))

        files.write_with(dest, copy, f"the raw copy of {src.name}")


def fsync_dir(path: Path) -> None:
    """Make the entries renamed into ``path`` durable (a file's own fsync does not cover its name)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def archive_landed(source: Path, landing_dir: Path, sha256: str, stored: Path) -> Path | None:
    """Move an ingested landing file into ``<landing_dir>/_archived/`` once its raw copy
    ``stored`` is durable (its directory fsynced here too). A file whose content changed since
    (not ``sha256``) stays: it is a new batch. Returns where it went, or None when it stayed.
    A same-named file archived before keeps its place: this one gets its hash in its name."""
    fsync_dir(stored.parent)
    try:
        if file_sha256(source) != sha256:
            return None
    except (FileNotFoundError, RefusedFile):
        return None
    dest_dir = landing_dir / ARCHIVE_DIR
    dest_dir.mkdir(exist_ok=True)
    dest = dest_dir / source.name
    if dest.exists():
        dest = dest_dir / f"{source.stem}-{sha256[:8]}{source.suffix}"
    os.replace(source, dest)  # same file system: atomic, the file is in one place or the other
    fsync_dir(dest_dir)
    fsync_dir(landing_dir)
    return dest


def scan_landing(
    landing_dir: Path,
    *,
    settle_seconds: float = 2.0,
    known_sha256: set[str] = frozenset(),
    hash_cache: dict | None = None,
    now: float | None = None,
    skipped: list | None = None,
) -> list[LandingFile]:
    """Files ready for ingestion, in arrival order (modification time, then name).

    A file counts as still being written while it was modified less than ``settle_seconds``
    ago or carries a partial-write suffix. Files whose content was already ingested
    (``known_sha256``) are skipped, so a re-dropped or renamed copy is not ingested twice.
    ``hash_cache`` (path -> [mtime, size, sha]) avoids re-hashing unchanged files each tick.
    Symbolic links, other non-regular entries and anything resolving outside ``landing_dir``
    are refused: never hashed, read or copied. ``skipped``, when given, receives
    ``(path, reason)`` for each refused or not yet settled file (to report them).
    """
    if not landing_dir.is_dir():
        return []
    now = time.time() if now is None else now
    ready = []
    for p in landing_dir.iterdir():
        if p.name.startswith((".", "_")) or p.name.endswith(IN_PROGRESS_SUFFIXES):
            continue
        why = refusal(p, landing_dir)
        if why is not None:
            if skipped is not None and not p.is_dir():
                skipped.append((p, why))
            continue
        try:
            st = p.lstat()
        except FileNotFoundError:
            continue
        if now - st.st_mtime < settle_seconds:
            if skipped is not None:
                skipped.append(
                    (
                        p,
                        f"{p.name}: still being written (modified {now - st.st_mtime:.1f}s ago, "
                        f"settle time {settle_seconds:g}s)",
                    )
                )
            continue
        key = str(p)
        cached = hash_cache.get(key) if hash_cache is not None else None
        if cached and cached[0] == st.st_mtime and cached[1] == st.st_size:
            sha = cached[2]
        else:
            try:
                sha = file_sha256(p)
            except (FileNotFoundError, RefusedFile):
                continue  # removed or swapped for a link since the listing
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


NOT_READABLE = "not a readable CSV or Parquet file"


def _header(path: Path, fmt: str) -> list[str]:
    """The column names exactly as the file spells them (pandas renames a repeated ``age``
    to ``age.1``; pyarrow's dataset reader fails outright)."""
    if fmt == "parquet":
        return list(pq.ParquetFile(path).schema_arrow.names)
    head = pd.read_csv(path, header=None, nrows=1, dtype=str, keep_default_na=False)
    return [str(c) for c in head.iloc[0].tolist()] if len(head) else []


def _short(e: Exception) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= 200 else text[:197] + "..."


def read_batch(path: Path, *, display_name: str | None = None) -> pd.DataFrame:
    """Read a CSV or Parquet batch; any problem raises BatchReadError naming the file.

    Column names that appear more than once are counted in ``df.attrs["duplicate_columns"]``
    ({name: count}); validation fails the batch when a configured column is among them.
    Error messages never quote the file's content (it may not be a batch at all)."""
    name = display_name or str(path)
    fmt = SUPPORTED.get(path.suffix.lower())
    if fmt is None:
        raise BatchReadError(
            f"{name}: unsupported file type {path.suffix or '(none)'!r}; expected one of {sorted(SUPPORTED)}"
        )
    if path.stat().st_size == 0:
        raise BatchReadError(f"{name}: file is empty")
    try:
        if fmt == "csv":
            with open(path, "rb") as f:
                head = f.read(4096)
            if b"\x00" in head:
                raise BatchReadError(f"{name}: {NOT_READABLE}: binary content in a .csv file (is it another format?)")
        header = [column_name(c) for c in _header(path, fmt)]  # `café` typed NFD is the config's `café`
        counts = {c: header.count(c) for c in dict.fromkeys(header)}
        repeats = {c: n for c, n in counts.items() if n > 1}
        if fmt == "csv":
            df = pd.read_csv(path, low_memory=False)
        elif repeats:  # pyarrow's dataset reader refuses repeated names: read the file as it is
            df = pq.ParquetFile(path).read().to_pandas()
            df.columns = _mangle(list(df.columns))
        else:
            df = pd.read_parquet(path)
    except BatchReadError:
        raise
    except pd.errors.EmptyDataError:
        raise BatchReadError(f"{name}: no columns to read (empty CSV)") from None
    except UnicodeDecodeError as e:
        raise BatchReadError(
            f"{name}: {NOT_READABLE}: not UTF-8 text at byte {e.start} (is it another format?)"
        ) from None
    except Exception as e:  # noqa: BLE001 - pyarrow / parser errors carry the detail (truncation, magic bytes, line)
        raise BatchReadError(f"{name}: cannot be read as {fmt}: {type(e).__name__}: {_short(e)}") from None
    if df.empty:
        if fmt == "csv" and _not_text(head):  # random bytes read as one "header" line
            raise BatchReadError(f"{name}: {NOT_READABLE}: no rows, and its one line is not a header (random data?)")
        raise BatchReadError(f"{name}: has a header but no rows")
    if fmt == "csv" and len(df.columns) == 1:
        sep = next((s for s in (";", "\t", "|") if s in str(df.columns[0])), None)
        if sep is not None:
            raise BatchReadError(
                f"{name}: one column named {str(df.columns[0])[:60]!r}: the file looks {sep!r}-separated; "
                "batches are comma-separated CSV (or Parquet)"
            )
    if fmt == "csv" and (cut := _cut_short(path, len(header))) is not None:
        raise BatchReadError(
            f"{name}: truncated: its last line (line {_lines(path)}) ends after {cut} of {len(header)} "
            "columns with no line break (a copy cut short? land the whole file again)"
        )
    if any(column_name(c) != c for c in df.columns):  # renamed as pandas renames a repeated name
        df.columns = _mangle([column_name(c) for c in df.columns])
    df.attrs["duplicate_columns"] = repeats
    return df


def _cut_short(path: Path, columns: int) -> int | None:
    """The fields of a last line that ends with no line break and fewer fields than the header (a
    copy cut short: pandas would fill the rest with NaN), else None. A quote in that line: not judged."""
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - 65536))
        tail = f.read()
    if tail.endswith(b"\n") or b"\n" not in tail:
        return None
    last = tail.rsplit(b"\n", 1)[1].rstrip(b"\r")
    fields = last.count(b",") + 1
    return fields if b'"' not in last and fields < columns else None


def _lines(path: Path) -> int:
    """The file's line count as an editor shows it (blank lines and quoted line breaks included,
    which pandas' row count leaves out); only read when a file is refused."""
    n = 1
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            n += chunk.count(b"\n")
    return n


def _not_text(head: bytes) -> bool:
    """A CSV that parsed to no rows is junk, not a header line: a control byte in its first
    line, or one line with neither a line break nor a comma."""
    first = head.split(b"\n", 1)
    control = any(b < 0x20 and b not in b"\t\r" or b == 0x7F for b in first[0])
    return control or (len(first) == 1 and b"," not in first[0])


def _mangle(names: list[str]) -> list[str]:
    """pandas' CSV renaming of repeated names: age, age.1, age.2 ..."""
    seen: dict[str, int] = {}
    out = []
    for n in names:
        k = seen.get(n, 0)
        seen[n] = k + 1
        out.append(n if k == 0 else f"{n}.{k}")
    return out
