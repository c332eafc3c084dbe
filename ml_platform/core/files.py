"""The one way state files are written and locked (standard library only: the endpoint uses it).

Every state file (batch records, the audit, serving files, parquet copies, caches) is written
to a temporary name in its directory, fsynced and moved into place with ``os.replace``: a
reader sees the old file or the new one, never a torn one. When the write fails (disk full,
quota, a file-size limit, a read-only mount) the temporary file is removed, the old file is
left as it was, and a ``StateWriteError`` says in one line what was being written where and
why; the CLI prints that line and exits non-zero (``cli/common.py``). The failure is also
noted in ``<storage_dir>/last_write_error.json`` when that can be written (on a full disk it
usually cannot), so the next command can say what really happened (``last_failure``).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

try:  # POSIX advisory locks: released by the OS when the holder dies
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

_WHY = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EFBIG: "the file is larger than this process may write",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EIO: "an I/O error",
}


class StateWriteError(OSError):
    """A state file could not be written; ``str()`` is the one line a user sees."""

    def __init__(self, path: Path, what: str, cause: OSError):
        why = _WHY.get(cause.errno) or cause.strerror or type(cause).__name__
        super().__init__(
            cause.errno, f"could not write {what} to {path}: {why} ({cause.strerror or cause}); nothing was changed"
        )
        self.path, self.what = Path(path), what

    def __str__(self) -> str:
        return self.strerror

    @classmethod
    def reported(cls, line: str) -> StateWriteError:
        """The error again from its line (a run step's failure, read back from its events)."""
        e = cls.__new__(cls)
        OSError.__init__(e, errno.EIO, line)
        e.path, e.what = None, None
        return e


_SQLITE_FULL = ("database or disk is full", "disk i/o error", "attempt to write a readonly database")
_SQLITE_BUSY = ("database is locked", "database table is locked")


def storage_fault(e: BaseException, where: Callable[[BaseException], str] | None = None) -> str | None:
    """The one line for a storage fault anywhere in ``e``'s chain (a ``StateWriteError``, an
    OSError such as ENOSPC/EFBIG, SQLite's "database or disk is full" or "database is locked"),
    or None: not one. ``where(exc)`` names the database a SQLite error came from."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, StateWriteError):
            return str(e)
        if isinstance(e, OSError) and e.errno in _WHY:
            target = e.filename or "a state file"
            return f"could not write {target}: {_WHY[e.errno]} ({e.strerror})"
        low = str(e).lower()
        hit = next((m for m in _SQLITE_FULL if m in low), None)
        if hit:
            db = where(e) if where else "a SQLite database"
            return f"could not write to {db}: {hit}"
        hit = next((m for m in _SQLITE_BUSY if m in low), None)
        if hit:  # another process holds it (an open `BEGIN EXCLUSIVE`, a long write): not ours to break
            db = where(e) if where else "a SQLite database"
            return f"{db} is locked by another process ({hit}): try again once that process is done"
        e = e.__cause__ or e.__context__
    return None


def sqlite_named(frames: list[str], tracking_uri: str | None = None, dagster_home=None) -> str:
    """Which database a SQLite error came from, by the code that raised it (``frames``: file
    names or formatted stack lines): the MLflow registry or the Dagster instance."""
    text = "\n".join(frames)
    if f"{os.sep}mlflow{os.sep}" in text or "registry_view" in text:
        return f"the MLflow registry ({tracking_uri or 'its tracking URI'})"
    if f"{os.sep}dagster" in text:
        return f"the Dagster instance ({dagster_home or '$DAGSTER_HOME'})"
    return "a SQLite database"


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file in ``path`` durable (the directory entry itself)."""
    with contextlib.suppress(OSError):  # not supported everywhere (e.g. some network FS)
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_with(path: Path, write: Callable[[Path], None], what: str, *, fsync: bool = True) -> None:
    """Call ``write(tmp)`` to produce the file at a temporary path beside ``path``, then move it
    into place. Any OSError becomes a ``StateWriteError`` naming ``what`` and ``path``; the
    temporary file never stays behind."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        write(Path(tmp))
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        if isinstance(e, StateWriteError):
            raise
        raise StateWriteError(path, what, e) from e
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    if fsync:
        fsync_dir(path.parent)


def write_atomic(path: Path, data: bytes | str, what: str, *, fsync: bool = True) -> None:
    """Write ``data`` (bytes, or text as UTF-8) to ``path`` atomically (``write_with``)."""
    raw = data.encode() if isinstance(data, str) else bytes(data)
    write_with(path, lambda tmp: tmp.write_bytes(raw), what, fsync=fsync)


def write_json(path: Path, data, what: str, *, fsync: bool = True) -> None:
    write_atomic(path, json.dumps(data, indent=1, default=str), what, fsync=fsync)


def append_line(path: Path, line: bytes, what: str) -> None:
    """Append one line (fsynced). A torn tail (a writer killed mid-append) is cut off first; a
    failed append is cut off again, so the file never ends in half a line we wrote. Unbuffered:
    nothing of a failed line is left in a buffer to be flushed at close."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":  # torn tail: drop the partial line
                size = os.pread(fd, size, 0).rfind(b"\n") + 1
                os.ftruncate(fd, size)
            try:
                done = 0
                while done < len(line):
                    done += os.pwrite(fd, line[done:], size + done)
                os.fsync(fd)
            except OSError:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
                raise
        finally:
            os.close(fd)
    except OSError as e:
        raise StateWriteError(path, what, e) from e


@contextlib.contextmanager
def file_lock(path: Path, *, timeout: float | None = None, what: str = "a lock"):
    """Hold an exclusive advisory lock on ``path`` (created) across processes. ``timeout``:
    give up after so many seconds with TimeoutError (None: wait as long as it takes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        if fcntl is not None:
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(f.fileno(), fcntl.LOCK_EX | (0 if deadline is None else fcntl.LOCK_NB))
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{path}: {what} held by another process for {timeout:.0f} s") from None
                    time.sleep(0.05)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)


# ------------------------------------------------------------------ the failure, for the next run
LAST_FAILURE = "last_write_error.json"
_SLOT = 4096  # reserved while there is space, overwritten in place when there is none


def reserve_failure_note(storage_dir: Path) -> None:
    """Keep a 4 KB slot for ``note_failure``: rewriting blocks a file already owns needs no
    free space, so the note can be written when the disk is full."""
    path = Path(storage_dir) / LAST_FAILURE
    with contextlib.suppress(OSError):
        if path.stat().st_size >= _SLOT:
            return
    if not path.parent.is_dir():
        return  # nothing stored yet: the first command to write state makes it
    with contextlib.suppress(OSError), open(path, "ab") as f:
        size = f.tell()
        if size < _SLOT:
            f.write(b" " * (_SLOT - size))


def note_failure(storage_dir: Path, line: str, command: str) -> None:
    """Best effort: keep the failure for the next command (``last_failure``), in place."""
    data = json.dumps({"at": time.time(), "command": command, "error": line[:3000]}).encode()
    with contextlib.suppress(OSError):
        fd = os.open(Path(storage_dir) / LAST_FAILURE, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.pwrite(fd, data.ljust(max(_SLOT, len(data))), 0)
            os.fsync(fd)
        finally:
            os.close(fd)


def last_failure(storage_dir: Path, *, clear: bool = False) -> dict | None:
    """The write failure a previous command noted, or None; ``clear`` forgets it once read."""
    path = Path(storage_dir) / LAST_FAILURE
    try:
        text = path.read_bytes().strip()
        data = json.loads(text) if text else None
    except (OSError, ValueError):
        data = None
    if data is not None and clear:
        with contextlib.suppress(OSError):
            fd = os.open(path, os.O_WRONLY)
            try:
                os.pwrite(fd, b" " * max(_SLOT, len(text)), 0)
            finally:
                os.close(fd)
    return data if isinstance(data, dict) else None


_warned: set = set()  # (path, mtime_ns, size, what) already warned about


def warn_skipped(path: Path, what: str, logger: str = "ml_platform.files") -> None:
    """A warning naming ``path`` (and what in it was skipped), once per version of the file: a
    corrupt state file is skipped, never silently, and never a crash of its reader."""
    try:
        st = Path(path).stat()
        key = (str(path), st.st_mtime_ns, st.st_size, what)
    except OSError:
        key = (str(path), None, None, what)
    if key not in _warned:
        _warned.add(key)
        logging.getLogger(logger).warning("%s: %s", path, what)
