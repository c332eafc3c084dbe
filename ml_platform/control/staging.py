"""Staging before production (``deploy.strategy: shadow | canary``): a gated candidate is loaded by
the endpoint beside the champion, judged on live traffic (``live_shadow``), then promoted through
``move_champion`` or refused; the champion never moves without that evidence.

State of record: the serving store's ``staged.json`` (what is staged, since when, how) and the
endpoint's evidence files (``serving/staging.py``), both on disk, so a restarted endpoint or daemon
resumes from them. The verdict is recorded on the MLflow version like every gate check
(``gate.live_shadow``), which ``move_champion`` requires; the decisions (staged, refused) go to the
audit next to the champion moves. Every step is idempotent: a process killed anywhere leaves either
the stage in place (judged again next time) or the move's intent (finished by ``reconcile``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from ml_platform.control.champion import champion_version
from ml_platform.control.champion import store as model_store
from ml_platform.control.promotion import Promotion, PromotionError, move_champion, move_lock, publish, version_files_of
from ml_platform.control.servable import gate_refusal
from ml_platform.core import approval, audit, catalog, files, stage_files, training
from ml_platform.core import staging as live
from ml_platform.names import COL_ID, LIVE_CHECK, VERSION_STAGED, gate_reason_tag, gate_tag, offline_checks
from ml_platform.resources.endpoint import EndpointClient, EndpointUnavailable
from ml_platform.resources.registry import MlflowRegistry
from ml_platform.runtime import faults
from ml_platform.settings import Settings


def evidence_dir(settings: Settings, model: str) -> Path:
    return settings.live_samples_dir / model


def staged(settings: Settings, model: str) -> dict | None:
    try:
        return model_store(settings).staged(model)
    except (OSError, ValueError):
        return None


def should_stage(settings: Settings, registry: MlflowRegistry, model: str, version: int) -> bool:
    """Does a deploy of ``version`` go to staging first? With a shadow/canary strategy, unless there
    is no champion yet (the first model is always direct), it is the champion, or it has passed
    its live comparison already."""
    if settings.models[model].deploy.strategy == "direct":
        return False
    current = champion_version(settings, model)
    if current is None or current == version:
        return False
    return registry.version(model, version).tags.get(gate_tag(LIVE_CHECK)) != "passed"


def approval_after_live(settings: Settings, model: str) -> bool:
    """``deploy.approval: required`` with ``strategy: shadow``: the shadow runs first, the person is
    asked once ``live_shadow`` passed (``names.approval_checks``); a canary is approved before it starts."""
    d = settings.models[model].deploy
    return d.approval == "required" and d.strategy == "shadow"


def waive_first(registry: MlflowRegistry, settings: Settings, model: str, version: int) -> None:
    """The first champion of a staged model deploys directly: nothing serves to compare it with."""
    if settings.models[model].deploy.strategy != "direct" and champion_version(settings, model) is None:
        tags = registry.version(model, version).tags
        if tags.get(gate_tag(LIVE_CHECK)) is None:
            registry.set_version_tags(
                model,
                version,
                {
                    gate_tag(LIVE_CHECK): "passed",
                    gate_reason_tag(LIVE_CHECK): "no champion yet: the first model is deployed directly",
                },
            )


def _settings_of(settings: Settings, model: str) -> dict:
    d = settings.models[model].deploy
    sub = d.shadow if d.strategy == "shadow" else d.canary
    return {
        "mode": d.strategy,
        "share": sub.share,
        "min_requests": sub.min_requests,
        "max_hours": sub.max_hours,
        "latency_budget_ms": settings.models[model].gate.latency_budget_ms,
    }


def stage(
    settings: Settings,
    registry: MlflowRegistry,
    endpoint: EndpointClient | None,
    model: str,
    version: int,
    *,
    actor: str,
    trigger: str,
) -> str:
    """Load ``version`` beside the champion. Refused (PromotionError) unless every offline gate check
    passed against the champion serving now. A version staged already stays (its evidence too); an
    older staged version is superseded: refused, with the reason. -> what happened."""
    cfg = settings.models[model]
    with move_lock(settings, model):
        current = champion_version(settings, model)
        refusal = gate_refusal(registry, model, version, serving=current, kind="deploy", checks=offline_checks(cfg))
        tags = registry.version(model, version).tags
        if not refusal and tags.get(gate_tag(LIVE_CHECK)) == "failed":  # a refusal stands (see judge_and_conclude)
            refusal = f"{model} v{version} was refused on live traffic: {tags.get(gate_reason_tag(LIVE_CHECK), '')}"
        if refusal:
            raise PromotionError(refusal)
        store = model_store(settings)
        old = staged(settings, model)
        if old is not None and old["version"] == version:
            return f"v{version} is already in {old['mode']} behind v{old.get('champion')}"
        files = version_files_of(settings, registry, model, version)
        import json

        meta = {**json.loads(files.serving.read_text()), "version": version}
        publish(store, model, version, files.onnx.read_bytes(), meta)
        if old is not None:
            _refuse(
                settings,
                registry,
                model,
                old,
                f"superseded by v{version}, a newer candidate staged while v{old['version']} was in {old['mode']}",
                actor,
            )
        record = {
            "version": version,
            "champion": current,
            **_settings_of(settings, model),
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "trigger": trigger,
            "actor": actor,
        }
        store.stage(model, record)
        faults.point("stage:staged")
        registry.set_version_tags(model, version, {VERSION_STAGED: record["mode"]})
        audit.append(
            settings.model_dir(model),
            _decision(model, current, actor, trigger, f"staged v{version} as {record['mode']}", "stage", version),
        )
    notify(endpoint, model)
    return f"v{version} staged as {record['mode']} behind v{current}"


def _decision(model, current, actor, trigger, reason, kind, candidate) -> audit.AuditEntry:
    return audit.AuditEntry(
        at=audit.now_iso(),
        model=model,
        previous=current,
        to=current,
        actor=actor,
        trigger=trigger,
        reason=reason,
        kind=kind,
        gate={},
        endpoint="unchanged",
        intent="",
        candidate=candidate,
    )


def notify(endpoint: EndpointClient | None, model: str) -> None:
    if endpoint is not None:
        with contextlib.suppress(EndpointUnavailable, Exception):
            endpoint.reload(model)


def _refuse(
    settings: Settings, registry: MlflowRegistry, model: str, rec: dict, reason: str, actor: str | None
) -> None:
    """Record the refusal on the version and in the audit, and end the stage (caller holds the lock).
    ``actor`` None: the caller writes the audit entry (a person's reject, kind "reject")."""
    v = rec["version"]
    registry.set_version_tags(model, v, {gate_tag(LIVE_CHECK): "failed", gate_reason_tag(LIVE_CHECK): reason[:5000]})
    faults.point("stage:refused")
    model_store(settings).unstage(model)
    if actor is None:
        return
    audit.append(
        settings.model_dir(model),
        _decision(
            model,
            champion_version(settings, model),
            actor,
            rec.get("trigger", "stage"),
            f"refused v{v}: {reason}",
            "refuse",
            v,
        ),
    )


def withdraw(settings: Settings, registry: MlflowRegistry, model: str, version: int, reason: str) -> dict | None:
    """A person rejected ``version`` while it is staged: its live verdict is "failed" with their
    reason and the stage ends now (the endpoint drops it at its next poll), not when its evidence is
    in. The caller holds the move lock and writes the audit entry. -> the stage record, or None."""
    rec = staged(settings, model)
    if rec is None or rec["version"] != version:
        return None
    _refuse(settings, registry, model, rec, reason, None)
    return rec


@dataclass
class Progress:
    version: int
    champion: int | None
    mode: str
    rows: int
    need: int
    started_at: str
    failures: list[str] = field(default_factory=list)
    waiting: str = ""  # judged once, waiting for labelled live rows (stage_files.waiting_line)

    def line(self) -> str:
        """ "v5 in shadow behind v4: 312/500 requests", and what it waits for when it does."""
        line = stage_files.progress_line(
            {"version": self.version, "mode": self.mode, "champion": self.champion, "min_requests": self.need},
            self.rows,
        )
        return f"{line} - {self.waiting}" if self.waiting else line


def progress(settings: Settings, model: str) -> Progress | None:
    rec = staged(settings, model)
    if rec is None:
        return None
    d = evidence_dir(settings, model)
    v = rec["version"]
    return Progress(
        v,
        rec.get("champion"),
        rec.get("mode", "shadow"),
        live.count_rows(d, v),
        int(rec.get("min_requests", 0)),
        rec.get("started_at", ""),
        live.failures(d, v),
        stage_files.waiting_line(wait) if (wait := stage_files.labels_wait(d, rec)) else "",
    )


def ready(settings: Settings, model: str, now: datetime | None = None) -> str | None:
    """Why the staged candidate should be judged now, or None (nothing staged, evidence short, or
    waiting for labelled live rows). The staging sensor asks every few seconds: the evidence is
    counted last."""
    rec = staged(settings, model)
    if rec is None:
        return None
    v, d = rec["version"], evidence_dir(settings, model)
    if live.failures(d, v):
        return f"v{v} failed on live traffic"
    current, judged_against = champion_version(settings, model), rec.get("champion")
    if judged_against is not None and current == v:
        return f"v{v} is the champion already"
    if current != judged_against:
        return _moved(v, judged_against, current)
    expired = live.expired(rec, float(rec.get("max_hours", 24)), _now(now))
    wait = stage_files.labels_wait(d, rec)
    if wait is not None:  # judged once: only a batch record written since (labels) or the clock changes that
        if expired:
            return f"max_hours reached while v{v} waited for labelled live rows"
        if catalog.records_stamp(settings.model_dir(model)) == wait.get("stamp"):
            return None
        return f"batches landed while v{v} waited for labelled live rows"
    rows, need = live.count_rows(d, v), int(rec.get("min_requests", 0))
    if rows >= need:
        return f"{rows}/{need} requests"
    if expired:
        return f"max_hours reached with {rows}/{need} requests"
    return None


def _moved(version: int, judged_against: int | None, current: int | None) -> str:
    return (
        f"the champion moved from v{judged_against} to v{current} while v{version} was staged: "
        f"its live evidence is against v{judged_against}"
    )


def end_stage(
    settings: Settings,
    registry: MlflowRegistry,
    endpoint: EndpointClient | None,
    model: str,
    *,
    actor: str,
    reason: str | None = None,
) -> int | None:
    """Refuse the staged candidate and tell the endpoint (a canary's share is back on the champion
    at once): with ``reason`` (a person rolled the release back), else only when the champion moved
    since it was staged (its evidence is against a champion that no longer serves).
    -> the refused version, or None."""
    with move_lock(settings, model):
        rec = staged(settings, model)
        current = champion_version(settings, model)
        if rec is None or current == rec["version"]:
            return None
        if reason is None:
            if current == rec.get("champion"):
                return None
            reason = _moved(rec["version"], rec.get("champion"), current)
        _refuse(settings, registry, model, rec, reason, actor)
    notify(endpoint, model)
    return rec["version"]


def _now(now: datetime | None) -> datetime:
    return now or datetime.now(UTC)


def labelled_rows(settings: Settings, model: str) -> pd.Series | None:
    """The target by id (as str) from every labelled validated batch, the newest label winning."""
    cfg = settings.models[model]
    if not cfg.id_column:
        return None
    parts = []
    for rec in sorted(catalog.read_records(settings.model_dir(model)), key=lambda r: r.validated_at or 0):
        if not rec.labelled or not rec.validated_path or not Path(rec.validated_path).is_file():
            continue
        try:
            df = pd.read_parquet(rec.validated_path, columns=[cfg.id_column, cfg.target])
        except (OSError, ValueError, KeyError):
            continue
        parts.append(df)
    if not parts:
        return None
    df = pd.concat(parts, ignore_index=True).dropna().drop_duplicates(cfg.id_column, keep="last")
    # the labels as the gate sees them (integral classes as int64, as the models were trained)
    return pd.Series(training.target_values(df, cfg), index=df[cfg.id_column].astype(str).to_numpy())


@dataclass
class Outcome:
    version: int | None
    state: str  # "nothing staged" | "pending" | "promoted" | "refused" | "awaiting approval"
    reason: str
    judged: live.Judged | None = None
    promotion: Promotion | None = None
    progress: Progress | None = None


def judge_and_conclude(
    settings: Settings,
    registry: MlflowRegistry,
    endpoint: EndpointClient | None,
    model: str,
    *,
    actor: str,
    now: datetime | None = None,
) -> Outcome:
    """The live comparison of the staged candidate, when its evidence is in (or it failed, or its
    time ran out): pass -> ``move_champion`` (trigger and reason recorded), or, a shadow that needs a
    person's approval, "awaiting approval" (the stage ends, the verdict stays on the version); fail
    -> refused, the champion stays. A candidate staged against a champion that no longer serves
    (rolled back meanwhile) is refused. Short of evidence: "pending", nothing recorded."""
    cfg = settings.models[model]
    rec = staged(settings, model)
    if rec is None:
        return Outcome(None, "nothing staged", "no candidate is staged")
    v = rec["version"]
    current = champion_version(settings, model)
    if current == v:  # promoted by a process that died before ending the stage
        model_store(settings).unstage(model)
        notify(endpoint, model)
        return Outcome(v, "promoted", f"v{v} is the champion (the stage was left behind: ended)")
    if current != rec.get("champion"):
        if end_stage(settings, registry, endpoint, model, actor=actor) is None:
            return Outcome(v, "pending", "the stage changed while it was judged")
        return Outcome(v, "refused", _moved(v, rec.get("champion"), current))
    tags = registry.version(model, v).tags
    rejected = approval.rejection(tags)
    if rejected or tags.get(gate_tag(LIVE_CHECK)) == "failed":
        # a refusal (a person's rejection, a rollback, a failed verdict) recorded by a process killed
        # before it ended the stage: it stands. Judged again, more evidence could promote it.
        why = f"v{v} was {rejected}" if rejected else tags.get(gate_reason_tag(LIVE_CHECK)) or "refused"
        if end_stage(settings, registry, endpoint, model, actor=actor, reason=why) is None:
            return Outcome(v, "pending", "the stage changed while it was judged")
        return Outcome(v, "refused", why)
    p = progress(settings, model)
    ev = live.read_evidence(evidence_dir(settings, model), v)
    if not ev.failures and ev.n < p.need:
        if not live.expired(rec, float(rec.get("max_hours", 24)), _now(now)):
            return Outcome(v, "pending", p.line(), progress=p)
        judged = None
        reason = (
            f"{stage_files.NO_EVIDENCE}{ev.n}/{p.need} mirrored requests after max_hours ({rec.get('max_hours')} h); "
            f"the champion v{current} stays"
        )
    else:
        classes = _classes(settings, model, current)
        stamp = catalog.records_stamp(settings.model_dir(model))  # before the labels are read: none missed
        judged = live.compare(ev, cfg, champion_version=current, classes=classes, labels=labelled_rows(settings, model))
        reason = judged.verdict.reason
        # after a concept change a better candidate disagrees with the stale champion: labelled live
        # rows decide (core/staging.compare). A shadow answers no client: it waits for them until
        # max_hours; a canary does not, nor a model whose requests can never be matched to labels.
        can_wait = judged.wants_labels and rec.get("mode", "shadow") == "shadow"
        can_wait = can_wait and bool(cfg.id_column) and bool(ev.rows[COL_ID].notna().any())
        if can_wait and not live.expired(rec, float(rec.get("max_hours", 24)), _now(now)):
            wait = {
                "stamp": stamp,
                "started_at": rec.get("started_at"),
                "since": _now(now).isoformat(),
                "labelled_rows": judged.labelled_rows,
                "need": cfg.gate.min_comparison_rows,
                "reason": reason,
            }
            files.write_json(stage_files.labels_wait_path(evidence_dir(settings, model), v), wait, "a shadow's wait")
            p.waiting = stage_files.waiting_line(wait)
            return Outcome(v, "pending", p.line(), judged, progress=p)
        if can_wait:
            reason += (
                f"; {judged.labelled_rows}/{cfg.gate.min_comparison_rows} labelled live rows within max_hours "
                f"({rec.get('max_hours')} h)"
            )
    passed = judged is not None and judged.verdict.passed
    held = False
    with move_lock(settings, model):
        if staged(settings, model) != rec:  # superseded or concluded meanwhile
            return Outcome(v, "pending", "the stage changed while it was judged")
        if not passed:
            _refuse(settings, registry, model, rec, reason, actor)
            out = Outcome(v, "refused", reason, judged, progress=p)
        else:
            registry.set_version_tags(
                model, v, {gate_tag(LIVE_CHECK): "passed", gate_reason_tag(LIVE_CHECK): reason[:5000]}
            )
            held = approval_after_live(settings, model) and not registry.version(model, v).tags.get(approval.TAG)
            if held:  # the shadow ends; the person decides with this evidence (status, the check's page)
                model_store(settings).unstage(model)
                audit.append(
                    settings.model_dir(model),
                    _decision(
                        model,
                        current,
                        actor,
                        rec.get("trigger", "stage"),
                        f"v{v} passed the live comparison ({rec.get('mode')}): {reason}; awaits approval",
                        "await",
                        v,
                    ),
                )
    if not passed:
        notify(endpoint, model)
        return out
    if held:
        notify(endpoint, model)
        return Outcome(v, "awaiting approval", reason, judged, progress=p)
    faults.point("stage:judged")
    try:
        prom = move_champion(
            settings,
            registry,
            endpoint,
            model,
            v,
            actor=actor,
            trigger=rec.get("trigger", "stage"),
            reason=f"passed the live comparison ({rec.get('mode')}): {reason}",
        )
    except PromotionError as e:
        with move_lock(settings, model):
            if staged(settings, model) == rec:
                model_store(settings).unstage(model)
        notify(endpoint, model)
        return Outcome(v, "refused", f"passed live, but the move was refused: {e}", judged, progress=p)
    with move_lock(settings, model):
        if (staged(settings, model) or {}).get("version") == v:
            model_store(settings).unstage(model)
    notify(endpoint, model)
    return Outcome(v, "promoted", reason, judged, prom, p)


def _classes(settings: Settings, model: str, version: int | None) -> list | None:
    if version is None:
        return None
    try:
        _, meta = model_store(settings).read(model, version)
    except (OSError, ValueError):
        return None
    return meta.get("classes")
