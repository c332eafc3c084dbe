"""The atomic model store the endpoint reads (standard library only).

Layout under ``root`` (``Settings.serving_dir``)::

    <model>/v<N>.onnx      the ONNX graph of version N (immutable once published)
    <model>/v<N>.json      its serving metadata (``core.export.serving_metadata``)
    <model>/current.json   the champion pointer:
                           {"version": N, "onnx": "v<N>.onnx", "meta": "v<N>.json",
                            "previous": M | null, "updated_at": "<ISO 8601 UTC>"}
    <model>/staged.json    a candidate staged beside the champion (``stage``; docs/staging.md):
                           {"version": N, "mode": "shadow" | "canary", "share": x, "champion": M, ...}
    <model>/removed.json   written by ``unpoint`` (the removed pointer and when), deleted by
                           ``point``: a pointer removed on purpose. A pointer that is gone
                           without it was lost (a deleted file, a restored backup): the
                           endpoint keeps serving what it serves and readiness says so.

Every file is written to a temporary name in the same directory, fsynced and moved into
place with ``os.replace``, so a reader (the endpoint, possibly several worker processes)
sees either the old file or the new one, never a torn one. The deploy step calls
``publish`` and then ``point`` (``rollback``/``unpoint`` to undo); the endpoint only
calls ``current`` and ``read``. No pointer means no champion: the endpoint serves
nothing for that model (503 ``no_champion``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path

from ml_platform.core import files

try:  # POSIX: serialise pointer read-modify-write between deployers
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

POINTER = "current.json"
STAGED = "staged.json"  # the staged candidate (shadow or canary), see ``stage``
ONNX_SHA256 = "onnx_sha256"  # in v<N>.json: the graph it describes (a damaged copy is told from another model)
REMOVED = "removed.json"  # the tombstone of a pointer removed on purpose (``unpoint``)
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_VERSION_FILE = re.compile(r"^v([0-9]+)\.onnx$")


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"model name {name!r}: use letters, digits and '_', starting with a letter")
    return name


def _check_version(version) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"version must be a positive integer (got {version!r})")
    return version


def atomic_write(path: Path, data: bytes, what: str = "a serving file") -> None:
    """Write ``data`` to ``path`` via a fsynced temporary file and ``os.replace`` (``core/files``)."""
    files.write_atomic(path, data, what)


class VersionConflict(FileExistsError):
    """A version number already published with other content (a different model)."""


class ModelStore:
    """Versioned ONNX files plus an atomically swapped champion pointer, per model."""

    def __init__(self, root: Path):
        self.root = Path(root)

    # ---- paths ----
    def model_dir(self, name: str) -> Path:
        return self.root / _check_name(name)

    def pointer_path(self, name: str) -> Path:
        return self.model_dir(name) / POINTER

    def stage_path(self, name: str) -> Path:
        return self.model_dir(name) / STAGED

    def removed_path(self, name: str) -> Path:
        return self.model_dir(name) / REMOVED

    def onnx_path(self, name: str, version: int) -> Path:
        return self.model_dir(name) / f"v{_check_version(version)}.onnx"

    def meta_path(self, name: str, version: int) -> Path:
        return self.model_dir(name) / f"v{_check_version(version)}.json"

    # ---- writers (the deploy step) ----
    def publish(self, name: str, version: int, onnx_bytes: bytes, meta: dict, *, repair: bool = False) -> None:
        """Write ``v<N>.onnx`` and ``v<N>.json`` (the metadata records the graph's sha256).
        Versions are immutable: publishing the same bytes again is a no-op; different bytes raise
        ``VersionConflict``, also with ``repair``, unless the stored copy is damaged (a file
        missing or unreadable, or a graph that no longer matches the sha256 its metadata
        recorded): a version number is never reused for another model. With ``repair``, the same
        graph with other metadata (the same model) has its metadata written again."""
        _check_version(version)
        if not isinstance(onnx_bytes, (bytes, bytearray, memoryview)) or not len(onnx_bytes):
            raise ValueError("onnx_bytes must be non-empty bytes")
        if not isinstance(meta, dict):
            raise ValueError("meta must be a dict (core.export.serving_metadata)")
        if meta.get("version") not in (None, version):
            raise ValueError(f"meta says version {meta.get('version')!r}, publishing as {version}")
        sha = hashlib.sha256(bytes(onnx_bytes)).hexdigest()
        meta_bytes = json.dumps({**meta, ONNX_SHA256: sha}, indent=1).encode()
        onnx_path, meta_path = self.onnx_path(name, version), self.meta_path(name, version)
        if onnx_path.exists() or meta_path.exists():
            damage = self.damaged(name, version)
            if damage is None and onnx_path.read_bytes() == bytes(onnx_bytes):
                stored = json.loads(meta_path.read_text())
                if {k: v for k, v in stored.items() if k != ONNX_SHA256} == json.loads(json.dumps(meta)):
                    return
                if repair:  # the same graph (the same model), its metadata written again
                    atomic_write(meta_path, meta_bytes, f"{name} v{version}'s serving metadata")
                    return
            if damage is None or not repair:
                raise VersionConflict(
                    f"{name} v{version} is already published in {self.model_dir(name)} with different content "
                    f"(graph sha256 {self._stored_sha(name, version)[:12]}, now {sha[:12]}): version numbers are "
                    "never reused for another model (was the MLflow registry replaced? `ml-platform status`)"
                )
        # The graph first, the metadata second: a version "exists" once both are there.
        atomic_write(onnx_path, bytes(onnx_bytes), f"{name} v{version}'s ONNX graph")
        atomic_write(meta_path, meta_bytes, f"{name} v{version}'s serving metadata")

    def damaged(self, name: str, version: int) -> str | None:
        """Why the stored copy of ``version`` is damaged, or None when it is sound. A copy from
        before the metadata recorded the graph's sha256 counts as sound when both files read."""
        try:
            onnx_bytes = self.onnx_path(name, version).read_bytes()
            meta = json.loads(self.meta_path(name, version).read_bytes())
        except FileNotFoundError as e:
            return f"{Path(e.filename).name} is missing"
        except (OSError, ValueError) as e:
            return f"unreadable ({type(e).__name__})"
        if not isinstance(meta, dict) or not onnx_bytes:
            return "an empty graph or metadata that is not an object"
        want = meta.get(ONNX_SHA256)
        if want is not None and hashlib.sha256(onnx_bytes).hexdigest() != want:
            return "the graph does not match the sha256 its metadata recorded"
        return None

    def _stored_sha(self, name: str, version: int) -> str:
        try:
            return hashlib.sha256(self.onnx_path(name, version).read_bytes()).hexdigest()
        except OSError:
            return "missing"

    def point(self, name: str, version: int) -> dict:
        """Make ``version`` the champion (atomic pointer swap); returns the new pointer.
        ``previous`` is the version that was current before (kept when re-pointing to
        the same version)."""
        _check_version(version)
        if not (self.onnx_path(name, version).is_file() and self.meta_path(name, version).is_file()):
            raise FileNotFoundError(f"{name} v{version} is not published under {self.model_dir(name)}")
        with self._lock(name):
            try:
                cur = self.current(name)
            except ValueError:  # an unreadable pointer is what a repair replaces
                cur = None
            if cur is None:
                previous = None
            elif cur["version"] == version:
                previous = cur.get("previous")
            else:
                previous = cur["version"]
            pointer = {
                "version": version,
                "onnx": f"v{version}.onnx",
                "meta": f"v{version}.json",
                "previous": previous,
                "updated_at": datetime.now(UTC).isoformat(timespec="microseconds"),
            }
            atomic_write(self.pointer_path(name), json.dumps(pointer, indent=1).encode(), f"{name}'s champion pointer")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.removed_path(name))
        return pointer

    def rollback(self, name: str, to_version: int | None = None) -> dict:
        """Point back at ``to_version`` (default: the pointer's ``previous``)."""
        if to_version is None:
            cur = self.current(name)
            if cur is None or cur.get("previous") is None:
                raise ValueError(f"{name}: no previous version to roll back to")
            to_version = cur["previous"]
        return self.point(name, to_version)

    def unpoint(self, name: str) -> dict | None:
        """Remove the champion pointer (nothing serves ``name`` any more; a running endpoint
        unloads it on its next poll or reload). Returns the removed pointer, if any.
        The tombstone ``removed.json`` is written first, so no reader ever sees the pointer
        gone without it (a pointer gone without one was lost, not removed)."""
        with self._lock(name):
            cur = self.current(name)
            tomb = {"removed": cur, "removed_at": datetime.now(UTC).isoformat(timespec="microseconds")}
            atomic_write(self.removed_path(name), json.dumps(tomb, indent=1).encode(), f"{name}'s pointer tombstone")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.pointer_path(name))
            files.fsync_dir(self.model_dir(name))
        return cur

    def stage(self, name: str, record: dict) -> dict:
        """Stage a published version beside the champion (the endpoint loads it as a shadow or a
        canary, ``serving/staging.py``); replaces any staged version. Never touches the champion."""
        version = _check_version(record.get("version"))
        if not (self.onnx_path(name, version).is_file() and self.meta_path(name, version).is_file()):
            raise FileNotFoundError(f"{name} v{version} is not published under {self.model_dir(name)}")
        with self._lock(name):
            atomic_write(self.stage_path(name), json.dumps(record, indent=1).encode(), f"{name}'s staged candidate")
        return record

    def unstage(self, name: str) -> dict | None:
        """End the staging of ``name`` (the candidate was promoted or refused)."""
        with self._lock(name):
            cur = self.staged(name)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.stage_path(name))
            files.fsync_dir(self.model_dir(name))
        return cur

    # ---- readers (the endpoint) ----
    def staged(self, name: str) -> dict | None:
        """The staged candidate's record, or None."""
        try:
            raw = self.stage_path(name).read_bytes()
        except FileNotFoundError:
            return None
        rec = json.loads(raw)
        if not isinstance(rec, dict) or not isinstance(rec.get("version"), int):
            raise ValueError(f"{self.stage_path(name)}: not a valid staged record")
        return rec

    def current(self, name: str) -> dict | None:
        """The champion pointer, or None when nothing was ever pointed at."""
        try:
            raw = self.pointer_path(name).read_bytes()
        except FileNotFoundError:
            return None
        try:
            ptr = json.loads(raw)
        except ValueError as e:
            raise ValueError(f"{self.pointer_path(name)}: not a valid pointer (not JSON: {e})") from None
        if not isinstance(ptr, dict) or not isinstance(ptr.get("version"), int):
            raise ValueError(f"{self.pointer_path(name)}: not a valid pointer")
        return ptr

    def removed(self, name: str) -> bool:
        """Was the champion pointer removed on purpose (``unpoint``) and not pointed since?"""
        return self.removed_path(name).is_file()

    def lost(self, name: str) -> bool:
        """Is the champion pointer lost: missing, not removed on purpose, versions published?"""
        return not self.pointer_path(name).exists() and not self.removed(name) and bool(self.versions(name))

    def read(self, name: str, version: int) -> tuple[bytes, dict]:
        """(ONNX bytes, metadata dict) of a published version."""
        return self.onnx_path(name, version).read_bytes(), self.read_meta(name, version)

    def read_meta(self, name: str, version: int) -> dict:
        """The metadata dict of a published version."""
        meta = json.loads(self.meta_path(name, version).read_bytes())
        if isinstance(meta, dict):
            meta.pop(ONNX_SHA256, None)  # the store's own check (``damaged``), not the model's
        return meta

    def versions(self, name: str) -> list[int]:
        """Published versions (both files present), ascending."""
        d = self.model_dir(name)
        if not d.is_dir():
            return []
        out = []
        for p in d.iterdir():
            m = _VERSION_FILE.match(p.name)
            if m and (d / f"v{m.group(1)}.json").is_file():
                out.append(int(m.group(1)))
        return sorted(out)

    @contextlib.contextmanager
    def _lock(self, name: str):
        d = self.model_dir(name)
        d.mkdir(parents=True, exist_ok=True)
        if fcntl is None:  # pragma: no cover
            yield
            return
        with open(d / ".lock", "a+b") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)
