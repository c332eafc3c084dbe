"""Who is champion: the one accessor every reader uses (monitoring, the gate, scoring,
sensors, status, the CLI, the runner).

The place of record is the serving store's pointer (``serving/<model>/current.json``):
what it names is what the endpoint serves, so "champion" and "serving" cannot disagree.
The MLflow alias ``champion`` is a mirror that ``promotion.reconcile`` repairs from it.
Only ``promotion.move_champion`` writes the pointer. Light on imports (no Dagster, no MLflow).
"""

from __future__ import annotations

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
