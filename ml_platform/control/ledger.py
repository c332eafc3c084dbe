"""The payoff ledger's facts, gathered from where they are recorded (the batch catalog, the
MLflow registry and runs, the audit) for ``core/payoff.ledger``. Used by `status` and by the
``<model>/payoff`` asset."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from ml_platform.core import approval, audit, catalog, files, payoff
from ml_platform.names import (
    GATE_COMPARISON_PREFIX,
    VERSION_TRIGGER,
    gate_checks,
    gate_passed,
    gate_reason_tag,
    gate_tag,
)
from ml_platform.settings import Settings

if TYPE_CHECKING:  # `status` imports this module: no Dagster at import time
    from ml_platform.resources.registry import MlflowRegistry

TRAIN_SECONDS_CACHE = "payoff_train_seconds.json"  # version -> seconds (an ended run never changes)


def train_seconds(registry: MlflowRegistry, run_id: str) -> float | None:
    """Wall time of the retrain that produced a version (``run_seconds`` of the registry, or of
    its read-only view under `status`)."""
    return registry.run_seconds(run_id)


def version_facts(mv, seconds: float | None, checks: tuple[str, ...]) -> payoff.VersionFacts:
    t = mv.tags
    passed = gate_passed(t, checks)
    delta = t.get(GATE_COMPARISON_PREFIX + "delta")
    return payoff.VersionFacts(
        version=int(mv.version),
        trigger=t.get(VERSION_TRIGGER, "manual"),
        created_at=mv.creation_timestamp / 1000,
        gate="pending" if passed is None else ("passed" if passed else "failed"),
        failing=[f"{c}: {t.get(gate_reason_tag(c), '')}" for c in checks if t.get(gate_tag(c)) == "failed"],
        approval=t.get(approval.TAG),
        approval_note=approval.rejection(t) or "",
        train_seconds=seconds,
        gate_delta=float(delta) if delta not in (None, "") else None,
    )


def payoff_of(
    settings: Settings, registry: MlflowRegistry, model: str, versions: list | None = None, records: list | None = None
) -> payoff.Payoff:
    """``versions`` / ``records``: the registry's versions and the batch records of the model, when
    the caller has read them already."""
    d = settings.model_dir(model)
    versions = registry.versions(model) if versions is None else versions
    cache_path = d / TRAIN_SECONDS_CACHE
    grew = False
    try:
        cache = {int(k): float(v) for k, v in json.loads(cache_path.read_text()).items()}
    except FileNotFoundError:
        cache = {}
    except (OSError, ValueError, TypeError, AttributeError) as e:  # a cache: rebuilt, said
        files.warn_skipped(cache_path, f"unreadable ({type(e).__name__}): ignored and rebuilt", "ml_platform.ledger")
        cache, grew = {}, True
    facts = []
    for mv in versions:
        n = int(mv.version)
        if n not in cache:
            try:
                s = train_seconds(registry, mv.run_id)
            except Exception:  # noqa: BLE001 - a run deleted from MLflow: time unknown
                s = None
            if s is not None:
                cache[n], grew = s, True
        facts.append(version_facts(mv, cache.get(n), gate_checks(settings.models[model])))
    if grew:
        catalog.write_json_atomic(cache_path, {str(k): v for k, v in sorted(cache.items())})
    records = catalog.read_records(d) if records is None else records
    batches = [payoff.BatchFacts.from_record(r) for r in records]
    return payoff.ledger(settings.models[model].gate_metric, batches, facts, audit.read(d))


def _ttr(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return (
        f"{seconds:.0f} s"
        if seconds < 120
        else f"{seconds / 60:.1f} min"
        if seconds < 7200
        else f"{seconds / 3600:.1f} h"
    )


def _v(x) -> str:
    return "none" if x is None else f"v{x}"


def _fig(x: float | None) -> str:
    return "not measured" if x is None else f"{x:.4f}"


def payoff_lines(p: dict) -> list[str]:
    """`status`'s payoff section for people (``p``: ``Payoff.to_dict()``)."""
    if not p:
        return []
    if "error" in p:
        return [f"payoff: could not compute ({p['error']})"]
    trig = ", ".join(f"{k} {n}" for k, n in p["retrains_by_trigger"].items()) or "none"
    out = [
        f"payoff: {p['retrains']} retrain(s) ({trig}); {p['bad_deploys_prevented']} bad deploy(s) prevented "
        f"by the gate; {len(p['promotions'])} promotion(s); training time {p['train_seconds_total']:.1f} s "
        f"({p['train_runs_timed']} timed"
        + (f", {p['train_seconds_per_retrain']:.1f} s each" if p.get("train_seconds_per_retrain") else "")
        + ")"
    ]
    for b in p["blocked"]:
        out.append(f"  blocked v{b['version']} ({b['trigger']}, by {b['by']}): " + "; ".join(b["why"]))
    for e in p["episodes"]:
        out.append(
            f"  drift episode from {e['first_batch']} ({e['batches']} batch(es)"
            + (", performance dropped" if e["performance_dropped"] else "")
            + f"): {e['status']}"
            + (f" by v{e['recovered_by']} in {_ttr(e['time_to_recovery_seconds'])}" if e["recovered_by"] else "")
            + f"; {e['retrains']} retrain(s), {e['blocked']} blocked"
        )
    for m in p["promotions"]:
        out.append(
            f"  {m['at'][:19]} {m['kind']} {_v(m['previous'])} -> {_v(m['to'])} ({m['trigger']}): served "
            f"{p['metric']} {_fig(m['served_before'])} -> {_fig(m['served_after'])}"
            + (f"; gate delta {m['gate_delta']:+.4f}" if m["gate_delta"] is not None else "")
        )
    return out
