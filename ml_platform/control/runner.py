"""`ml-platform run`: every pending landing file through the same jobs and the same retrain
policy the sensors use, in arrival order, recorded in the instance the UI shows."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import dagster as dg

from ml_platform import names
from ml_platform.control import asset_source, ingest_claims, run_health, staging
from ml_platform.control.chain import Chain
from ml_platform.control.champion import champion_version, registry_file_gone, registry_loss
from ml_platform.control.decisions import (
    claim_code_retrain,
    code_change_decision,
    decision_observation,
    ingest_failure,
    ingest_tags,
    pending_decisions,
    this_run,
    train_in_flight,
    train_tags,
)
from ml_platform.control.reconcile import reconcile
from ml_platform.core import catalog, code_version, files, gate, stage_files
from ml_platform.core.landing import scan_landing
from ml_platform.core.policy import Decision
from ml_platform.names import TAG_CHECK_ONLY, TAG_LAUNCHED_BY, TAG_PARTITION, TAG_SALVAGED, TAG_TRIGGER
from ml_platform.resources.endpoint import endpoint_for
from ml_platform.resources.registry import registry_for
from ml_platform.runtime import console, faults
from ml_platform.settings import Settings

TRAIN_POOL_WAIT_SECONDS = 1800
# An ingest run's Dagster console log stays quiet: a bad file is an expected outcome, printed as
# one line naming the file and why (its events, tracebacks included, are in the instance / UI).
QUIET = {"loggers": {names.CONSOLE_LOGGER: {"config": {"log_level": "CRITICAL"}}}}


@dataclass
class TrainOutcome:
    trigger: str
    reason: str
    version: int | None = None
    metrics: dict = field(default_factory=dict)
    gate: list[tuple[str, bool, str]] = field(default_factory=list)
    deployed: bool = False
    awaiting_approval: bool = False  # passed the gate; deploy.approval: required holds it for a person
    staged: str = ""  # deploy.strategy: in shadow or canary now ("v5 in shadow behind v4: 0/500 requests")
    error: str | None = None


@dataclass
class BatchOutcome:
    partition: str
    file: str
    status: str
    rows: int = 0
    quarantined_rows: int = 0
    reason: str | None = None
    decision: str = ""
    train: TrainOutcome | None = None
    kind: str = "batch"  # or "code": a code-change retrain, not a batch; "refused": the registry was lost


def stop_on_storage_fault(result, settings: Settings | None = None) -> None:
    """A step that failed writing state (disk full, a file-size limit...) or on a database another
    process holds locked stops the command: raised again as ``StateWriteError`` so the CLI prints
    its one line and exits 1. Not when the registry's file was deleted under the run (SQLite then
    says "readonly database"): the train outcome names the loss (``_lost_meanwhile``)."""
    for ev in result.all_events:
        if not ev.is_step_failure or not ev.event_specific_data:
            continue
        err = ev.event_specific_data.error
        while err is not None:
            line = (err.message or "").strip()
            if err.cls_name == "StateWriteError":
                raise files.StateWriteError.reported(
                    line.split(": ", 1)[-1] if line.startswith("ml_platform") else line
                )
            stack = list(err.stack or [])
            fault = files.storage_fault(
                RuntimeError(line),
                lambda _e, stack=stack: files.sqlite_named(
                    stack, settings and settings.tracking_uri, settings and settings.dagster_home
                ),
            )
            if fault and not (settings is not None and registry_file_gone(settings)):
                raise files.StateWriteError.reported(f"{fault} (in step {ev.step_key})")
            err = err.cause


def _lost_meanwhile(chain: Chain) -> str | None:
    """After a failed train run: the registry lost under it (its file deleted or replaced while the
    run used it), said as ``registry_loss`` says it, instead of the errors MLflow gave each step."""
    try:
        return registry_loss(chain.settings, registry_for(chain.settings), chain.name)
    except Exception:  # noqa: BLE001 - the registry cannot even be read: the run's own error stands
        return None


def _train_outcome(result, chain: Chain, trigger: str, reason: str) -> TrainOutcome:
    out = TrainOutcome(trigger, reason)
    for ev in result.all_events:
        if ev.is_step_failure and out.error is None:
            err = ev.event_specific_data.error if ev.event_specific_data else None
            while err is not None and err.cause is not None:  # the user-code error, not the wrapper
                err = err.cause
            out.error = err.message.strip()[:500] if err else ev.message
    if not result.success and (lost := _lost_meanwhile(chain)):
        out.error = f"the MLflow registry was lost during the run: {lost}"
    try:
        cand = result.output_for_node(names.step(chain.name, "candidate_model"))
    except Exception:  # noqa: BLE001 - the run failed before a candidate existed
        if out.error is None:  # no step failed: the run itself did (storage, a lock, a dead worker)
            ends = [
                ev.message for ev in result.all_events if ev.event_type_value in ("PIPELINE_FAILURE", "RUN_FAILURE")
            ]
            out.error = (ends[-1] if ends and ends[-1] else None) or (
                f"run {result.run_id[:8]} ended without building a candidate (its events are in the UI)"
            )
        return out
    out.version, out.metrics = cand.version, cand.metrics
    for ev in result.get_asset_check_evaluations():
        out.gate.append(
            (ev.check_name, ev.passed, str(ev.metadata.get("reason").value if "reason" in ev.metadata else ""))
        )
    out.deployed = champion_version(chain.settings, chain.name) == out.version
    passed = bool(out.gate) and all(p for _, p, _ in out.gate)
    p = staging.progress(chain.settings, chain.name)
    out.staged = f"{p.line()}: {stage_files.who_answers(p.mode)}" if p is not None and p.version == out.version else ""
    out.awaiting_approval = passed and not out.deployed and not out.staged and chain.cfg.deploy.approval == "required"
    if out.deployed or not passed or out.awaiting_approval or out.staged:
        out.error = None  # a gate rejection is an outcome, reported by its checks
    return out


def repair(settings: Settings, defs, instance, name: str, echo=print) -> None:
    """What a crash may have left: runs whose worker died (failed, then re-run here), an
    interrupted champion move, a mirror out of step with the champion pointer."""

    jobs = [names.ingest_job(name), names.train_job(name)]
    for run in run_health.fail_dead_runs(instance, jobs):
        echo(f"[{name}] run {run.run_id[:8]} ({run.job_name}) was left running by a dead process: marked failed")
    try:
        notes = reconcile(settings, registry_for(settings), endpoint_for(settings), name)
    except Exception as e:  # noqa: BLE001 - report it; the batches still go through
        notes = [f"could not check the champion against the registry: {type(e).__name__}: {e}"]
    for note in notes:
        echo(f"[{name}] repaired: {note}")
    for run in run_health.runs_to_retry(instance, jobs):
        if run.job_name == names.train_job(name):
            retrain, note = run_health.salvage_train_run(
                settings, registry_for(settings), endpoint_for(settings), name, run
            )
            instance.add_run_tags(run.run_id, {TAG_SALVAGED: note[:200]})
            echo(f"[{name}] train run {run.run_id[:8]} died: {note}")
            if not retrain:
                continue
        job, logs = defs.resolve_job_def(run.job_name), {}
        if run.job_name == names.train_job(name):  # a gate refusal is printed as its verdicts
            job, logs = console.quiet_refusals(job), console.run_config()
        echo(
            f"[{name}] re-running {run.job_name} {run.tags.get(TAG_PARTITION, '')} "
            f"(its worker died in run {run.run_id[:8]})"
        )
        res = job.execute_in_process(
            instance=instance,
            partition_key=run.tags.get(TAG_PARTITION),
            tags=run_health.retry_tags(run),
            run_config={**(run.run_config or {}), **logs} or None,
            raise_on_error=False,
        )
        stop_on_storage_fault(res, settings)
        if run.job_name == names.train_job(name):
            chain = Chain(name, settings.models[name], settings)
            _echo_train(name, _train_outcome(res, chain, run.tags.get(TAG_TRIGGER, "retry"), ""), echo)


def _wait_for_train_pool(instance, chain: Chain, echo) -> None:
    """`run` executes in-process, outside Dagster's run queue: wait while a train run of this
    model (the daemon's, another `run`'s, one launched in the UI) is queued or running, so
    training stays serialized."""
    deadline = time.time() + TRAIN_POOL_WAIT_SECONDS
    said = False
    while train_in_flight(instance, chain) and time.time() < deadline:
        run_health.fail_dead_runs(instance, [names.train_job(chain.name)])
        if not said:
            echo(f"[{chain.name}]   waiting for {_active_train_run(instance, chain)} to finish")
            said = True
        time.sleep(1)


def _active_train_run(instance, chain: Chain) -> str:
    """Which train run is in flight, and who launched it, for people."""
    active = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]
    runs = instance.get_runs(dg.RunsFilter(job_name=names.train_job(chain.name), statuses=active), limit=1)
    if not runs:
        return "a train run"
    t = runs[0].tags
    who = (
        f"the daemon's {t['dagster/sensor_name']}"
        if "dagster/sensor_name" in t
        else f"the daemon's {t['dagster/schedule_name']}"
        if "dagster/schedule_name" in t
        else f"`ml-platform {t[TAG_LAUNCHED_BY]}`"
        if t.get(TAG_LAUNCHED_BY, "").startswith(("run ", "train "))
        else "the UI or another process"
    )
    return f"train run {runs[0].run_id[:8]} (launched by {who})"


def _pending_files(settings: Settings, chain: Chain, name: str, echo=print):
    """Pending landing files, once every file has been unchanged for settle_seconds (a file
    still being written is waited for, not ingested half)."""
    settle = chain.cfg.automation.settle_seconds
    for _ in range(30):
        known = catalog.known_sha256(chain.dir)
        skipped: list = []
        everything = scan_landing(settings.landing_dir(name), settle_seconds=0, known_sha256=known, skipped=skipped)
        settled = scan_landing(settings.landing_dir(name), settle_seconds=settle, known_sha256=known)
        if len(settled) == len(everything):
            break
        time.sleep(min(settle, 1.0))
    for _, why in skipped:
        echo(f"[{name}] skipped {why}")
    return settled


def run_pending(
    settings: Settings, defs, instance, models: list[str] | None = None, echo=print
) -> dict[str, list[BatchOutcome]]:
    summary: dict[str, list[BatchOutcome]] = {}
    console.one_line_store_errors()
    for name in models or list(settings.models):
        chain = Chain(name, settings.models[name], settings)
        outcomes = summary.setdefault(name, [])
        lost = registry_loss(settings, registry_for(settings), name)  # before anything touches MLflow
        if lost:  # never an empty registry created under it, nor a crash further on
            echo(f"[{name}] run refused: {lost}")
            outcomes.append(BatchOutcome("", "", "refused", reason=lost, kind="refused"))
            continue
        repair(settings, defs, instance, name, echo)
        ingest_job = defs.resolve_job_def(names.ingest_job(name))
        train_job = _train_job(defs, name)
        arrivals = _arrivals(settings, chain, instance, echo)
        me, said_taken = this_run(), set()
        for i, (key, label, tags, sha) in enumerate(arrivals, 1):
            faults.barrier("run:ingest")
            res = ingest_file(chain, instance, ingest_job, (key, label, tags, sha), f"({i}/{len(arrivals)})", echo)
            if res is None:
                continue
            if not res.success and catalog.read_record(chain.dir, key) is None:  # failed before its record
                why = ingest_failure(instance, chain, key) or f"run {res.run_id[:8]} failed (its events are in the UI)"
                echo(f"[{name}]   {label}: failed - {why}")
                outcomes.append(BatchOutcome(key, label, "failed", reason=why, decision="no retrain: ingest failed"))
            taken: list = []
            in_flight = train_in_flight(instance, chain)  # the daemon's or another `run`'s, as the sensor asks
            for rec, d in pending_decisions(chain, instance, in_flight, by=me, taken=taken):
                instance.report_runless_asset_event(decision_observation(chain, rec, d))
                bo = BatchOutcome(
                    rec.partition,
                    rec.file or "",
                    rec.status or "?",
                    rec.row_count,
                    rec.quarantined_rows or 0,
                    rec.reason,
                    f"{'retrain' if d.retrain else 'no retrain'} ({d.trigger}): {d.reason}",
                )
                echo(  # named: a backlog's verdicts may come after a later file's ingest line
                    f"[{name}]   {os.path.basename(bo.file) or bo.partition}: {bo.status}: "
                    f"{bo.rows} valid rows, {bo.quarantined_rows} quarantined"
                    + (f" - {bo.reason}" if bo.reason else "")
                )
                echo(f"[{name}]   decision: {bo.decision}")
                lost = registry_loss(settings, registry_for(settings), name) if d.retrain else None
                if lost:  # never a fresh "v1" over a lost registry
                    bo.train = TrainOutcome(d.trigger, d.reason, error=f"refused: {lost}")
                    _echo_train(name, bo.train, echo)
                elif d.retrain:
                    _wait_for_train_pool(instance, chain, echo)
                    res = train_job.execute_in_process(
                        instance=instance,
                        raise_on_error=False,
                        run_config=console.run_config(),
                        tags={**train_tags(d, rec.partition), TAG_LAUNCHED_BY: me},
                    )
                    stop_on_storage_fault(res, settings)
                    bo.train = _train_outcome(res, chain, d.trigger, d.reason)
                    _echo_train(name, bo.train, echo)
                outcomes.append(bo)
            for rec, d in taken:
                if rec.partition not in said_taken:
                    said_taken.add(rec.partition)
                    echo(f"[{name}]   {rec.partition}: retrain ({d.trigger}) already decided by {d.claimed_by}")
        code = code_retrain(settings, defs, instance, chain, echo)
        if code is not None:
            outcomes.append(code)
        judge_staged(settings, defs, instance, name, echo)
    return summary


def ingest_file(chain: Chain, instance, ingest_job, arrival: tuple, nth: str, echo=print):
    """One pending batch through the ingest job, in-process; None when another process has it.
    One ingest per batch: across `run`s the check and the ingest are under one lock; against
    `up`'s landing sensor, the file is claimed first (``control/ingest_claims``)."""
    key, label, tags, sha = arrival
    name = chain.name
    with files.file_lock(chain.dir / names.INGEST_LOCK, what="the ingest lock"):
        why = ingest_claims.claim(chain, sha, key, this_run()) if sha is not None else None
        if why is not None:
            echo(f"[{name}] {nth} {label}: {why}")
            return None
        try:
            instance.add_dynamic_partitions(names.partitions(name), [key])
            echo(f"[{name}] {nth} ingest {label} -> partition {key}")
            res = ingest_job.execute_in_process(
                instance=instance, partition_key=key, tags=tags, raise_on_error=False, run_config=QUIET
            )
        finally:
            if sha is not None:
                ingest_claims.release(chain, sha)
        stop_on_storage_fault(res, chain.settings)
    rec = catalog.read_record(chain.dir, key)
    if res.success and rec is not None and rec.ingest_run not in (None, res.run_id):
        echo(f"[{name}]   {label}: already ingested by run {rec.ingest_run[:8]}: nothing copied again")
    return res


