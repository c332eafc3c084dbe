"""Runs whose worker died (kill -9, OOM, a power cut) and their retries.

Dagster's default run launcher cannot tell a dead run worker from a busy one, so a killed
run stays STARTED forever (and blocks its model's training pool). Every event a run writes
carries its process id; a run whose RUN_START process is gone (or was replaced by another
process under the same PID) is marked failed here and tagged ``ml_platform/worker_died``.
Its retry (same job, partition and tags, plus ``ml_platform/retry_of``) is launched by the
control-plane sensor under `ml-platform up`, or by the next `ml-platform run`.
"""

from __future__ import annotations

import socket
import time
from datetime import UTC, datetime

import dagster as dg

from ml_platform.control.promotion import PromotionError, move_champion
from ml_platform.control.servable import checks_of
from ml_platform.names import (
    TAG_ATTEMPT,
    TAG_PARTITION,
    TAG_PRIORITY,
    TAG_RANGE_END,
    TAG_RANGE_START,
    TAG_RETRY_OF,
    TAG_SALVAGED,
    TAG_TRIGGER,
    TAG_WORKER,
    TAG_WORKER_DIED,
    TAG_WORKER_HOST,
    VERSION_DAGSTER_RUN,
    gate_passed,
)
from ml_platform.runtime.processes import pid_alive, worker_pid

MAX_ATTEMPTS = 3
ACTIVE = [dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.CANCELING]


def fail_dead_runs(instance: dg.DagsterInstance, job_names: list[str]) -> list[dg.DagsterRun]:
    """Mark failed every active run of these jobs whose worker process is gone (this host)."""
    dead = []
    for rec in instance.get_run_records(dg.RunsFilter(job_name=None, statuses=ACTIVE)):
        run = rec.dagster_run
        if run.job_name not in job_names:
            continue
        host = run.tags.get(TAG_WORKER_HOST)
        if host is not None and host != socket.gethostname():
            continue  # a Celery worker on another host: its PID means nothing here
        pid = worker_pid(instance, run.run_id)
        if pid is None or pid_alive(pid, rec.start_time):
            continue
        # dagster/max_retries 0: the run-retry daemon must not re-launch it as well (a second
        # copy of the same batch); ml_platform's retry (runs_to_retry) is the one.
        instance.add_run_tags(run.run_id, {TAG_WORKER_DIED: str(pid), "dagster/max_retries": "0"})
        instance.report_run_failed(run, message=f"run worker (pid {pid}) died; ml_platform retries the run")
        dead.append(run)
    return dead


def _same_batches(run: dg.DagsterRun) -> dict | None:
    """The tags that say which batches a run took: its partition, or its range (multi-file)."""
    for key in (TAG_PARTITION, TAG_RANGE_START):
        if key in run.tags:
            return {key: run.tags[key]}
    return None


def runs_to_retry(
    instance: dg.DagsterInstance, job_names: list[str], within_seconds: float = 86_400
) -> list[dg.DagsterRun]:
    """Failed runs whose worker died, not retried yet, under the attempt limit, and not made
    moot by a later successful run of the same job (and partition)."""
    since = time.time() - within_seconds
    died = instance.get_run_records(dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE], created_after=_dt(since)))
    out = []
    for rec in died:
        run = rec.dagster_run
        if run.job_name not in job_names or TAG_WORKER_DIED not in run.tags or TAG_SALVAGED in run.tags:
            continue
        if int(run.tags.get(TAG_ATTEMPT, "1")) >= MAX_ATTEMPTS:
            continue
        if instance.get_run_ids(dg.RunsFilter(tags={TAG_RETRY_OF: run.run_id}), limit=1):
            continue
        later = dg.RunsFilter(
            job_name=run.job_name,
            statuses=[dg.DagsterRunStatus.SUCCESS],
            created_after=rec.create_timestamp,
            tags=_same_batches(run),
        )
        if instance.get_run_ids(later, limit=1):
            continue
        out.append(run)
    return out


def _dt(ts: float):
    return datetime.fromtimestamp(ts, tz=UTC)


def retry_tags(run: dg.DagsterRun) -> dict:
    """The dead run's own tags (trigger, reason, batch, regime...) plus the retry lineage."""
    tags = {
        k: v
        for k, v in run.tags.items()
        if (k in (TAG_RANGE_START, TAG_RANGE_END, TAG_PRIORITY) or not k.startswith(("dagster/", "dagster-celery/")))
        and not k.startswith(TAG_WORKER)
        and k not in (TAG_WORKER_DIED, TAG_SALVAGED)
    }
    tags[TAG_RETRY_OF] = run.run_id
    tags[TAG_ATTEMPT] = str(int(run.tags.get(TAG_ATTEMPT, "1")) + 1)
    return tags


def end_orphan_mlflow_runs(instance: dg.DagsterInstance, registry, model: str) -> list[str]:
    """MLflow runs left RUNNING by a Dagster run that has finished (its worker was killed,
    whoever noticed: Dagster's run monitoring or this module): marked KILLED."""
    ended = []
    for dagster_run_id in set(registry.running_runs(model).values()):
        run = instance.get_run_by_id(dagster_run_id)
        if run is None or run.is_finished:
            registry.end_runs_of(model, dagster_run_id)
            ended.append(dagster_run_id)
    return ended


def salvage_train_run(settings, registry, endpoint, model: str, run: dg.DagsterRun) -> tuple[bool, str]:
    """What a dead train run left: (retrain needed?, what was done). A candidate it registered
    and the gate fully judged is not trained again: a passing one is deployed now (through
    the same gate check), a failing one stays the run's outcome."""
    registry.end_runs_of(model, run.run_id)  # its MLflow runs stay RUNNING otherwise
    mine = [v for v in registry.versions(model) if v.tags.get(VERSION_DAGSTER_RUN) == run.run_id]
    if not mine:
        return True, "no candidate was registered"
    v = mine[-1]
    verdict = gate_passed(v.tags, checks_of(settings, model))
    if verdict is None:
        return True, f"v{v.version} was registered but the gate did not finish"
    if verdict is False:
        return False, f"v{v.version} was rejected by the gate before the worker died"
    if settings.models[model].deploy.approval == "required":  # a person deploys it, not the repair
        return False, f"v{v.version} passed the gate; it awaits approval (deploy.approval: required)"
    try:
        p = move_champion(
            settings,
            registry,
            endpoint,
            model,
            int(v.version),
            actor=f"repair of dagster run {run.run_id}",
            trigger=run.tags.get(TAG_TRIGGER, ""),
            reason="passed every blocking gate check (its run died before deploying)",
        )
        return False, f"v{v.version} passed the gate; deployed now (endpoint: {p.endpoint})"
    except PromotionError as e:
        return False, f"v{v.version} passed the gate but was not deployed: {e}"
