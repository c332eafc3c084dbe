"""`ml-platform reconcile --rebuild-registry`: give a lost MLflow registry back the versions the
serving store and the audit know, under the same numbers.

The store keeps every published version (the ONNX graph and its serving metadata) and the
pointer; the audit keeps each move with the gate verdicts it was judged by; the local cache
(``models/<m>/candidates/v<N>/``) often still holds the drift reference. MLflow numbers versions
itself (the next free number), so versions are re-registered in order from the first missing
one: a number that was registered but never published (a blocked candidate) gets a placeholder
that can never serve. The scikit-learn models are not in the store: a restored version serves,
is monitored and can be rolled back to (when the audit holds its gate verdicts), but is not
refitted from. Refused when the registry holds versions the store does not know as the same
model (a replaced registry's own "v1"): restore that registry from a backup instead."""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

from ml_platform.control.champion import champion_version, store
from ml_platform.core import audit, version_files
from ml_platform.names import VERSION_PROMOTED, VERSION_TRIGGER, gate_reason_tag, gate_tag
from ml_platform.settings import Settings

RESTORED = "restored_from"  # version tag: "serving store" or "placeholder"


class RebuildRefused(RuntimeError):
    """The registry cannot be brought back in line by re-registering (see the module docstring)."""


def _gate_tags(model_dir: Path, version: int) -> dict:
    """The gate verdicts the version was moved with, from the newest audit entry that moved to it."""
    for e in reversed(audit.read(model_dir)):
        if e.moved and e.to == version and e.gate:
            tags = {VERSION_TRIGGER: e.trigger or "restored"}
            for check, text in e.gate.items():
                state, _, why = str(text).partition(": ")
                tags[gate_tag(check)] = state
                tags[gate_reason_tag(check)] = why[:500]
            return tags
    return {}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def rebuild_registry(settings: Settings, registry, model: str) -> list[str]:
    """Re-register what the store knows; returns what was done (empty: nothing was missing)."""
    st = store(settings)
    published = st.versions(model)
    try:
        champion = champion_version(settings, model)
    except ValueError:
        champion = None
    registered = {int(v.version): v for v in registry.versions(model)}
    if champion is not None and champion not in published and champion not in registered:
        champion = None  # a dangling pointer: `reconcile` repairs it; nothing to register for it
    # Only what is truly missing: numbers up to the newest version the store published (the
    # ones never published below it are placeholders, so MLflow numbers the rest the same).
    newest = max([*published, *([champion] if champion is not None else [])], default=0)
    for n, mv in registered.items():  # versions kept must be the store's own
        if n in published and mv.tags.get(RESTORED) != "placeholder":
            have = st.onnx_path(model, n).read_bytes()
            with tempfile.TemporaryDirectory() as d:
                try:
                    dest = version_files.VersionFiles(Path(d))
                    theirs = registry.download_version_files(
                        model, n, dest, need=(version_files.ONNX,)
                    ).onnx.read_bytes()
                except Exception:  # noqa: BLE001 - no files logged: not the store's
                    theirs = b""
            if _sha(theirs) != _sha(have):
                raise RebuildRefused(
                    f"{model}: the registry's v{n} is not the model the serving store published as v{n} "
                    f"(graph sha256 {_sha(theirs)[:12]} vs {_sha(have)[:12]}): this registry was replaced, and its "
                    "numbers cannot be moved; restore the original from a backup (docs/state-and-failure.md)"
                )
    start = max(registered, default=0) + 1
    done = []
    for n in range(start, newest + 1):
        tags = {"restored_version": str(n)}
        with tempfile.TemporaryDirectory() as d:
            files_dir = None
            if n in published:
                onnx_bytes, meta = st.read(model, n)
                files_dir = Path(d)
                (files_dir / version_files.ONNX).write_bytes(onnx_bytes)
                (files_dir / version_files.SERVING).write_text(json.dumps(meta, default=str))
                cached = version_files.local(settings.model_dir(model), n)
                if (
                    cached.drift_reference.is_file()
                    and cached.onnx.is_file()
                    and cached.onnx.read_bytes() == onnx_bytes
                ):
                    (files_dir / version_files.DRIFT_REFERENCE).write_bytes(cached.drift_reference.read_bytes())
                tags.update(
                    {RESTORED: "serving store", VERSION_TRIGGER: "restored", **_gate_tags(settings.model_dir(model), n)}
                )
                if n == champion:
                    tags[VERSION_PROMOTED] = "true"
            else:
                tags[RESTORED] = "placeholder"
            got = registry.register_restored(model, files_dir, tags)
        if got != n:
            raise RebuildRefused(f"{model}: MLflow numbered the restored v{n} as v{got}; stopped (nothing reused)")
        done.append(
            f"v{n} re-registered from the serving store"
            + (
                " (gate verdicts from the audit)"
                if any(k.startswith("gate") for k in tags)
                else " (no gate verdicts: it never serves again)"
            )
            if n in published
            else f"v{n} registered as a placeholder (it was never published: it can never serve)"
        )
    if champion is not None and done:
        registry.set_champion_alias(model, champion)
        done.append(f"alias champion -> v{champion}")
    return done