def judge_staged(settings: Settings, defs, instance, name: str, echo=print) -> str | None:
    """The staged candidate's live comparison, run now when the staging sensor would launch it
    (evidence in, failed live, or out of time); otherwise its progress is printed."""
    if settings.models[name].deploy.strategy == "direct" and staging.staged(settings, name) is None:
        return None
    why = staging.ready(settings, name)
    if why is None:
        p = staging.progress(settings, name)
        if p is not None:
            echo(f"[{name}] {p.line()}")
        return None
    version = (staging.staged(settings, name) or {}).get("version")
    echo(f"[{name}] judging staged v{version} on live traffic ({why})")
    defs.resolve_job_def(names.stage_job(name)).execute_in_process(
        instance=instance, raise_on_error=False, tags={TAG_TRIGGER: f"staging: {why}"[:200]}
    )
    tags = registry_for(settings).version(name, version).tags
    state = tags.get(names.gate_tag(names.LIVE_CHECK), "pending")
    wait = stage_files.labels_wait(staging.evidence_dir(settings, name), staging.staged(settings, name) or {})
    said = stage_files.waiting_line(wait) if state == "pending" and wait else ""
    echo(f"[{name}]   {names.LIVE_CHECK} {state}: {tags.get(names.gate_reason_tag(names.LIVE_CHECK), '') or said}")
    champion = champion_version(settings, name)
    echo(f"[{name}]   champion: v{champion}" + (" (promoted)" if champion == version else ""))
    if state == "passed" and champion != version and staging.approval_after_live(settings, name):
        echo(f"[{name}]   v{version} awaits approval: ml-platform approve --model {name} --version {version}")
    return state


