"""Moving the champion, and repairing it after a crash.

``move_champion`` is the only writer of the champion (deploy, automatic rollback,
`ml-platform rollback`, the rollback job, the UI). Under a per-model lock it:

1. refuses unless the gate passed for that exact version (the verdicts the gate recorded
   on the MLflow version; a deploy must also have been judged against the champion that
   serves now);
2. records the intent (``core/audit.Intent``, fsynced);
3. publishes the version's files to the serving store (from the local cache, rebuilt from
   the registry when missing);
4. moves the store pointer: the place of record (``champion.py``), the commit point;
5. updates the mirror: the MLflow alias ``champion`` and the version's ``promoted`` tag;
6. tells a running endpoint (reload + smoke request), with the admin token when one is set;
7. appends one audit entry carrying the intent's id, then clears the intent.

A crash anywhere leaves an intent without its audit entry; ``reconcile`` (run by
`ml-platform run`, `status`, `serve`, and the daemon's control-plane sensor) finishes it,
then repairs the mirror and the store's files from the place of record and the registry.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ml_platform.control.champion import champion_version
from ml_platform.control.champion import store as model_store
from ml_platform.control.servable import checks_of, gate_refusal, version_label
from ml_platform.core import audit, version_files
from ml_platform.core.version_files import VersionFiles
from ml_platform.names import (
    VERSION_PROMOTED,
    VERSION_ROLLED_BACK,
)
from ml_platform.resources.errors import EndpointUnavailable
from ml_platform.runtime import faults
from ml_platform.settings import Settings

if TYPE_CHECKING:  # `status` imports this module: no Dagster at import time
    from ml_platform.resources.endpoint import EndpointClient
    from ml_platform.resources.registry import MlflowRegistry

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None


class PromotionError(RuntimeError):
    """A move that was refused (gate, unknown version) or undone (the endpoint refused it)."""


@dataclass
class Promotion:
    model: str
    version: int | None
    previous: int | None
    endpoint: str  # what the endpoint said: "reloaded" | "not running: ..." | "not configured" | ...
    smoke: str = ""


# ------------------------------------------------------------------------- files
def version_files_of(
    settings: Settings, registry: MlflowRegistry, model: str, version: int, need: tuple = version_files.SERVES
) -> VersionFiles:
    """The version's files, from the local cache; when one is missing, every file the registry
    holds is fetched again (FileNotFoundError if one of ``need`` is not there either)."""
    files = version_files.local(settings.model_dir(model), version)
    if not files.complete():
        try:
            registry.download_version_files(model, version, files, need=need)
        except FileNotFoundError:
            if not files.complete(need):
                raise
    return files


# -------------------------------------------------------------------------- lock
@contextlib.contextmanager
def move_lock(settings: Settings, model: str):
    """One mover per model at a time, across processes (released by the OS if we die)."""
    d = settings.model_dir(model)
    d.mkdir(parents=True, exist_ok=True)
    with open(d / ".champion.lock", "a+b") as f:
        if fcntl is not None:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)


# -------------------------------------------------------------------------- moves
def move_champion(
    settings: Settings,
    registry: MlflowRegistry,
    endpoint: EndpointClient | None,
    model: str,
    version: int,
    *,
    actor: str,
    reason: str,
    trigger: str = "manual",
    kind: str = "deploy",
) -> Promotion:
    """Make ``version`` the champion (see the module docstring). Raises PromotionError when
    the gate refuses it, or when the endpoint refused it and the move was undone."""
    with move_lock(settings, model):
        finish_interrupted(settings, registry, endpoint, model)
        current = champion_version(settings, model)
        checks = checks_of(settings, model)
        refusal = gate_refusal(registry, model, version, serving=current, kind=kind, checks=checks)
        if refusal:
            raise PromotionError(refusal)
        if current == version:
            return Promotion(model, version, current, endpoint="unchanged: already the champion")
        verdicts = registry.gate_verdicts(model, version, checks)
        intent = audit.Intent(
            model=model,
            to=version,
            previous=current,
            actor=actor,
            trigger=trigger,
            reason=reason,
            kind=kind,
            gate={c: f"{state}: {why}" for c, (state, why) in verdicts.items()},
        )
        audit.write_intent(settings.model_dir(model), intent)
        return apply_move(settings, registry, endpoint, intent)


def apply_move(
    settings: Settings, registry: MlflowRegistry, endpoint: EndpointClient | None, intent: audit.Intent
) -> Promotion:
    """Carry out a recorded intent. Every step is idempotent, so finishing an interrupted
    move is calling this again."""
    model, to = intent.model, intent.to
    store = model_store(settings)
    meta: dict = {}
    if to is not None:
        files = version_files_of(settings, registry, model, to)
        meta = {**json.loads(files.serving.read_text()), "version": to}
        publish(store, model, to, files.onnx.read_bytes(), meta)
        faults.point("deploy:published")
        store.point(model, to)  # the commit point
    else:
        store.unpoint(model)
    faults.point("deploy:pointed")
    registry.set_champion_alias(model, to)
    if to is not None:
        registry.set_version_tags(model, to, {VERSION_PROMOTED: "true"})
    faults.point("deploy:aliased")
    ok, note, smoke = tell_endpoint(settings, endpoint, model, to, meta)
    audit.append(
        settings.model_dir(model),
        audit.AuditEntry(
            at=audit.now_iso(),
            model=model,
            previous=intent.previous,
            to=to,
            actor=intent.actor,
            trigger=intent.trigger,
            reason=intent.reason,
            kind=intent.kind,
            gate=intent.gate,
            endpoint=note,
            intent=intent.id,
        ),
    )
    faults.point("deploy:audited")
    audit.clear_intent(settings.model_dir(model))
    result = Promotion(model, to, intent.previous, endpoint=note, smoke=smoke)
    if ok or intent.kind not in ("deploy", "rollback"):
        return result
    # The endpoint refused the new champion: the previous one goes back (its own audit entry).
    registry.set_version_tags(model, to, {VERSION_PROMOTED: "false", VERSION_ROLLED_BACK: note[:500]})
    back = audit.Intent(
        model=model,
        to=intent.previous,
        previous=to,
        actor="auto-rollback",
        trigger=intent.trigger,
        reason=f"v{to} failed on the live endpoint: {note}",
        kind="auto-rollback",
    )
    audit.write_intent(settings.model_dir(model), back)
    undone = apply_move(settings, registry, endpoint, back)
    raise PromotionError(
        f"v{to} failed on the live endpoint ({note}); rolled back to "
        f"{version_label(intent.previous)} (endpoint: {undone.endpoint})"
    )


def publish(store, model: str, version: int, onnx_bytes: bytes, meta: dict) -> None:
    # A damaged copy in the store is replaced by the registry's bytes; a sound copy of another
    # model under this number is refused (VersionConflict): numbers are never reused.
    store.publish(model, version, onnx_bytes, meta, repair=True)


def tell_endpoint(
    settings: Settings, endpoint: EndpointClient | None, model: str, version: int | None, meta: dict
) -> tuple[bool, str, str]:
    """(accepted, what the endpoint said, smoke result)."""
    if endpoint is None:
        return True, "not configured", ""
    try:
        verdict = endpoint.reload(model)
    except EndpointUnavailable:
        return True, "not running: it loads this version when it starts", ""
    if version is None:
        return True, f"unloaded ({verdict.get('status')})", ""
    if not (verdict.get("status") in ("loaded", "unchanged") and verdict.get("version") == version):
        return False, f"endpoint reload: {verdict}", ""
    # Other workers pick the new pointer up on their next poll: give them two polls.
    deadline = time.monotonic() + 2 * settings.serving.poll_seconds + 1
    while True:
        ok, why = endpoint.smoke(model, meta.get("smoke_rows") or [], version)
        if ok or "expected" not in why or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    return ok, ("reloaded" if ok else why), why


def finish_interrupted(
    settings: Settings, registry: MlflowRegistry, endpoint: EndpointClient | None, model: str
) -> str | None:
    """Finish a move whose process died (caller holds the move lock)."""
    intent = audit.read_intent(settings.model_dir(model))
    if intent is None:
        return None
    if any(e.intent == intent.id for e in audit.read(settings.model_dir(model))):
        audit.clear_intent(settings.model_dir(model))  # died after its audit entry: nothing left
        return None
    try:
        p = apply_move(settings, registry, endpoint, intent)
        return (
            f"finished the interrupted move {version_label(intent.previous)} -> {version_label(intent.to)} "
            f"by {intent.actor} (endpoint: {p.endpoint})"
        )
    except PromotionError as e:
        return f"finished the interrupted move {version_label(intent.previous)} -> {version_label(intent.to)}: {e}"
