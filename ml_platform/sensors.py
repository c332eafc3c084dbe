"""Sensors: landing-zone arrivals -> ingest runs; validated batches -> retrain policy -> train runs;
new live-sample files -> a live_drift run; the control plane (dead runs, champion repair).

Sensors keep their progress in cursors. A retrain decision travels in the tags of the run
that acts on it, and that run records it on the batch (``training_set``); a tick that dies
before its run is submitted leaves the batch undecided, and the next tick decides it again
(same run_key, so never twice)."""


import dataclasses
import json
import time

import dagster as dg

from ml_platform import run_health
from ml_platform.assets.common import (TAG_ARRIVAL, TAG_BATCH, TAG_REASON, TAG_REGIME_START, TAG_SHA,
                                       TAG_SOURCE, TAG_TRIGGER, Chain)
from ml_platform.champion import champion_version
from ml_platform.core import catalog
from ml_platform.core.batch_record import BatchRecord
from ml_platform.core.landing import LandingFile, scan_landing
from ml_platform.core.live import sample_files
from ml_platform.core.policy import Decision, decide, monitoring_complete, scheduled
from ml_platform.jobs import ingest_job_name, live_drift_job_name, train_job_name


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


def pending_decisions(chain: Chain, instance: dg.DagsterInstance | None,
                      retrain_in_flight: bool = False) -> list[tuple[BatchRecord, Decision]]:
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
    ids = instance.get_run_ids(dg.RunsFilter(job_name=train_job_name(chain), tags={TAG_BATCH: partition}),
                               limit=1)
    return ids[0] if ids else None


def record_retrain_decision(chain: Chain, tags: dict, run_id: str) -> None:
    """Called by the train run: the retrain decision it carries goes on its batch."""
    batch = tags.get(TAG_BATCH)
    if not batch or catalog.read_record(chain.dir, batch) is None:
        return
    catalog.update_record(chain.dir, batch, decision=Decision(
        True, tags.get(TAG_TRIGGER, "manual"), tags.get(TAG_REASON, ""), tags.get(TAG_REGIME_START),
        at=time.time(), run_id=run_id))


def train_in_flight(instance: dg.DagsterInstance, chain: Chain) -> bool:
    active = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
              dg.DagsterRunStatus.STARTED]
    return bool(instance.get_run_ids(dg.RunsFilter(job_name=train_job_name(chain), statuses=active), limit=1))


def decision_observation(chain: Chain, rec: BatchRecord, d: Decision) -> dg.AssetObservation:
    """The decision as an observation on the batch's drift_report partition (UI: asset page)."""
    drift = rec.drift_summary
    perf = rec.performance_figure
    meta = {"retrain": d.retrain, "trigger": d.trigger, "reason": d.reason,
            "drift_verdict": str(drift.get("verdict", "n/a")),
            "share_drifted": float(drift.get("share_drifted") or 0.0)}
    if perf.get("value") is not None:
        meta.update(performance=float(perf["value"]), performance_drop=float(perf["drop"]),
                    significant_drop=bool(perf["significant"]))
        if rec.concept_check:
            meta.update(concept_moved=rec.concept_moved, concept_p_value=float(rec.concept_check["p_value"]))
    est = rec.estimate_figure
    if est.get("value") is not None:  # CBPE, label-free: next to the measured figure when both exist
        meta.update(estimated_performance=float(est["value"]), estimated_ci_low=float(est["ci_low"]),
                    estimated_ci_high=float(est["ci_high"]), estimated_significant_drop=bool(est["significant"]))
    elif est.get("reason"):
        meta["estimate"] = f"none: {est['reason']}"
    return dg.AssetObservation(asset_key=chain.key("drift_report"), partition=rec.partition, metadata=meta)


CONTROL_PLANE_INTERVAL = 10


