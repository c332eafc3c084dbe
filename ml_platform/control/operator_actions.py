"""What a person asks of the champion: approve or reject a candidate awaiting approval, roll back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ml_platform.control.champion import champion_version, registry_loss
from ml_platform.control.promotion import Promotion, PromotionError, move_champion, move_lock
from ml_platform.control.servable import checks_of, servable, version_label
from ml_platform.core import approval, audit, stage_files
from ml_platform.names import LIVE_CHECK, approval_checks, gate_reason_tag, gate_tag
from ml_platform.settings import Settings

if TYPE_CHECKING:  # `status` imports this module: no Dagster at import time
    from ml_platform.resources.endpoint import EndpointClient
    from ml_platform.resources.registry import MlflowRegistry


def _registry_kept(settings: Settings, registry: MlflowRegistry, model: str) -> None:
    """Refuse before MLflow is asked (asking creates an empty registry) when the registry was lost:
    its versions, gate verdicts and approvals are what a person's decision is checked against."""
    lost = registry_loss(settings, registry, model)
    if lost:
        raise PromotionError(lost)


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
    _registry_kept(settings, registry, model)
    from ml_platform.control import staging  # staging builds on this module

    if version is None:
        waiting = awaiting_approval(settings, registry, model)
        rec = staging.staged(settings, model)
        if not waiting and rec is not None and staging.approval_after_live(settings, model):
            raise PromotionError(_not_judged_live(settings, registry, model, rec["version"]))
        if not waiting:
            raise PromotionError(
                f"{model}: no candidate is awaiting approval (champion "
                f"{version_label(champion_version(settings, model))}); name one with --version"
            )
        version = waiting[0].version
    if version == champion_version(settings, model):
        raise PromotionError(f"{model} v{version} is the serving champion already: nothing to approve")
    trigger = _tag(registry, model, version, "trigger") or "manual"
    if staging.should_stage(settings, registry, model, version):
        if staging.approval_after_live(settings, model):  # a shadow is approved after its evidence
            raise PromotionError(_not_judged_live(settings, registry, model, version))
        # a canary: the approval lets it into staging, the live comparison then decides
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


def _not_judged_live(settings: Settings, registry: MlflowRegistry, model: str, version: int) -> str:
    from ml_platform.control import staging

    if _tag(registry, model, version, gate_tag(LIVE_CHECK)) == "failed":
        return f"{model} v{version} did not pass the live comparison: " + (
            _tag(registry, model, version, gate_reason_tag(LIVE_CHECK)) or "(no reason recorded)"
        )
    p = staging.progress(settings, model)
    where = p.line() if p is not None and p.version == version else f"v{version} is not in shadow"
    return (
        f"{model} v{version} has not passed live_shadow yet ({where}): with deploy.strategy shadow and "
        "deploy.approval required, a person approves after the live comparison"
    )


@dataclass(frozen=True)
class Rejection:
    version: int
    stage_ended: str | None  # the staged candidate's shadow / canary ended, or None


def reject(
    settings: Settings,
    registry: MlflowRegistry,
    model: str,
    version: int | None = None,
    *,
    by: str,
    reason: str = "",
    via: str = "cli",
    endpoint: EndpointClient | None = None,
) -> Rejection:
    """A person rejects a candidate (default: the one in shadow or canary, else the newest awaiting
    approval): recorded on the version and in the audit (kind "reject"); the champion stays. A staged
    candidate's stage ends at once (``staging.withdraw``): the endpoint stops mirroring to it, or
    routing its canary share, at its next poll."""
    from ml_platform.control import staging  # staging builds on this module

    _registry_kept(settings, registry, model)
    with move_lock(settings, model):
        current = champion_version(settings, model)
        rec = staging.staged(settings, model)
        if version is None:
            version = _default_rejection(settings, registry, model, rec, current)
        if version == current:
            raise PromotionError(f"{model} v{version} is the champion: roll it back instead of rejecting it")
        try:
            registry.version(model, version)
        except Exception:  # noqa: BLE001 - MLflow raises its own exception for an unknown version
            raise PromotionError(f"{model} v{version} is not a registered version") from None
        at = audit.now_iso()
        # the decision first: from here no path can promote it, whatever happens next
        registry.set_version_tags(model, version, approval.decision_tags(approval.REJECTED, by, at, reason))
        note, served = f"rejected v{version}", "unchanged"
        if rec is not None and rec["version"] == version:
            p = staging.progress(settings, model)
            during = f"during its {rec.get('mode', 'shadow')}" + (f" ({p.rows}/{p.need} requests)" if p else "")
            staging.withdraw(
                settings,
                registry,
                model,
                version,
                f"rejected by {by} ({via}) {during}" + (f": {reason}" if reason else ""),
            )
            note += f" {during}"
            served = f"{rec.get('mode', 'shadow')} of v{version} ended: every request on {version_label(current)}"
        audit.append(
            settings.model_dir(model),
            audit.AuditEntry(
                at=at,
                model=model,
                previous=current,
                to=current,
                actor=f"{by} ({via})",
                trigger="approval",
                reason=note + (f": {reason}" if reason else ""),
                kind="reject",
                gate={
                    c: f"{state}: {why}"
                    for c, (state, why) in registry.gate_verdicts(model, version, checks_of(settings, model)).items()
                },
                endpoint=served,
                intent="",
                candidate=version,
            ),
        )
    if served == "unchanged":
        return Rejection(version, None)
    staging.notify(endpoint, model)  # this worker at once, the others at their next poll
    return Rejection(version, served)


