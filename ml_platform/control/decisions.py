"""Retrain decisions and the run tags that carry them: what the retrain sensor, the weekly
schedule and `ml-platform run` share.

A "no retrain" is recorded on its batch when it is decided; a retrain travels in the tags of
the run that acts on it, and that run records it on the batch (``record_retrain_decision``).
A tick that dies before its run is submitted leaves the batch undecided, and the next tick
decides it again (same run_key, so never twice)."""

from __future__ import annotations

import dataclasses
import json
import time

import dagster as dg

from ml_platform import names
from ml_platform.control.chain import Chain
from ml_platform.control.champion import champion_version
from ml_platform.core import catalog, code_version
from ml_platform.core.batch_record import BatchRecord
from ml_platform.core.landing import LandingFile
from ml_platform.core.policy import Decision, decide, monitoring_complete
from ml_platform.names import (
    TAG_ARRIVAL,
    TAG_BATCH,
    TAG_REASON,
    TAG_REGIME_START,
    TAG_SHA,
    TAG_SOURCE,
    TAG_TRIGGER,
    VERSION_CHECK_ONLY,
    VERSION_CODE,
    VERSION_CODE_MANIFEST,
)

STALE_INGEST_SECONDS = 600


def ingest_tags(f: LandingFile) -> dict:
    return {TAG_SOURCE: str(f.path), TAG_SHA: f.sha256, TAG_ARRIVAL: repr(f.mtime)}


def train_tags(decision: Decision, batch: str | None) -> dict:
    tags = {TAG_TRIGGER: decision.trigger, TAG_REASON: decision.reason[:1000]}
    if batch:
        tags[TAG_BATCH] = batch
    if decision.regime_start:
        tags[TAG_REGIME_START] = decision.regime_start
    return tags


def pending_decisions(
    chain: Chain, instance: dg.DagsterInstance | None, retrain_in_flight: bool = False
) -> list[tuple[BatchRecord, Decision]]:
    """Apply the retrain policy to every monitored batch that has no decision yet, in arrival
    order. A "no retrain" is recorded on the batch here (no run will act on it); a retrain is
    recorded by the train run that carries it. A retrain decided here is in flight for the
    batches after it, so one call never asks for two retrains (on_drift)."""
    records = catalog.read_records(chain.dir)
    has_champion = champion_version(chain.settings, chain.name) is not None
    out = []
    for i, rec in enumerate(records):
        if rec.decided:
            continue
        if not monitoring_complete(rec):
            # Decide in arrival order: wait for an earlier batch still being ingested, unless
            # its ingest died long ago (then it stays undecided and the rest go on).
            if time.time() - float(rec.ingested_at or 0) < STALE_INGEST_SECONDS:
                break
            continue
        if instance is not None and batch_train_run(instance, chain, rec.partition):
            retrain_in_flight = True  # decided before; its run has not recorded it yet
            continue
        d = decide(rec, records[:i], chain.cfg, has_champion=has_champion, retrain_in_flight=retrain_in_flight)
        decision = dataclasses.replace(d, at=time.time())
        if not d.retrain:
            catalog.update_record(chain.dir, rec.partition, decision=decision)
        records[i] = dataclasses.replace(rec, decision=decision)
        retrain_in_flight = retrain_in_flight or d.retrain
        out.append((rec, d))
    return out


def batch_train_run(instance: dg.DagsterInstance, chain: Chain, partition: str) -> str | None:
    ids = instance.get_run_ids(
        dg.RunsFilter(job_name=names.train_job(chain.name), tags={TAG_BATCH: partition}), limit=1
    )
    return ids[0] if ids else None


def record_retrain_decision(chain: Chain, tags: dict, run_id: str) -> None:
    """Called by the train run: the retrain decision it carries goes on its batch."""
    batch = tags.get(TAG_BATCH)
    if not batch or catalog.read_record(chain.dir, batch) is None:
        return
    catalog.update_record(
        chain.dir,
        batch,
        decision=Decision(
            True,
            tags.get(TAG_TRIGGER, "manual"),
            tags.get(TAG_REASON, ""),
            tags.get(TAG_REGIME_START),
            at=time.time(),
            run_id=run_id,
        ),
    )