def _arrivals(settings: Settings, chain: Chain, instance, echo) -> list[tuple[str, str, dict, str | None]]:
    """(batch key, label, ingest tags, content hash or None) of every pending batch: settled
    landing files, or new materializations of the upstream asset (``source``)."""
    if chain.cfg.source is not None:
        events = asset_source.new_events(instance, chain)
        echo(f"[{chain.name}] {len(events)} new batch(es) of asset {chain.cfg.source.asset}")
        return [(e.batch_key(chain), e.batch_key(chain), e.tags(chain), None) for e in events]
    files = _pending_files(settings, chain, chain.name, echo)
    echo(f"[{chain.name}] {len(files)} pending file(s) in {settings.landing_dir(chain.name)}")
    return [(f.partition_key, f.path.name, ingest_tags(f), f.sha256) for f in files]


def code_retrain(settings: Settings, defs, instance, chain: Chain, echo=print) -> BatchOutcome | None:
    """The code-change retrain the sensor would request (``decisions.code_change_decision``),
    run now: a changed estimator, transform or gate config retrains without new data."""
    if registry_loss(settings, registry_for(settings), chain.name):  # lost during this run: said per batch
        return None
    parts = code_version.manifest(chain.cfg)
    d = code_change_decision(chain, registry_for(settings), parts, code_version.code_version(parts))
    if d is None:
        return None
    _wait_for_train_pool(instance, chain, echo)
    # decided again after the wait: the daemon's code-change run may have trained this code meanwhile
    d = code_change_decision(chain, registry_for(settings), parts, code_version.code_version(parts))
    key = f"{code_version.code_version(parts)}-v{champion_version(settings, chain.name)}"
    if d is None or not claim_code_retrain(chain, instance, key, this_run()):
        return None
    echo(f"[{chain.name}] decision: retrain ({d.trigger}): {d.reason}")
    res = _train_job(defs, chain.name).execute_in_process(
        instance=instance,
        raise_on_error=False,
        run_config=console.run_config(),
        tags={**train_tags(d, None), TAG_LAUNCHED_BY: this_run()},
    )
    stop_on_storage_fault(res, settings)
    bo = BatchOutcome("", "", "code", decision=f"retrain ({d.trigger}): {d.reason}", kind="code")
    bo.train = _train_outcome(res, chain, d.trigger, d.reason)
    _echo_train(chain.name, bo.train, echo)
    return bo


