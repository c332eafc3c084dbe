"""Who is champion: the one accessor every reader uses (monitoring, the gate, scoring,
sensors, status, the CLI, the runner).

The place of record is the serving store's pointer (``serving/<model>/current.json``):
what it names is what the endpoint serves, so "champion" and "serving" cannot disagree.
The MLflow alias ``champion`` is a mirror that ``reconcile.reconcile`` repairs from it.
Only ``promotion.move_champion`` writes the pointer. Light on imports (no Dagster, no MLflow).
"""

from __future__ import annotations

import json
from pathlib import Path

from ml_platform.serving.store import ModelStore
from ml_platform.settings import Settings


def store(settings: Settings) -> ModelStore:
    return ModelStore(settings.serving_dir)


def champion_version(settings: Settings, model: str) -> int | None:
    """The champion's version, or None when the model has none."""
    ptr = store(settings).current(model)
    return None if ptr is None else int(ptr["version"])


def champion_model(settings: Settings, model: str) -> tuple[int | None, bytes | None, dict | None]:
    """(version, ONNX bytes, serving metadata) of the champion, or Nones. Raises OSError /
    ValueError when the pointer names files that are missing or unreadable (``reconcile``
    rebuilds them from the registry)."""
    version = champion_version(settings, model)
    if version is None:
        return None, None, None
    onnx_bytes, meta = store(settings).read(model, version)
    return version, onnx_bytes, meta


def champion_classes(settings: Settings, model: str) -> list | None:
    """The classes the serving champion was trained on (its serving metadata), or None: no
    champion, a regression model, or metadata that cannot be read (monitoring reports those)."""
    st = store(settings)
    try:
        version = champion_version(settings, model)
        if version is None:
            return None
        meta = json.loads(st.meta_path(model, version).read_text())
    except (OSError, ValueError):
        return None
    classes = meta.get("classes") if isinstance(meta, dict) else None
    return classes if isinstance(classes, list) and len(classes) >= 2 else None


class RegistryLost(RuntimeError):
    """The registry does not hold what the serving store knows (deleted or replaced): nothing
    may be trained, registered or repaired from it until it is restored."""


def registry_file_gone(settings: Settings) -> bool:
    """The SQLite registry's file is missing, or empty: one SQLite re-created under a process that
    had it open (the old one deleted) is as good as missing. False for a server URI."""
    uri = settings.tracking_uri
    if not uri.startswith("sqlite:///"):
        return False
    db = Path(uri.removeprefix("sqlite:///"))
    return not db.exists() or db.stat().st_size == 0


def registry_loss(settings: Settings, registry, model: str) -> str | None:
    """Why the MLflow registry cannot be trusted for ``model``, or None. The serving store keeps
    every published version and the champion pointer: a registry without the champion's version,
    or whose newest version is older than the store's, was lost or replaced, and a new candidate
    would be registered under a number the store already uses for another model. A missing
    (or empty) SQLite file is reported before MLflow is asked (asking would create an empty registry)."""
    st = store(settings)
    try:
        champion = champion_version(settings, model)
    except ValueError:  # an unreadable pointer: the published versions still speak
        champion = None
    published = st.versions(model)
    if champion is None and not published:
        return None
    uri = settings.tracking_uri
    registered = set() if registry_file_gone(settings) else {int(v.version) for v in registry.versions(model)}

    def shown(vs) -> str:
        return ", ".join(f"v{v}" for v in sorted(vs)) or "none"

    # A pointer naming a version never published nor registered is the pointer's fault, not the
    # registry's: it does not count towards what the registry should hold.
    dangling = champion is not None and champion not in published and champion not in registered
    newest = max([*published, *([champion] if champion is not None and not dangling else [])], default=0)
    if (champion is None or dangling or champion in registered) and newest <= max(registered, default=0):
        return None  # intact (a dangling pointer is `reconcile`'s to repair, naming the pointer)
    has = (
        f"champion v{champion}" + (" (never published)" if dangling else "") if champion is not None else "no champion"
    )
    return (
        f"{model}: the MLflow registry at {uri} does not hold what the serving store knows "
        f"({st.model_dir(model)}: {has}, published {shown(published)}; registered: {shown(registered)}). "
        "It was deleted or "
        f"replaced: restore it (or set the tracking URI back), or run `ml-platform reconcile --rebuild-registry`, "
        f"before training or moving the champion (a new candidate would be registered as "
        f"v{max(registered, default=0) + 1}, a number the store already uses)"
    )


def check_registry(settings: Settings, registry, models) -> None:
    """Raise RegistryLost naming every model whose registry was lost (``registry_loss``)."""
    problems = [p for p in (registry_loss(settings, registry, m) for m in models) if p]
    if problems:
        raise RegistryLost("; ".join(problems))
