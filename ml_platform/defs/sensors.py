"""Sensors and the schedule: only their bodies. Landing-zone arrivals -> ingest runs; validated
batches -> retrain policy -> train runs; new live-sample files -> a live_drift run; the control
plane (dead runs, champion repair). Sensors keep their progress in cursors; what they decide is
computed by ``control.decisions``."""

import json
import time

import dagster as dg

from ml_platform import names
from ml_platform.control import asset_source, run_health, staging
from ml_platform.control.arrivals import landing_tick
from ml_platform.control.chain import Chain
from ml_platform.control.champion import champion_version, registry_loss
from ml_platform.control.code_on_disk import code_on_disk
from ml_platform.control.decisions import (
    SENSOR,
    claim_code_retrain,
    code_change_decision,
    decision_observation,
    newest_candidate_run_start,
    pending_decisions,
    train_in_flight,
    train_tags,
)
from ml_platform.control.reconcile import reconcile
from ml_platform.core import catalog
from ml_platform.core.live import sample_files
from ml_platform.core.policy import scheduled
from ml_platform.names import TAG_PARTITION, TAG_SALVAGED, TAG_TRIGGER
from ml_platform.resources.endpoint import endpoint_for
from ml_platform.resources.registry import registry_for
from ml_platform.runtime import console
from ml_platform.settings import ConfigError

CONTROL_PLANE_INTERVAL = 10
CODE_CHANGE_INTERVAL = 15
STAGING_INTERVAL = 5
STAGING_RETRY_SECONDS = 60  # a stage run that died (or judged "pending" in a race) is launched again