def check(settings: Settings, defs, name: str, echo=print) -> TrainOutcome:
    """`ml-platform check`: train the loaded code on the current data and run the offline gate
    (``names.offline_checks``) against the serving champion, in a throwaway Dagster instance,
    deploying nothing. Not ``live_shadow`` (deploy.strategy shadow / canary): it needs live traffic
    after a deploy, and would judge (and conclude) the model's real staged candidate. The
    candidate is registered in MLflow tagged as a check (every path to the champion refuses it),
    so the evaluation stays on record."""
    chain = Chain(name, settings.models[name], settings)
    d = Decision(True, "check", "ml-platform check: the working tree's code against the champion")
    cand = chain.key("candidate_model")
    job = defs.resolve_implicit_global_asset_job_def().get_subset(  # an asset_selection alone adds every check
        asset_selection={chain.key("training_set"), cand},
        asset_check_selection={dg.AssetCheckKey(cand, c) for c in names.offline_checks(chain.cfg)},
    )
    with dg.DagsterInstance.ephemeral() as instance:
        res = console.quiet_refusals(job).execute_in_process(
            instance=instance,
            run_config=console.run_config(),
            tags={**train_tags(d, None), TAG_CHECK_ONLY: "true"},
            raise_on_error=False,
        )
        out = _train_outcome(res, chain, d.trigger, d.reason)
    _echo_train(name, out, echo, deploys=False)
    if chain.cfg.deploy.strategy != "direct" and out.version is not None:
        echo(
            f"[{name}]     {names.LIVE_CHECK}: not judged here; judged on live traffic once a deployed "
            f"candidate is staged (deploy.strategy: {chain.cfg.deploy.strategy})"
        )
    return out


