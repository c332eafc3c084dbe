"""Retrain decisions and the run tags that carry them: what the retrain sensor, the weekly
schedule and `ml-platform run` share.

One decision per batch, whatever runs (`up`'s sensor, any number of `ml-platform run`s): batches
are decided under a per-model lock (``decision_lock``), and a retrain is recorded on its batch at
once as a *claim* (``Decision.claimed_by``: "sensor" or "run <pid>@<host>") before its run exists;
the run then records it again with its run id (``record_retrain_decision``). Another process
finds the batch decided and leaves it. A claim whose run never appeared (a tick or a `run` that
died first) is decided again: by the sensor at once with the same run_key (Dagster never submits
it twice), by anyone once the claimant is gone (``claimant_live``)."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import time

import dagster as dg

from ml_platform import names
from ml_platform.control.chain import Chain
from ml_platform.control.champion import champion_version
from ml_platform.core import audit, catalog, code_version, files
from ml_platform.core.batch_record import BatchRecord
from ml_platform.core.landing import LandingFile
from ml_platform.core.policy import Decision, decide, monitoring_complete
from ml_platform.names import (
    CODE_CLAIM,
    DECISION_LOCK,
    TAG_ARRIVAL,
    TAG_BATCH,
    TAG_PARTITION,
    TAG_RANGE_END,
    TAG_RANGE_START,
    TAG_REASON,
    TAG_REGIME_START,
    TAG_SHA,
    TAG_SOURCE,
    TAG_TRIGGER,
    TAG_WORKER_DIED,
    VERSION_CHECK_ONLY,
    VERSION_CODE,
    VERSION_CODE_MANIFEST,
)
from ml_platform.runtime import processes

STALE_INGEST_SECONDS = 600
CLAIM_TTL_SECONDS = 300  # a sensor's claim without its run after this long: the tick died
# A claim by a live `run` on this host after this long: hung (or a PID reused where /proc cannot
# tell). Above the longest a live `run` holds one: its retrain claim while it waits for the train
# pool (runner.TRAIN_POOL_WAIT_SECONDS).
LOCAL_CLAIM_MAX_SECONDS = 3600
SENSOR = "sensor"


def this_run() -> str:
    """The claimant name of this `ml-platform run` / `train` process."""
    return f"run {os.getpid()}@{socket.gethostname()}"


def decision_lock(chain: Chain, timeout: float = 120):
    """Held while batches are decided and claimed (briefly: no training under it)."""
    return files.file_lock(chain.dir / DECISION_LOCK, timeout=timeout, what="the retrain-decision lock")


def claimant_live(by: str, at: float | None, now: float | None = None) -> bool:
    """Whether a claim ``by`` made at ``at`` still stands (the one rule for every claim: retrain
    decisions, code retrains, `run`'s ingests). A `run` on this host (``run <pid>@<host>``) holds
    it while that very process lives (a PID a later process took over does not count:
    ``runtime.processes.pid_alive`` compares its start time with the claim's) and LOCAL_CLAIM_MAX_SECONDS
    at most; the sensor or a `run` on another host (its process cannot be looked at), for
    CLAIM_TTL_SECONDS."""
    age = (time.time() if now is None else now) - float(at or 0)
    pid, _, host = by.removeprefix("run ").partition("@")
    if by.startswith("run ") and pid.isdigit() and host == socket.gethostname():
        return age < LOCAL_CLAIM_MAX_SECONDS and processes.pid_alive(int(pid), float(at or 0))
    return age < CLAIM_TTL_SECONDS


def open_claim(rec: BatchRecord) -> bool:
    """A retrain claimed on ``rec`` whose run has not recorded it yet."""
    d = rec.decision
    return d is not None and d.retrain and d.run_id is None and bool(d.claimed_by)


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
    chain: Chain,
    instance: dg.DagsterInstance | None,
    retrain_in_flight: bool = False,
    *,
    by: str = SENSOR,
    taken: list | None = None,
) -> list[tuple[BatchRecord, Decision]]:
    """Apply the retrain policy to every monitored batch that has no decision yet, in arrival
    order, under the decision lock; every decision (a retrain as a claim by ``by``) is recorded
    on its batch before the lock is released. A retrain decided here is in flight for the
    batches after it, so one call never asks for two retrains (on_drift). The sensor (``by`` =
    SENSOR) also gets back its own claims whose run does not exist yet, to request them again
    under the same run_key. ``taken``: filled with (record, decision) of batches whose retrain
    another process claimed and has not run yet."""
    with decision_lock(chain):
        records = catalog.read_records(chain.dir)
        # Read under the lock: a champion another process moved while this one waited for it
        # (its retrain on the batch before) is the one this batch's evidence is weighed against.
        champion = champion_version(chain.settings, chain.name)
        has_champion = champion is not None
        out = []
        for i, rec in enumerate(records):
            if rec.decided and not open_claim(rec):
                if instance is not None and rec.retrained and _run_active(instance, rec.decision.run_id):
                    retrain_in_flight = True  # another process's retrain on an earlier batch runs now
                continue
            if not rec.decided and not monitoring_complete(rec):
                failed = ingest_failure(instance, chain, rec.partition) if instance is not None else None
                if failed is None:
                    # Decide in arrival order: wait for an earlier batch still being ingested,
                    # unless its ingest died long ago (then it stays undecided and the rest go on).
                    if time.time() - float(rec.ingested_at or 0) < STALE_INGEST_SECONDS:
                        break
                    continue
                # Its ingest run failed in a step: the batch failed, decided now, not in 10 minutes.
                rec = catalog.update_record(chain.dir, rec.partition, status="failed", reason=failed)
                records[i] = rec
            run_id = batch_train_run(instance, chain, rec.partition) if instance is not None else None
            if run_id is not None:
                if _run_active(instance, run_id):
                    retrain_in_flight = True  # decided before; its run has not recorded it yet
                    continue
                # Its run ended, its record has no decision: the record was rebuilt (a corrupt one
                # moved aside, the file ingested again). The decision the run carried goes back on
                # it; counted in flight forever, it would stop every later retrain.
                run = instance.get_run_by_id(run_id)
                record_retrain_decision(chain, run.tags if run is not None else {TAG_BATCH: rec.partition}, run_id)
                records[i] = catalog.read_record(chain.dir, rec.partition) or rec
                continue
            if open_claim(rec):
                if rec.decision.claimed_by == by == SENSOR:  # the tick may have died: ask again
                    out.append((rec, rec.decision))
                    retrain_in_flight = True
                    continue
                if claimant_live(rec.decision.claimed_by or "", rec.decision.at):
                    if taken is not None:
                        taken.append((rec, rec.decision))
                    retrain_in_flight = True
                    continue
                # its claimant is gone without a run: decide again
            d = decide(rec, records[:i], chain.cfg, has_champion=has_champion, retrain_in_flight=retrain_in_flight)
            d = stale_evidence(chain, rec, d, champion) or d
            decision = dataclasses.replace(d, at=time.time(), claimed_by=by if d.retrain else None)
            catalog.update_record(chain.dir, rec.partition, decision=decision)
            records[i] = dataclasses.replace(rec, decision=decision)
            retrain_in_flight = retrain_in_flight or d.retrain
            out.append((rec, d))
        return out


def ingest_failure(instance: dg.DagsterInstance, chain: Chain, partition: str) -> str | None:
    """Why the ingest run that took ``partition`` failed in a step (its first failed step and
    the error it raised), or None while it runs, when it succeeded, or when only its worker
    died (that run is retried: ``run_health``)."""
    job = names.ingest_job(chain.name)
    recs = instance.get_run_records(dg.RunsFilter(job_name=job, tags={TAG_PARTITION: partition}), limit=1)
    # else a multi-file run: the latest failed one whose range holds the partition
    run = recs[0].dagster_run if recs else next(_failed_range_runs(instance, job, chain.name, partition), None)
    if run is None or run.status != dg.DagsterRunStatus.FAILURE or TAG_WORKER_DIED in run.tags:
        return None
    for entry in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE):
        event = entry.dagster_event
        err = event.event_specific_data.error if event.event_specific_data else None
        while err is not None and err.cause is not None:  # the user-code error, not Dagster's wrapper
            err = err.cause
        what = (err.message.strip().splitlines() or [""])[0] if err else "failed"
        step = (event.step_key or "").removeprefix(f"{chain.name}__")
        return f"{step} failed: {what[:300]} (run {run.run_id[:8]})"
    return None


def _failed_range_runs(instance: dg.DagsterInstance, job: str, model: str, partition: str):
    keys = None
    failed = dg.RunsFilter(job_name=job, statuses=[dg.DagsterRunStatus.FAILURE])
    for r in instance.get_run_records(failed, limit=20):
        start, end = r.dagster_run.tags.get(TAG_RANGE_START), r.dagster_run.tags.get(TAG_RANGE_END)
        if start is None or end is None:
            continue
        keys = keys if keys is not None else instance.get_dynamic_partitions(names.partitions(model))
        if {start, end, partition} <= set(keys) and keys.index(start) <= keys.index(partition) <= keys.index(end):
            yield r.dagster_run


# Triggers that are evidence about the champion the batch was monitored against.
EVIDENCE_TRIGGERS = frozenset({"drift", "performance", "concept", "challenger", "estimated_performance"})


def stale_evidence(chain: Chain, rec: BatchRecord, d: Decision, champion: int | None) -> Decision | None:
    """No retrain when ``d`` retrains on evidence measured against a champion that has been
    replaced since (another process's retrain on the batch before, a rollback): one drift
    episode moves the champion once. The next batch is judged against the new champion."""
    # Any figure measured against another version taints the decision: drift's can name the new
    # champion while the figure that triggered the retrain was measured against the old one.
    others = sorted(rec.monitored_versions - {champion}) if champion is not None else []
    if not d.retrain or d.trigger not in EVIDENCE_TRIGGERS or not others:
        return None
    seen = ", ".join(f"v{v}" for v in others)
    moves = [m for m in audit.read(chain.dir) if m.moved and m.to == champion]
    since = f" ({moves[-1].kind} by {moves[-1].actor}, trigger {moves[-1].trigger})" if moves else ""
    return Decision(
        False,
        "none",
        f"{d.trigger} was measured against {seen}, but v{champion} is the champion now{since}: "
        f"not evidence against v{champion}; the next batch is judged against it",
        at=time.time(),
    )


def _run_active(instance: dg.DagsterInstance, run_id: str | None) -> bool:
    if not run_id:
        return False
    rec = instance.get_run_record_by_id(run_id)
    return rec is not None and not rec.dagster_run.is_finished


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
    the gate, or awaiting approval: its outcome stands). With no champion yet, the newest
    candidate stands in for it: code fixed after the first candidates were refused trains one of
    its own (without a candidate yet, the first batch trains it). None when
    ``retrain.on_code_change`` is off, or for a version from before code versions were recorded."""
    if not chain.cfg.retrain.on_code_change:
        return None
    champion = champion_version(chain.settings, chain.name)
    versions = None
    if champion is None:
        if registry.champion_alias(chain.name) is not None:
            return None  # the champion's pointer is missing: repaired first (reconcile), then compared
        versions = registry.versions(chain.name)
        judged = [int(v.version) for v in versions if v.tags.get(VERSION_CHECK_ONLY) != "true"]
        if not judged:
            return None
        ref, says = max(judged), "no champion yet; newest candidate"
    else:
        ref, says = champion, "code version of"
    tags = registry.version(chain.name, ref).tags
    old = tags.get(VERSION_CODE)
    if old is None or old == version_of_code:
        return None
    for v in versions if versions is not None else registry.versions(chain.name):
        if v.tags.get(VERSION_CODE) == version_of_code and v.tags.get(VERSION_CHECK_ONLY) != "true":
            return None
    try:
        old_parts = json.loads(tags.get(VERSION_CODE_MANIFEST) or "{}")
    except ValueError:
        old_parts = {}
    what = ", ".join(code_version.changed(old_parts, parts)) or "unknown parts"
    return Decision(True, "code", f"{says} v{ref} {old} -> {version_of_code} (changed: {what})", at=time.time())


def claim_code_retrain(chain: Chain, instance: dg.DagsterInstance, key: str, by: str) -> bool:
    """Take the code-change retrain ``key`` (code version and champion) for ``by``: False when a
    train run is in flight or another live claimant took the same key (one run per code change,
    whichever of the sensor and the `run`s decides first)."""
    path = chain.dir / CODE_CLAIM
    with decision_lock(chain):
        if train_in_flight(instance, chain):
            return False
        try:
            claim = json.loads(path.read_text())
        except (OSError, ValueError):
            claim = {}
        if claim.get("key") == key and claim.get("by") != by and claimant_live(str(claim.get("by")), claim.get("at")):
            return False
        files.write_json(path, {"key": key, "by": by, "at": time.time()}, "the code-retrain claim")
        return True