def train_in_flight(instance: dg.DagsterInstance, chain: Chain) -> bool:
    active = [
        dg.DagsterRunStatus.QUEUED,
        dg.DagsterRunStatus.NOT_STARTED,
        dg.DagsterRunStatus.STARTING,
        dg.DagsterRunStatus.STARTED,
    ]
    return bool(instance.get_run_ids(dg.RunsFilter(job_name=names.train_job(chain.name), statuses=active), limit=1))


def decision_observation(chain: Chain, rec: BatchRecord, d: Decision) -> dg.AssetObservation:
    """The decision as an observation on the batch's drift_report partition (UI: asset page)."""
    drift = rec.drift_summary
    perf = rec.performance_figure
    meta = {
        "retrain": d.retrain,
        "trigger": d.trigger,
        "reason": d.reason,
        "drift_verdict": str(drift.get("verdict", "n/a")),
        "share_drifted": float(drift.get("share_drifted") or 0.0),
    }
    if perf.get("value") is not None:
        meta.update(
            performance=float(perf["value"]),
            performance_drop=float(perf["drop"]),
            significant_drop=bool(perf["significant"]),
        )
        if rec.concept_check:
            meta.update(concept_moved=rec.concept_moved, concept_p_value=float(rec.concept_check["p_value"]))
    est = rec.estimate_figure
    if est.get("value") is not None:  # CBPE, label-free: next to the measured figure when both exist
        meta.update(
            estimated_performance=float(est["value"]),
            estimated_ci_low=float(est["ci_low"]),
            estimated_ci_high=float(est["ci_high"]),
            estimated_significant_drop=bool(est["significant"]),
        )
    elif est.get("reason"):
        meta["estimate"] = f"none: {est['reason']}"
    return dg.AssetObservation(asset_key=chain.key("drift_report"), partition=rec.partition, metadata=meta)


def newest_candidate_run_start(instance: dg.DagsterInstance, chain: Chain) -> float | None:
    """When the run that built the newest candidate started (epoch seconds), or None. The
    candidate is materialized before the gate judges it, so this covers blocked candidates
    too; a run that died before building one is not counted."""
    event = instance.get_latest_materialization_event(chain.key("candidate_model"))
    if event is None:
        return None
    rec = instance.get_run_record_by_id(event.run_id)
    if rec is None:
        return None
    return rec.start_time or rec.create_timestamp.timestamp()


def code_change_decision(chain: Chain, registry, parts: dict[str, str], version_of_code: str) -> Decision | None:
    """A retrain (trigger ``code``) when the champion was trained by other code than the code
    loaded now (``core/code_version``), unless a candidate of this code exists already (judged by
    the gate, or awaiting approval: its outcome stands). None when ``retrain.on_code_change`` is
    off, without a champion, or for a champion from before code versions were recorded."""
    if not chain.cfg.retrain.on_code_change:
        return None
    champion = champion_version(chain.settings, chain.name)
    if champion is None:
        return None
    tags = registry.version(chain.name, champion).tags
    old = tags.get(VERSION_CODE)
    if old is None or old == version_of_code:
        return None
    for v in registry.versions(chain.name):
        if v.tags.get(VERSION_CODE) == version_of_code and v.tags.get(VERSION_CHECK_ONLY) != "true":
            return None
    try:
        old_parts = json.loads(tags.get(VERSION_CODE_MANIFEST) or "{}")
    except ValueError:
        old_parts = {}
    what = ", ".join(code_version.changed(old_parts, parts)) or "unknown parts"
    return Decision(
        True, "code", f"code version of v{champion} {old} -> {version_of_code} (changed: {what})", at=time.time()
    )