def build_sensors(chain: Chain, jobs: list) -> list[dg.SensorDefinition]:
    """``jobs``: the chain's ingest and train jobs (the control-plane sensor re-launches them)."""
    auto = chain.cfg.automation

    @dg.sensor(name=f"{chain.name}_landing_sensor", job_name=ingest_job_name(chain),
               minimum_interval_seconds=auto.landing_interval_seconds,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description=f"New files in {chain.settings.landing_dir(chain.name)} -> one ingest run each.")
    def landing_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        state = json.loads(context.cursor) if context.cursor else {}
        hashes, requested = state.get("hashes", {}), set(state.get("requested", []))
        files = scan_landing(chain.settings.landing_dir(chain.name), settle_seconds=auto.settle_seconds,
                             known_sha256=requested, hash_cache=hashes)
        if files:  # only then read the catalog: `ml-platform run` may have ingested them already
            known = catalog.known_sha256(chain.dir)
            files = [f for f in files if f.sha256 not in known]
        requested |= {f.sha256 for f in files}
        cursor = json.dumps({"hashes": hashes, "requested": sorted(requested)})
        if not files:
            return dg.SensorResult(skip_reason="no new landing files", cursor=cursor)
        existing = set(context.instance.get_dynamic_partitions(chain.partitions.name))
        new_keys = [f.partition_key for f in files if f.partition_key not in existing]
        requests = [dg.RunRequest(run_key=f"ingest-{f.sha256}", partition_key=f.partition_key,
                                  tags=ingest_tags(f)) for f in files]
        context.log.info(f"{len(requests)} new file(s): {', '.join(f.path.name for f in files)}")
        return dg.SensorResult(
            run_requests=requests, cursor=cursor,
            dynamic_partitions_requests=[chain.partitions.build_add_request(new_keys)] if new_keys else [])

    @dg.sensor(name=f"{chain.name}_retrain_sensor", job_name=train_job_name(chain),
               minimum_interval_seconds=auto.retrain_interval_seconds,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description=f"Applies the {chain.name} retrain policy ({chain.cfg.retrain.policy}) to each "
                           "validated batch; every decision is written on the batch and in the run tags.")
    def retrain_sensor(context: dg.SensorEvaluationContext):
        # Records only change when a run writes one: skip re-reading them all on an idle tick
        # (but look again every minute, for batches waiting behind a dead ingest).
        stamp, now = catalog.records_stamp(chain.dir), time.time()
        last = json.loads(context.cursor) if context.cursor else {}
        if last.get("stamp") == stamp and now - last.get("at", 0) < 60:
            return dg.SkipReason("no batch record changed")
        context.update_cursor(json.dumps({"stamp": stamp, "at": now}))
        decisions = pending_decisions(chain, context.instance, train_in_flight(context.instance, chain))
        requests = []
        for rec, d in decisions:
            context.log.info(f"{rec.partition}: {'RETRAIN' if d.retrain else 'no retrain'} "
                             f"({d.trigger}): {d.reason}")
            if d.retrain:
                requests.append(dg.RunRequest(run_key=f"train-{rec.partition}",
                                              tags=train_tags(d, rec.partition)))
        if not decisions:
            return dg.SkipReason("no newly monitored batch")
        return dg.SensorResult(run_requests=requests,
                               asset_events=[decision_observation(chain, rec, d) for rec, d in decisions])

    @dg.sensor(name=f"{chain.name}_live_drift_sensor", job_name=live_drift_job_name(chain),
               minimum_interval_seconds=auto.live_drift_interval_seconds,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description=f"New files in the {chain.name} endpoint's live sample -> a live_drift run "
                           f"(at most every {auto.live_drift_interval_seconds} s).")
    def live_drift_sensor(context: dg.SensorEvaluationContext):
        files = sample_files(chain.settings.live_samples_dir / chain.name)
        if not files:
            return dg.SkipReason("no live sample yet (is the endpoint serving traffic?)")
        newest = files[0].name
        if newest == context.cursor:
            return dg.SkipReason(f"no live sample since {newest}")
        context.update_cursor(newest)
        return dg.RunRequest(run_key=f"live-drift-{newest}", tags={TAG_TRIGGER: "live sample"})

    @dg.sensor(name=f"{chain.name}_control_plane_sensor", jobs=jobs,
               minimum_interval_seconds=CONTROL_PLANE_INTERVAL, default_status=dg.DefaultSensorStatus.RUNNING,
               description="Repairs after a crash: fails runs whose worker died and re-launches them, "
                           "finishes an interrupted champion move, and makes the MLflow alias and the "
                           "serving store agree with the champion pointer.")
    def control_plane_sensor(context: dg.SensorEvaluationContext):
        from ml_platform.promotion import reconcile
        from ml_platform.resources.endpoint import endpoint_for
        from ml_platform.resources.registry import registry_for

        names = [j.name for j in jobs]
        for run in run_health.fail_dead_runs(context.instance, names):
            context.log.warning(f"run {run.run_id} ({run.job_name}): worker died; marked failed")
        settings = chain.settings
        requests = []
        for r in run_health.runs_to_retry(context.instance, names):
            if r.job_name == train_job_name(chain):
                retrain, note = run_health.salvage_train_run(settings, registry_for(settings),
                                                             endpoint_for(settings), chain.name, r)
                context.log.warning(f"train run {r.run_id} died: {note}")
                if not retrain:
                    context.instance.add_run_tags(r.run_id, {run_health.TAG_SALVAGED: note[:200]})
                    continue
            requests.append(dg.RunRequest(run_key=f"retry-{r.run_id}", job_name=r.job_name,
                                          partition_key=r.tags.get("dagster/partition"),
                                          tags=run_health.retry_tags(r)))
        try:
            notes = reconcile(settings, registry_for(settings), endpoint_for(settings), chain.name)
            notes += [f"MLflow runs of finished run {r} were still RUNNING: marked KILLED"
                      for r in run_health.end_orphan_mlflow_runs(context.instance, registry_for(settings), chain.name)]
        except Exception as e:  # noqa: BLE001 - report, try again next tick
            notes = [f"champion repair failed: {type(e).__name__}: {e}"]
        for n in notes:
            context.log.warning(n)
        if not requests:
            return dg.SkipReason("; ".join(notes) or "healthy: no dead run, champion consistent")
        return dg.SensorResult(run_requests=requests)

    return [landing_sensor, retrain_sensor, live_drift_sensor, control_plane_sensor]


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