def _default_rejection(
    settings: Settings, registry: MlflowRegistry, model: str, rec: dict | None, current: int | None
) -> int:
    """The staged candidate, else the newest awaiting approval; a newer one awaiting approval while
    one is staged (deploy.approval required, canary): ambiguous, refused."""
    waiting = [a.version for a in awaiting_approval(settings, registry, model)]
    if rec is not None:
        waiting = [v for v in waiting if v > rec["version"]]  # older ones: superseded or refused already
    if rec is not None and waiting:
        raise PromotionError(
            f"{model}: v{rec['version']} is in {rec.get('mode', 'shadow')} and v{waiting[0]} awaits approval: "
            "name one with --version"
        )
    if rec is not None:
        return int(rec["version"])
    if not waiting:
        raise PromotionError(
            f"{model}: no candidate is staged or awaiting approval (champion {version_label(current)}); "
            "name one with --version"
        )
    return waiting[0]


def awaiting_approval(settings: Settings, registry: MlflowRegistry, model: str) -> list[approval.Awaiting]:
    """Gate-passed candidates waiting for a person, newest first (whatever deploy.approval says:
    in auto mode the list holds only candidates the automation could not deploy)."""
    return approval.awaiting(
        [(int(v.version), v.tags) for v in registry.versions(model)],
        champion_version(settings, model),
        gate_passed=lambda tags: servable(tags, approval_checks(settings.models[model])),
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
    """Without ``to_version`` while a candidate is staged, the release in progress is what is rolled
    back: the candidate is refused, the champion stays and answers every request again. Otherwise
    the champion moves back (to ``to_version``, else the newest older gate-passed version), and a
    candidate staged against the champion it replaced is refused."""
    from ml_platform.control import staging

    _registry_kept(settings, registry, model)
    current = champion_version(settings, model)
    rec = staging.staged(settings, model)
    if to_version is None and rec is not None:
        mode = rec.get("mode", "shadow")
        v = staging.end_stage(
            settings, registry, endpoint, model, actor=actor, reason=stage_files.rolled_back_reason(actor, mode)
        )
        if v is not None:
            note = f"v{v}'s {mode} rolled back: every request on champion {version_label(current)}"
            return Promotion(model, current, current, endpoint=note)
    passed = rollback_targets(settings, registry, model)
    targets = [v for v in passed if v != current]
    if to_version is None:
        older = [v for v in targets if current is None or v < current]
        if not older:
            shown = ", ".join(version_label(v) for v in sorted(passed)) or "none"
            raise PromotionError(
                f"{model}: no earlier version that passed the gate to roll back to "
                f"(champion {version_label(current)}; gate-passed versions: {shown})"
            )
        to_version = older[0]
    p = move_champion(
        settings,
        registry,
        endpoint,
        model,
        to_version,
        actor=actor,
        reason=f"rollback from {version_label(current)}",
        trigger="manual",
        kind="rollback",
    )
    staging.end_stage(settings, registry, endpoint, model, actor=actor)
    return p
