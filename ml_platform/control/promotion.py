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
from ml_platform.core import approval, audit, version_files
from ml_platform.core.version_files import VersionFiles
from ml_platform.names import (
    GATE_JUDGED_AGAINST,
    LIVE_CHECK,
    VERSION_CHECK_ONLY,
    VERSION_PROMOTED,
    VERSION_ROLLED_BACK,
    gate_checks,
    gate_failures,
    gate_passed,
    offline_checks,
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


# -------------------------------------------------------------------------- gate
def checks_of(settings: Settings, model: str) -> tuple[str, ...]:
    """The model's blocking gate checks (the registry in ``names``)."""
    return gate_checks(settings.models[model])


def served_before(tags: dict, checks: tuple[str, ...]) -> tuple[str, ...]:
    """The checks a version that already served must show to serve again: a rollback target was
    judged live when it was new (or before its model was staged), so not ``live_shadow`` again."""
    return tuple(c for c in checks if c != LIVE_CHECK) if tags.get(VERSION_PROMOTED) else checks


def servable(tags: dict, checks: tuple[str, ...]) -> bool | None:
    """The gate's reading of a version (True/False/None while pending), False for a version
    trained by `ml-platform check`: it never serves."""
    return False if tags.get(VERSION_CHECK_ONLY) == "true" else gate_passed(tags, served_before(tags, checks))


def gate_refusal(
    registry: MlflowRegistry, model: str, version: int, *, serving: int | None, kind: str, checks: tuple[str, ...]
) -> str | None:
    """Why ``version`` may not become champion, or None. Every blocking check in ``checks`` must have
    recorded "passed" on the version; a deploy must also have been compared with the
    champion that serves now (a rollback target was judged when it was new)."""
    try:
        mv = registry.version(model, version)
    except Exception:  # noqa: BLE001 - MLflow raises its own exception for an unknown version
        return f"{model} v{version} is not a registered version"
    tags = mv.tags
    if tags.get(VERSION_CHECK_ONLY) == "true":
        return f"{model} v{version} was trained by `ml-platform check` (an evaluation): it never serves"
    rejected = approval.rejection(tags)
    if rejected:
        return f"{model} v{version} was {rejected}"
    bad = gate_failures(tags, checks if kind == "deploy" else served_before(tags, checks))
    if bad:
        return f"{model} v{version} did not pass the gate: " + "; ".join(bad)
    if kind == "deploy":
        judged = tags.get(GATE_JUDGED_AGAINST, "none")
        now = "none" if serving is None else str(serving)
        if judged != now:
            return (
                f"{model} v{version} was judged against champion {_v(judged)}, but {_v(now)} serves now: "
                "materialize candidate_model's checks again before deploying it"
            )
    return None


def _v(x) -> str:
    return "none" if x in (None, "none") else f"v{x}"


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
        _finish_interrupted(settings, registry, endpoint, model)
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
        return _apply(settings, registry, endpoint, intent)


def _apply(
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
        _publish(store, model, to, files.onnx.read_bytes(), meta)
        faults.point("deploy:published")
        store.point(model, to)  # the commit point
    else:
        store.unpoint(model)
    faults.point("deploy:pointed")
    registry.set_champion_alias(model, to)
    if to is not None:
        registry.set_version_tags(model, to, {VERSION_PROMOTED: "true"})
    faults.point("deploy:aliased")
    ok, note, smoke = _tell_endpoint(settings, endpoint, model, to, meta)
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
    undone = _apply(settings, registry, endpoint, back)
    raise PromotionError(
        f"v{to} failed on the live endpoint ({note}); rolled back to "
        f"{_v(intent.previous)} (endpoint: {undone.endpoint})"
    )


def _publish(store, model: str, version: int, onnx_bytes: bytes, meta: dict) -> None:
    # A damaged copy in the store is replaced by the registry's bytes; a sound copy of another
    # model under this number is refused (VersionConflict): numbers are never reused.
    store.publish(model, version, onnx_bytes, meta, repair=True)


def _tell_endpoint(
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


# ---------------------------------------------------------------- approval mode
def approve(
    settings: Settings,
    registry: MlflowRegistry,
    endpoint: EndpointClient | None,
    model: str,
    version: int | None = None,
    *,
    by: str,
    via: str = "cli",
) -> Promotion:
    """A person approves a candidate (default: the newest awaiting approval): a gated champion
    move whose audit entry names them; the version is tagged with who and when."""
    if version is None:
        waiting = awaiting_approval(settings, registry, model)
        if not waiting:
            raise PromotionError(
                f"{model}: no candidate is awaiting approval (champion "
                f"{_v(champion_version(settings, model))}); name one with --version"
            )
        version = waiting[0].version
    if version == champion_version(settings, model):
        raise PromotionError(f"{model} v{version} is the serving champion already: nothing to approve")
    trigger = _tag(registry, model, version, "trigger") or "manual"
    from ml_platform.control import staging  # staging builds on this module

    if staging.should_stage(settings, registry, model, version):  # approval lets it into staging
        note = staging.stage(settings, registry, endpoint, model, version, actor=f"{by} ({via})", trigger=trigger)
        registry.set_version_tags(model, version, approval.decision_tags(approval.APPROVED, by, audit.now_iso()))
        return Promotion(model, champion_version(settings, model), champion_version(settings, model), endpoint=note)
    p = move_champion(
        settings,
        registry,
        endpoint,
        model,
        version,
        actor=f"{by} ({via})",
        trigger=trigger,
        reason=f"approved by {by}: passed every blocking gate check",
        kind="deploy",
    )
    if p.previous != p.version:  # approving the serving champion again changes nothing
        registry.set_version_tags(model, version, approval.decision_tags(approval.APPROVED, by, audit.now_iso()))
    return p


def reject(
    settings: Settings,
    registry: MlflowRegistry,
    model: str,
    version: int | None = None,
    *,
    by: str,
    reason: str = "",
    via: str = "cli",
) -> int:
    """A person rejects a candidate (default: the newest awaiting approval): recorded on the
    version and in the audit (kind "reject"); the champion stays. Returns the version."""
    with move_lock(settings, model):
        current = champion_version(settings, model)
        if version is None:
            waiting = awaiting_approval(settings, registry, model)
            if not waiting:
                raise PromotionError(
                    f"{model}: no candidate is awaiting approval (champion {_v(current)}); name one with --version"
                )
            version = waiting[0].version
        if version == current:
            raise PromotionError(f"{model} v{version} is the champion: roll it back instead of rejecting it")
        try:
            registry.version(model, version)
        except Exception:  # noqa: BLE001 - MLflow raises its own exception for an unknown version
            raise PromotionError(f"{model} v{version} is not a registered version") from None
        at = audit.now_iso()
        registry.set_version_tags(model, version, approval.decision_tags(approval.REJECTED, by, at, reason))
        audit.append(
            settings.model_dir(model),
            audit.AuditEntry(
                at=at,
                model=model,
                previous=current,
                to=current,
                actor=f"{by} ({via})",
                trigger="approval",
                reason=f"rejected v{version}" + (f": {reason}" if reason else ""),
                kind="reject",
                gate={
                    c: f"{state}: {why}"
                    for c, (state, why) in registry.gate_verdicts(model, version, checks_of(settings, model)).items()
                },
                endpoint="unchanged",
                intent="",
                candidate=version,
            ),
        )
    return version


def awaiting_approval(settings: Settings, registry: MlflowRegistry, model: str) -> list[approval.Awaiting]:
    """Gate-passed candidates waiting for a person, newest first (whatever deploy.approval says:
    in auto mode the list holds only candidates the automation could not deploy)."""
    return approval.awaiting(
        [(int(v.version), v.tags) for v in registry.versions(model)],
        champion_version(settings, model),
        gate_passed=lambda tags: servable(tags, offline_checks(settings.models[model])),  # then staged
    )


def _tag(registry: MlflowRegistry, model: str, version: int, key: str) -> str | None:
    try:
        return registry.version(model, version).tags.get(key)
    except Exception:  # noqa: BLE001 - an unknown version: move_champion says so
        return None


def rollback_targets(settings: Settings, registry: MlflowRegistry, model: str) -> list[int]:
    """Versions that passed the gate (and no person rejected), newest first."""
    checks = checks_of(settings, model)
    return [
        int(v.version)
        for v in reversed(registry.versions(model))
        if servable(v.tags, checks) and not approval.rejection(v.tags)
    ]


def rollback(
    settings: Settings,
    registry: MlflowRegistry,
    endpoint: EndpointClient | None,
    model: str,
    to_version: int | None = None,
    *,
    actor: str = "cli",
) -> Promotion:
    current = champion_version(settings, model)
    passed = rollback_targets(settings, registry, model)
    targets = [v for v in passed if v != current]
    if to_version is None:
        older = [v for v in targets if current is None or v < current]
        if not older:
            shown = ", ".join(_v(v) for v in sorted(passed)) or "none"
            raise PromotionError(
                f"{model}: no earlier version that passed the gate to roll back to "
                f"(champion {_v(current)}; gate-passed versions: {shown})"
            )
        to_version = older[0]
    return move_champion(
        settings,
        registry,
        endpoint,
        model,
        to_version,
        actor=actor,
        reason=f"rollback from {_v(current)}",
        trigger="manual",
        kind="rollback",
    )


# ---------------------------------------------------------------------- repair
def _finish_interrupted(
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
        p = _apply(settings, registry, endpoint, intent)
        return (
            f"finished the interrupted move {_v(intent.previous)} -> {_v(intent.to)} "
            f"by {intent.actor} (endpoint: {p.endpoint})"
        )
    except PromotionError as e:
        return f"finished the interrupted move {_v(intent.previous)} -> {_v(intent.to)}: {e}"


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
    try:
        model_store(settings).read(model, current)
    except (OSError, ValueError):
        return True
    return False


def reconcile(settings: Settings, registry: MlflowRegistry, endpoint: EndpointClient | None, model: str) -> list[str]:
    """Make store, registry and endpoint name the same champion; returns what was repaired.

    An interrupted move is finished first. Then the place of record (the store pointer)
    wins: the MLflow alias and ``promoted`` tag follow it, and the champion's files in the
    store are rebuilt from the registry when missing or different. A store that lost its
    pointer while the alias still names a version (e.g. the serving folder was deleted) is
    rebuilt from the registry, unless the audit says the champion was removed on purpose."""
    notes = []
    with move_lock(settings, model):
        done = _finish_interrupted(settings, registry, endpoint, model)
        if done:
            notes.append(done)
        store = model_store(settings)
        try:
            current = champion_version(settings, model)
        except ValueError as e:  # an unreadable pointer: fall back to the mirror below
            notes.append(f"champion pointer unreadable ({e})")
            current = None
        alias = registry.champion_alias(model)
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
                reason="serving store lost its champion pointer; rebuilt from the registry",
                kind="repair",
            )
            audit.write_intent(settings.model_dir(model), intent)
            _apply(settings, registry, endpoint, intent)
            notes.append(
                f"serving store had no champion pointer while MLflow names v{alias}: rebuilt from the registry"
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
                f"MLflow alias champion named {_v(alias)}, the serving store v{current}: "
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