def train_now(settings: Settings, defs, instance, name: str, *, by: str, echo=print) -> TrainOutcome:
    """`ml-platform train`: one retrain of ``name`` through the same job, selection and gate as
    the sensor's (trigger "manual"), in the platform's instance; waits for a train run of the
    model launched by the daemon first (one train run per model at a time)."""

    chain = Chain(name, settings.models[name], settings)
    console.one_line_store_errors()
    lost = registry_loss(settings, registry_for(settings), name)  # before anything touches MLflow
    if lost:  # the command's one line says it (`train failed: refused: ...`)
        return TrainOutcome("manual", f"ml-platform train by {by}", error=f"refused: {lost}")
    repair(settings, defs, instance, name, echo)
    d = Decision(True, "manual", f"ml-platform train by {by}")
    _wait_for_train_pool(instance, chain, echo)
    echo(f"[{name}] training a candidate (trigger manual, by {by})")
    res = _train_job(defs, name).execute_in_process(
        instance=instance,
        raise_on_error=False,
        run_config=console.run_config(),
        tags={**train_tags(d, None), TAG_LAUNCHED_BY: this_run().replace("run ", "train ", 1)},
    )
    stop_on_storage_fault(res, settings)
    out = _train_outcome(res, chain, d.trigger, d.reason)
    _echo_train(name, out, echo)
    return out


