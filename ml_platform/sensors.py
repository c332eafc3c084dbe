"""Sensors: landing-zone arrivals -> ingest runs; validated batches -> retrain policy -> train runs;
new live-sample files -> a live_drift run."""


import json
import time

import dagster as dg

from ml_platform.assets.common import (TAG_ARRIVAL, TAG_BATCH, TAG_REASON, TAG_REGIME_START, TAG_SHA,
                                       TAG_SOURCE, TAG_TRIGGER, Chain)
from ml_platform.core import catalog
from ml_platform.core.landing import LandingFile, scan_landing
from ml_platform.core.live import sample_files
from ml_platform.core.policy import Decision, decide, monitoring_complete
from ml_platform.jobs import ingest_job_name, live_drift_job_name, train_job_name
from ml_platform.serving.store import ModelStore


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


def pending_decisions(chain: Chain, retrain_in_flight: bool = False) -> list[tuple[dict, Decision]]:
    """Apply the retrain policy to every monitored batch that has no decision yet, in arrival
    order, and record each decision on the batch. A retrain decided here is in flight for
    the batches after it, so one tick never queues two retrains (on_drift)."""
    records = catalog.read_records(chain.dir)
    # The serving store's pointer, not an MLflow query: cheap enough for every tick.
    has_champion = ModelStore(chain.settings.serving_dir).current(chain.name) is not None
    out = []
    for i, rec in enumerate(records):
        if rec.get("decision"):
            continue
        if not monitoring_complete(rec):
            # Decide in arrival order: wait for an earlier batch still being ingested, unless
            # its ingest died long ago (then it stays undecided and the rest go on).
            if time.time() - float(rec.get("ingested_at") or 0) < STALE_INGEST_SECONDS:
                break
            continue
        d = decide(rec, records[:i], chain.cfg, has_champion=has_champion, retrain_in_flight=retrain_in_flight)
        decision = {**d.to_dict(), "at": time.time()}
        catalog.update_record(chain.dir, rec["partition"], decision=decision)
        records[i] = {**rec, "decision": decision}
        retrain_in_flight = retrain_in_flight or d.retrain
        out.append((rec, d))
    return out


def train_in_flight(instance: dg.DagsterInstance, chain: Chain) -> bool:
    active = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
              dg.DagsterRunStatus.STARTED]
    return bool(instance.get_run_ids(dg.RunsFilter(job_name=train_job_name(chain), statuses=active), limit=1))


def decision_observation(chain: Chain, rec: dict, d: Decision) -> dg.AssetObservation:
    """The decision as an observation on the batch's drift_report partition (UI: asset page)."""
    drift = rec.get("drift") or {}
    perf = rec.get("performance") or {}
    meta = {"retrain": d.retrain, "trigger": d.trigger, "reason": d.reason,
            "drift_verdict": str(drift.get("verdict", "n/a")),
            "share_drifted": float(drift.get("share_drifted") or 0.0)}
    if perf.get("value") is not None:
        meta.update(performance=float(perf["value"]), performance_drop=float(perf["drop"]),
                    significant_drop=bool(perf["significant"]))
    return dg.AssetObservation(asset_key=chain.key("drift_report"), partition=rec["partition"], metadata=meta)


def build_sensors(chain: Chain) -> list[dg.SensorDefinition]:
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
        decisions = pending_decisions(chain, train_in_flight(context.instance, chain))
        requests = []
        for rec, d in decisions:
            context.log.info(f"{rec['partition']}: {'RETRAIN' if d.retrain else 'no retrain'} "
                             f"({d.trigger}): {d.reason}")
            if d.retrain:
                requests.append(dg.RunRequest(run_key=f"train-{rec['partition']}",
                                              tags=train_tags(d, rec["partition"])))
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

    return [landing_sensor, retrain_sensor, live_drift_sensor]


def build_schedules(chain: Chain) -> list[dg.ScheduleDefinition]:
    d = Decision(True, "schedule", f"weekly retrain ({chain.cfg.retrain.schedule})")
    return [dg.ScheduleDefinition(
        name=f"{chain.name}_weekly_retrain", job_name=train_job_name(chain),
        cron_schedule=chain.cfg.retrain.schedule, default_status=dg.DefaultScheduleStatus.RUNNING,
        tags=train_tags(d, None), description="Retrain even without drift; judged by the same gate.")]
