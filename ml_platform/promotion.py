"""Moving the champion: deploy a gated candidate, or roll back to an earlier version.

One function does every alias move (deploy, automatic rollback, `ml-platform rollback`,
the rollback job), so the serving store, the MLflow alias, the live endpoint and the
audit log always move together.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from ml_platform.core import catalog
from ml_platform.resources.endpoint import EndpointClient, EndpointUnavailable
from ml_platform.resources.registry import MlflowRegistry, gate_passed
from ml_platform.serving.store import ModelStore
from ml_platform.settings import Settings


class PromotionError(RuntimeError):
    pass


@dataclass
class Promotion:
    model: str
    version: int
    previous: int | None
    endpoint: str  # "reloaded" | "not running: it loads this version when it starts" | "not configured"
    smoke: str = ""  # what the smoke request showed, when the endpoint is running


def _serving_files(settings: Settings, registry: MlflowRegistry, model: str, version: int) -> tuple[bytes, dict]:
    cdir = settings.model_dir(model) / "candidates" / f"v{version}"
    if (cdir / "model.onnx").exists():
        return (cdir / "model.onnx").read_bytes(), json.loads((cdir / "serving.json").read_text())
    return ModelStore(settings.serving_dir).read(model, version)


def move_champion(settings: Settings, registry: MlflowRegistry, endpoint: EndpointClient | None,
                  model: str, version: int, *, actor: str, reason: str, trigger: str = "manual",
                  gate_figures: dict | None = None) -> Promotion:
    """Publish ``version`` to the serving store, point the store and the MLflow alias at it,
    make a running endpoint load it and answer a smoke request; if the endpoint refuses
    or the smoke request fails, move everything back and raise PromotionError."""
    store = ModelStore(settings.serving_dir)
    champ = registry.champion(model)
    previous = int(champ.version) if champ is not None else None
    onnx_bytes, meta = _serving_files(settings, registry, model, version)
    meta = {**meta, "version": version}
    store.publish(model, version, onnx_bytes, meta)
    store.point(model, version)
    registry.set_champion(model, version)
    registry.set_version_tags(model, version, {"promoted": "true"})
    if gate_figures is None:  # rollbacks: the target's own gate verdicts, as recorded
        tags = registry.version(model, version).tags
        gate_figures = {k.removesuffix(".reason"): v for k, v in tags.items()
                        if k.startswith("gate.") and k.endswith(".reason")}
    entry = {"at": datetime.now(timezone.utc).isoformat(), "model": model, "from": previous, "to": version,
             "actor": actor, "trigger": trigger, "reason": reason, "gate": gate_figures}
    catalog.append_audit(settings.model_dir(model), entry)
    result = Promotion(model, version, previous, endpoint="not configured")
    if endpoint is None:
        return result
    try:
        verdict = endpoint.reload(model)
    except EndpointUnavailable:
        result.endpoint = "not running: it loads this version when it starts"
        return result
    ok, why = (verdict.get("status") in ("loaded", "unchanged") and verdict.get("version") == version,
               f"endpoint reload: {verdict}")
    if ok:
        # Other workers pick the new pointer up on their next poll: give them two polls.
        deadline = time.monotonic() + 2 * settings.serving.poll_seconds + 1
        while True:
            ok, why = endpoint.smoke(model, meta.get("smoke_rows") or [], version)
            if ok or "expected" not in why or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    if ok:
        result.endpoint = "reloaded"
        result.smoke = why
        return result
    # Automatic rollback: the previous champion keeps (or goes back to) serving.
    if previous is not None:
        store.point(model, previous)
        registry.set_champion(model, previous)
        endpoint_note = endpoint.reload(model)
    else:
        store.unpoint(model)
        registry.client().delete_registered_model_alias(model, "champion")
        endpoint_note = {}
    registry.set_version_tags(model, version, {"promoted": "false", "rolled_back": why[:500]})
    catalog.append_audit(settings.model_dir(model), {
        "at": datetime.now(timezone.utc).isoformat(), "model": model, "from": version, "to": previous,
        "actor": "auto-rollback", "trigger": trigger, "reason": why, "gate": {}})
    raise PromotionError(f"v{version} failed on the live endpoint ({why}); rolled back to "
                         f"v{previous} ({endpoint_note})")


def rollback_targets(registry: MlflowRegistry, model: str) -> list[int]:
    """Earlier versions that passed the gate, newest first."""
    return [int(v.version) for v in reversed(registry.versions(model)) if gate_passed(v.tags)]


def rollback(settings: Settings, registry: MlflowRegistry, endpoint: EndpointClient | None, model: str,
             to_version: int | None = None, *, actor: str = "cli") -> Promotion:
    champ = registry.champion(model)
    current = int(champ.version) if champ else None
    targets = [v for v in rollback_targets(registry, model) if v != current]
    if to_version is None:
        older = [v for v in targets if current is None or v < current]
        if not older:
            champion = f"champion v{current}" if current is not None else "no champion"
            raise PromotionError(f"{model}: no earlier version that passed the gate to roll back to "
                                 f"({champion}; gate-passed versions: {targets or 'none'})")
        to_version = older[0]
    elif to_version not in targets:
        raise PromotionError(f"{model}: v{to_version} cannot serve: it did not pass the gate or does not "
                             f"exist (gate-passed versions: {sorted(targets) or 'none'})")
    return move_champion(settings, registry, endpoint, model, to_version, actor=actor,
                         reason=f"rollback from v{current}", trigger="manual")


def endpoint_for(settings: Settings) -> EndpointClient:
    return EndpointClient(url=settings.endpoint_url, admin_token=settings.serving.admin_token)