def _train_job(defs, name: str):
    """The model's train job, logging to the console as Dagster does except the gate's refusal
    (``runtime/console.py``): the verdicts are printed by ``_echo_train``, with their reasons."""
    return console.quiet_refusals(defs.resolve_job_def(names.train_job(name)))


def _echo_train(name: str, t: TrainOutcome, echo, deploys: bool = True) -> None:
    if t.version is None:
        echo(f"[{name}]   training failed: {t.error}")
        return
    metrics = ", ".join(  # a metric that cannot be computed (roc_auc of a multiclass model) is not "nan"
        f"{k}={v:.4f}" if isinstance(v, (int, float)) and v == v else f"{k} undefined"
        for k, v in sorted(t.metrics.items())
    )
    echo(f"[{name}]   candidate v{t.version}: {metrics}")
    for check, passed, reason in t.gate:
        echo(f"[{name}]     {gate.verdict_line(check, passed, reason)}")
    if not deploys:
        passed = bool(t.gate) and all(p for _, p, _ in t.gate) and t.error is None
        echo(f"[{name}]   gate: {'would PASS' if passed else 'would REFUSE'} v{t.version} (nothing deployed)")
    elif t.deployed:
        echo(f"[{name}]   deployed v{t.version} as champion")
    elif t.staged:
        echo(f"[{name}]   {t.staged}")
    elif t.awaiting_approval:
        echo(
            f"[{name}]   v{t.version} awaits approval (deploy.approval: required): "
            f"ml-platform approve --model {name} --version {t.version}  (or reject)"
        )
    else:
        echo(f"[{name}]   not deployed" + (f": {t.error}" if t.error else " (gate rejected the candidate)"))
