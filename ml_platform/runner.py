"""`ml-platform run`: every pending landing file through the same jobs and the same retrain
policy the sensors use, in arrival order, recorded in the instance the UI shows."""

from __future__ import annotations

from dataclasses import dataclass, field

from ml_platform.assets.common import Chain
from ml_platform.core import catalog
from ml_platform.core.landing import scan_landing
from ml_platform.resources.registry import MlflowRegistry
from ml_platform.sensors import decision_observation, ingest_tags, pending_decisions, train_tags
from ml_platform.settings import Settings


@dataclass
class TrainOutcome:
    trigger: str
    reason: str
    version: int | None = None
    metrics: dict = field(default_factory=dict)
    gate: list[tuple[str, bool, str]] = field(default_factory=list)
    deployed: bool = False
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


def _train_outcome(result, chain: Chain, registry: MlflowRegistry, trigger: str, reason: str) -> TrainOutcome:
    out = TrainOutcome(trigger, reason)
    for ev in result.all_events:
        if ev.is_step_failure and out.error is None:
            err = ev.event_specific_data.error if ev.event_specific_data else None
            while err is not None and err.cause is not None:  # the user-code error, not the wrapper
                err = err.cause
            out.error = err.message.strip()[:500] if err else ev.message
    try:
        cand = result.output_for_node(f"{chain.name}__candidate_model")
    except Exception:
        return out
    out.version, out.metrics = cand["version"], cand["metrics"]
    for ev in result.get_asset_check_evaluations():
        out.gate.append((ev.check_name, ev.passed, str(ev.metadata.get("reason").value
                                                       if "reason" in ev.metadata else "")))
    champ = registry.champion(chain.name)
    out.deployed = champ is not None and int(champ.version) == out.version
    if out.deployed or not all(passed for _, passed, _ in out.gate):
        out.error = None  # a gate rejection is an outcome, reported by its checks
    return out


def run_pending(settings: Settings, defs, instance, models: list[str] | None = None,
                echo=print) -> dict[str, list[BatchOutcome]]:
    registry: MlflowRegistry = defs.resources["registry"]
    summary: dict[str, list[BatchOutcome]] = {}
    for name in models or list(settings.models):
        chain = Chain(name, settings.models[name], settings)
        ingest_job = defs.resolve_job_def(f"{name}_ingest")
        train_job = defs.resolve_job_def(f"{name}_train")
        files = scan_landing(settings.landing_dir(name), settle_seconds=0,
                             known_sha256=catalog.known_sha256(chain.dir))
        echo(f"[{name}] {len(files)} pending file(s) in {settings.landing_dir(name)}")
        outcomes = summary.setdefault(name, [])
        for i, f in enumerate(files, 1):
            key = f.partition_key
            instance.add_dynamic_partitions(chain.partitions.name, [key])
            echo(f"[{name}] ({i}/{len(files)}) ingest {f.path.name} -> partition {key}")
            ingest_job.execute_in_process(instance=instance, partition_key=key, tags=ingest_tags(f),
                                          raise_on_error=False)
            for rec, d in pending_decisions(chain):
                instance.report_runless_asset_event(decision_observation(chain, rec, d))
                bo = BatchOutcome(rec["partition"], rec.get("file", ""), rec.get("status", "?"),
                                  rec.get("valid_rows", rec.get("rows", 0)) or 0,
                                  rec.get("quarantined_rows", 0) or 0, rec.get("reason"),
                                  f"{'retrain' if d.retrain else 'no retrain'} ({d.trigger}): {d.reason}")
                echo(f"[{name}]   {bo.status}: {bo.rows} valid rows, {bo.quarantined_rows} quarantined"
                     + (f" - {bo.reason}" if bo.reason else ""))
                echo(f"[{name}]   decision: {bo.decision}")
                if d.retrain:
                    res = train_job.execute_in_process(
                        instance=instance, raise_on_error=False,
                        tags=train_tags(d, rec["partition"]))
                    bo.train = _train_outcome(res, chain, registry, d.trigger, d.reason)
                    _echo_train(name, bo.train, echo)
                outcomes.append(bo)
    return summary


def _echo_train(name: str, t: TrainOutcome, echo) -> None:
    if t.version is None:
        echo(f"[{name}]   training failed: {t.error}")
        return
    metrics = ", ".join(f"{k}={v:.4f}" for k, v in sorted(t.metrics.items()))
    echo(f"[{name}]   candidate v{t.version}: {metrics}")
    for check, passed, reason in t.gate:
        echo(f"[{name}]     gate {check}: {'PASS' if passed else 'FAIL'} - {reason}")
    if t.deployed:
        echo(f"[{name}]   deployed v{t.version} as champion")
    else:
        echo(f"[{name}]   not deployed" + (f": {t.error}" if t.error else " (gate rejected the candidate)"))