def build_sensors(chain: Chain, jobs: list) -> list[dg.SensorDefinition]:
    """``jobs``: the chain's ingest and train jobs (the control-plane sensor re-launches them)."""
    auto = chain.cfg.automation

    @dg.sensor(
        name=names.sensor(chain.name, "landing"),
        job_name=names.ingest_job(chain.name),
        minimum_interval_seconds=auto.landing_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"New files in {chain.settings.landing_dir(chain.name)} -> an ingest run for one file, runs of "
        f"up to {chain.cfg.landing.max_files_per_run} files for a backlog (one partition per file).",
    )
    def landing_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        tick = landing_tick(chain, context.instance, context.cursor)
        for line in tick.lines:
            context.log.info(line)
        cursor = json.dumps(tick.cursor.to_dict())
        if not tick.requests:
            return dg.SensorResult(skip_reason=tick.skip_reason, cursor=cursor)
        return dg.SensorResult(
            run_requests=tick.requests,
            cursor=cursor,
            dynamic_partitions_requests=[chain.partitions.build_add_request(tick.new_keys)] if tick.new_keys else [],
        )

    @dg.sensor(
        name=names.sensor(chain.name, "source"),
        job_name=names.ingest_job(chain.name),
        minimum_interval_seconds=auto.landing_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"New materializations of {chain.cfg.source.asset if chain.cfg.source else '-'} -> one "
        "ingest run each (a partition of a partitioned asset is one batch).",
    )
    def source_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        after = int(context.cursor or 0)
        events = asset_source.new_events(context.instance, chain, after)
        if not events:
            return dg.SkipReason(f"no new materialization of {chain.cfg.source.asset}")
        keys = [e.batch_key(chain) for e in events]
        context.log.info(f"{len(events)} new batch(es) of {chain.cfg.source.asset}: {', '.join(keys[:10])}")
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(run_key=f"ingest-{k}", partition_key=k, tags=e.tags(chain)) for k, e in zip(keys, events)
            ],
            cursor=str(max(e.storage_id for e in events)),
            dynamic_partitions_requests=[chain.partitions.build_add_request(keys)],
        )

    @dg.sensor(
        name=names.sensor(chain.name, "retrain"),
        job_name=names.train_job(chain.name),
        minimum_interval_seconds=auto.retrain_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Applies the {chain.name} retrain policy ({chain.cfg.retrain.policy}) to each "
        "validated batch; every decision is written on the batch and in the run tags.",
    )
    def retrain_sensor(context: dg.SensorEvaluationContext):
        # Records only change when a run writes one: skip re-reading them all on an idle tick
        # (but look again every minute, for batches waiting behind a dead ingest).
        stamp, now = catalog.records_stamp(chain.dir), time.time()
        last = json.loads(context.cursor) if context.cursor else {}
        if last.get("stamp") == stamp and now - last.get("at", 0) < 60:
            return dg.SkipReason("no batch record changed")
        lost = registry_loss(chain.settings, registry_for(chain.settings), chain.name)
        if lost:  # no retrain over a lost registry (a fresh "v1"); decided once it is back
            context.log.error(lost)
            return dg.SkipReason(f"refused: {lost}")
        context.update_cursor(json.dumps({"stamp": stamp, "at": now}))
        decisions = pending_decisions(chain, context.instance, train_in_flight(context.instance, chain))
        requests = []
        for rec, d in decisions:
            context.log.info(f"{rec.partition}: {'RETRAIN' if d.retrain else 'no retrain'} ({d.trigger}): {d.reason}")
            if d.retrain:
                requests.append(dg.RunRequest(run_key=f"train-{rec.partition}", tags=train_tags(d, rec.partition)))
        if not decisions:
            return dg.SkipReason("no newly monitored batch")
        return dg.SensorResult(
            run_requests=requests, asset_events=[decision_observation(chain, rec, d) for rec, d in decisions]
        )

    @dg.sensor(
        name=names.sensor(chain.name, "live_drift"),
        job_name=names.live_drift_job(chain.name),
        minimum_interval_seconds=auto.live_drift_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"New files in the {chain.name} endpoint's live sample -> a live_drift run "
        f"(at most every {auto.live_drift_interval_seconds} s).",
    )
    def live_drift_sensor(context: dg.SensorEvaluationContext):
        files = sample_files(chain.settings.live_samples_dir / chain.name)
        if not files:
            return dg.SkipReason("no live sample yet (is the endpoint serving traffic?)")
        newest = files[0].name
        if newest == context.cursor:
            return dg.SkipReason(f"no live sample since {newest}")
        context.update_cursor(newest)
        return dg.RunRequest(run_key=f"live-drift-{newest}", tags={TAG_TRIGGER: "live sample"})

    @dg.sensor(
        name=names.sensor(chain.name, "control_plane"),
        jobs=jobs,
        minimum_interval_seconds=CONTROL_PLANE_INTERVAL,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Repairs after a crash: fails runs whose worker died and re-launches them, "
        "finishes an interrupted champion move, and makes the MLflow alias and the "
        "serving store agree with the champion pointer.",
    )
    def control_plane_sensor(context: dg.SensorEvaluationContext):
        job_names = [j.name for j in jobs]
        for run in run_health.fail_dead_runs(context.instance, job_names):
            context.log.warning(f"run {run.run_id} ({run.job_name}): worker died; marked failed")
        settings = chain.settings
        requests = []
        for r in run_health.runs_to_retry(context.instance, job_names):
            if r.job_name == names.train_job(chain.name):
                retrain, note = run_health.salvage_train_run(
                    settings, registry_for(settings), endpoint_for(settings), chain.name, r
                )
                context.log.warning(f"train run {r.run_id} died: {note}")
                if not retrain:
                    context.instance.add_run_tags(r.run_id, {TAG_SALVAGED: note[:200]})
                    continue
            requests.append(
                dg.RunRequest(
                    run_key=f"retry-{r.run_id}",
                    job_name=r.job_name,
                    partition_key=r.tags.get(TAG_PARTITION),
                    tags=run_health.retry_tags(r),
                    run_config=console.job_run_config(r.run_config),  # a run from before it had none
                )
            )
        try:
            lost = registry_loss(settings, registry_for(settings), chain.name)  # a repair would create an empty one
            if lost:
                notes = [f"champion repair refused: {lost}"]
            else:
                notes = reconcile(settings, registry_for(settings), endpoint_for(settings), chain.name)
                notes += [
                    f"MLflow runs of finished run {r} were still RUNNING: marked KILLED"
                    for r in run_health.end_orphan_mlflow_runs(context.instance, registry_for(settings), chain.name)
                ]
        except Exception as e:  # noqa: BLE001 - report, try again next tick
            notes = [f"champion repair failed: {type(e).__name__}: {e}"]
        for n in notes:
            context.log.warning(n)
        if not requests:
            return dg.SkipReason("; ".join(notes) or "healthy: no dead run, champion consistent")
        return dg.SensorResult(run_requests=requests)

    @dg.sensor(
        name=names.sensor(chain.name, "code_change"),
        job_name=names.train_job(chain.name),
        minimum_interval_seconds=CODE_CHANGE_INTERVAL,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Retrains {chain.name} (trigger code) when the code version of its files on disk (read each "
        "tick: config, estimator params, transform / pipeline / check modules) differs from the champion's, or "
        "with no champion yet from the newest candidate's (retrain.on_code_change). No reload of the code "
        "location needed.",
    )
    def code_change_sensor(context: dg.SensorEvaluationContext):
        try:
            now = code_on_disk(chain)  # not the code this server imported at start: the files now
        except (ConfigError, OSError, UnicodeError) as e:  # code_on_disk phrases these; a stray one too
            return dg.SkipReason(f"the model's files do not load (compared once they do): {e}")
        if now.reload_needed:
            return dg.SkipReason(f"{now.reload_needed}: reload the code location (UI: Reload definitions) to train it")
        champion = champion_version(chain.settings, chain.name)
        key = f"{champion}:{now.version}"
        against = "no champion" if champion is None else f"champion v{champion}"
        if context.cursor == key:
            return dg.SkipReason(f"code version {now.version} already compared with {against}")
        if train_in_flight(context.instance, chain):
            return dg.SkipReason("a train run is in flight: its candidate carries the code it imported")
        lost = registry_loss(chain.settings, registry_for(chain.settings), chain.name)
        if lost:
            return dg.SkipReason(f"refused: {lost}")
        d = code_change_decision(chain, registry_for(chain.settings), now.parts, now.version)
        if d is not None and not claim_code_retrain(chain, context.instance, f"{now.version}-v{champion}", SENSOR):
            return dg.SkipReason("another process took this code-change retrain")  # cursor unchanged: look again
        context.update_cursor(key)
        if d is None:
            return dg.SkipReason(f"no code retrain (code version {now.version}, {against})")
        context.log.info(d.reason)
        return dg.RunRequest(run_key=f"code-{now.version}-v{champion}", tags=train_tags(d, None))

    arrivals = landing_sensor if chain.cfg.source is None else source_sensor
    out = [arrivals, retrain_sensor, live_drift_sensor, control_plane_sensor, code_change_sensor]
    if chain.cfg.deploy.strategy == "direct":
        return out

    @dg.sensor(
        name=names.sensor(chain.name, "staging"),
        job_name=names.stage_job(chain.name),
        minimum_interval_seconds=STAGING_INTERVAL,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Launches {names.stage_job(chain.name)} (live_shadow) when the staged candidate has its "
        f"evidence ({chain.cfg.deploy.strategy}.min_requests), failed on live traffic, or ran out of time.",
    )
    def staging_sensor(context: dg.SensorEvaluationContext):
        why = staging.ready(chain.settings, chain.name)
        if why is None:
            p = staging.progress(chain.settings, chain.name)
            return dg.SkipReason(p.line() if p is not None else "no candidate staged")
        last = json.loads(context.cursor) if context.cursor else {}
        rec = staging.staged(chain.settings, chain.name) or {}
        key = f"{rec.get('version')}@{rec.get('started_at')}"
        if last.get("key") == key and time.time() - last.get("at", 0) < STAGING_RETRY_SECONDS:
            return dg.SkipReason(f"{why}: a stage run was launched for it {int(time.time() - last['at'])} s ago")
        context.update_cursor(json.dumps({"key": key, "at": time.time()}))
        context.log.info(f"judging staged v{rec.get('version')}: {why}")
        return dg.RunRequest(tags={TAG_TRIGGER: f"staging: {why}"[:200]})

    return [*out, staging_sensor]


def build_schedules(chain: Chain) -> list[dg.ScheduleDefinition]:
    @dg.schedule(
        name=names.weekly_retrain_schedule(chain.name),
        job_name=names.train_job(chain.name),
        cron_schedule=chain.cfg.retrain.schedule,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Retrain even without drift when labelled batches landed since the champion's "
        "training data; judged by the same gate. Skipped (with the reason) when "
        "there is nothing new to learn from.",
    )
    def weekly_retrain(context: dg.ScheduleEvaluationContext):
        settings = chain.settings
        version = batches = None
        try:
            version = champion_version(settings, chain.name)
            batches = registry_for(settings).version_batches(chain.name, version) if version is not None else None
        except Exception as e:  # noqa: BLE001 - unreadable pointer or MLflow down: the window is unknown
            context.log.warning(f"champion's training batches unreadable ({type(e).__name__}: {e})")
        d = scheduled(
            catalog.read_records(chain.dir),
            chain.cfg,
            champion=version,
            champion_batches=batches,
            retrain_in_flight=train_in_flight(context.instance, chain),
            since=newest_candidate_run_start(context.instance, chain),
        )
        context.log.info(d.reason)
        if not d.retrain:
            return dg.SkipReason(d.reason)
        return dg.RunRequest(tags=train_tags(d, None))

    return [weekly_retrain]