def build_schedules(chain: Chain) -> list[dg.ScheduleDefinition]:
    @dg.schedule(name=f"{chain.name}_weekly_retrain", job_name=train_job_name(chain),
                 cron_schedule=chain.cfg.retrain.schedule, default_status=dg.DefaultScheduleStatus.RUNNING,
                 description="Retrain even without drift when labelled batches landed since the champion's "
                             "training data; judged by the same gate. Skipped (with the reason) when "
                             "there is nothing new to learn from.")
    def weekly_retrain(context: dg.ScheduleEvaluationContext):
        from ml_platform.resources.registry import registry_for

        settings = chain.settings
        version = batches = None
        try:
            version = champion_version(settings, chain.name)
            batches = registry_for(settings).version_batches(chain.name, version) if version is not None else None
        except Exception as e:  # noqa: BLE001 - unreadable pointer or MLflow down: the window is unknown
            context.log.warning(f"champion's training batches unreadable ({type(e).__name__}: {e})")
        d = scheduled(catalog.read_records(chain.dir), chain.cfg, champion=version, champion_batches=batches,
                      retrain_in_flight=train_in_flight(context.instance, chain),
                      since=newest_candidate_run_start(context.instance, chain))
        context.log.info(d.reason)
        if not d.retrain:
            return dg.SkipReason(d.reason)
        return dg.RunRequest(tags=train_tags(d, None))

    return [weekly_retrain]
