"""Repairing the champion after a crash: finish an interrupted move, then bring the mirror
(MLflow alias, tags) and the store's files back in line with the place of record."""

from __future__ import annotations

import contextlib
import json
from typing import TYPE_CHECKING

from ml_platform.control.champion import champion_version
from ml_platform.control.champion import store as model_store
from ml_platform.control.promotion import apply_move, finish_interrupted, move_lock, version_files_of
from ml_platform.control.servable import version_label
from ml_platform.core import audit
from ml_platform.names import (
    VERSION_PROMOTED,
)
from ml_platform.resources.errors import EndpointUnavailable
from ml_platform.settings import Settings

if TYPE_CHECKING:  # `status` imports this module: no Dagster at import time
    from ml_platform.resources.endpoint import EndpointClient
    from ml_platform.resources.registry import MlflowRegistry


# ---------------------------------------------------------------------- repair


def _tombstone(store, model: str, notes: list[str]) -> None:
    """The audit says the champion was removed on purpose: make sure the store says so too (a
    store written before it kept tombstones), or the endpoint reports a lost pointer."""
    if not store.removed(model) and store.versions(model):
        store.unpoint(model)
        notes.append("the champion was removed on purpose (audit): the serving store now records it")


def reconcile_needed(settings: Settings, registry, model: str) -> bool:
    """Whether ``reconcile`` has something to repair, by reads alone (the registry's read-only
    view serves, ``resources/registry_view``): an interrupted move, an alias that is not the
    pointer, a champion not tagged promoted, or its files unreadable in the store. (Whether the
    store's bytes are the registry's is ``reconcile``'s own check: the control-plane sensor's.)"""
    if audit.read_intent(settings.model_dir(model)) is not None:
        return True
    try:
        current = champion_version(settings, model)
    except ValueError:
        return True
    alias = registry.champion_alias(model)
    if current is None or alias != current:
        return alias != current
    tags = next((v.tags for v in registry.versions(model) if int(v.version) == current), None)
    if tags is None or tags.get(VERSION_PROMOTED) != "true":
        return True
    return model_store(settings).damaged(model, current) is not None


def reconcile(settings: Settings, registry: MlflowRegistry, endpoint: EndpointClient | None, model: str) -> list[str]:
    """Make store, registry and endpoint name the same champion; returns what was repaired.

    An interrupted move is finished first. Then the place of record (the store pointer)
    wins: the MLflow alias and ``promoted`` tag follow it, and the champion's files in the
    store are rebuilt from the registry when missing or different. A store that lost its
    pointer while the alias still names a version (e.g. the serving folder was deleted) is
    rebuilt from the registry, unless the audit says the champion was removed on purpose."""
    notes = []
    with move_lock(settings, model):
        done = finish_interrupted(settings, registry, endpoint, model)
        if done:
            notes.append(done)
        store = model_store(settings)
        try:
            current = champion_version(settings, model)
        except ValueError as e:  # an unreadable pointer: fall back to the mirror below
            notes.append(f"champion pointer unreadable ({e})")
            current = None
        alias = registry.champion_alias(model)
        dangling = current is not None and current not in store.versions(model) and current != alias
        if dangling and current not in {int(v.version) for v in registry.versions(model)}:
            # never published nor registered: the pointer is wrong (the registry is intact)
            notes.append(
                f"champion pointer {store.pointer_path(model)} named v{current}, which was never published "
                "nor registered: the pointer was wrong"
            )
            current = None
        if current is None and alias is not None:
            last = ([e for e in audit.read(settings.model_dir(model)) if e.moved] or [None])[-1]
            if last is not None and last.to is None:
                registry.set_champion_alias(model, None)
                notes.append(f"MLflow alias champion named v{alias} after the champion was removed; alias deleted")
                _tombstone(store, model, notes)
                return notes
            intent = audit.Intent(
                model=model,
                to=alias,
                previous=None,
                actor="reconcile",
                trigger="repair",
                reason=(notes[-1] if notes else "serving store lost its champion pointer")
                + "; rebuilt from the registry",
                kind="repair",
            )
            audit.write_intent(settings.model_dir(model), intent)
            apply_move(settings, registry, endpoint, intent)
            notes.append(
                f"serving store had no valid champion pointer while MLflow names v{alias}: rebuilt from the registry"
            )
            return notes
        if current is None:
            last = ([e for e in audit.read(settings.model_dir(model)) if e.moved] or [None])[-1]
            if last is not None and last.to is None:
                _tombstone(store, model, notes)
            return notes
        if alias != current:
            registry.set_champion_alias(model, current)
            notes.append(
                f"MLflow alias champion named {version_label(alias)}, the serving store v{current}: "
                f"alias moved to v{current} (the store pointer is the place of record)"
            )
        if registry.version(model, current).tags.get(VERSION_PROMOTED) != "true":
            registry.set_version_tags(model, current, {VERSION_PROMOTED: "true"})
            notes.append(f"v{current} serves but was not tagged promoted: tagged")
        files = version_files_of(settings, registry, model, current)
        want = files.onnx.read_bytes()
        try:
            have, _ = store.read(model, current)
        except (OSError, ValueError):
            have = None
        if have != want:
            meta = {**json.loads(files.serving.read_text()), "version": current}
            store.publish(model, current, want, meta, repair=True)
            store.point(model, current)  # a new pointer signature: the endpoint reloads
            notes.append(f"v{current}'s files in the serving store were missing or damaged: rebuilt from the registry")
            if endpoint is not None:
                with contextlib.suppress(EndpointUnavailable):
                    endpoint.reload(model)
    return notes
