"""`ml-platform status`: one JSON document (or a readable table) about every model."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ml_platform.control.champion import champion_version, check_registry
from ml_platform.control.champion import store as champion_store
from ml_platform.control.ledger import payoff_lines, payoff_of
from ml_platform.control.reconcile import reconcile, reconcile_needed
from ml_platform.control.servable import servable, served_before
from ml_platform.core import approval, audit, catalog, live, stage_files
from ml_platform.core.estimate import tracking as estimate_tracking_of
from ml_platform.names import (
    GATE_COMPARISON_PREFIX,
    GATE_SLICES_FAILING,
    VERSION_PROMOTED,
    VERSION_TRIGGER,
    approval_checks,
    gate_checks,
    gate_passed,
    gate_reason_tag,
)
from ml_platform.settings import Settings

if TYPE_CHECKING:  # no Dagster, no MLflow at import time: `status` starts in a fraction of a second
    from ml_platform.resources.registry import MlflowRegistry


def model_status(settings: Settings, registry: MlflowRegistry, name: str, endpoint=None, repair=None) -> dict:
    """``registry``: the MLflow registry or its read-only view (``resources/registry_view``);
    ``repair(name)``, when given, replaces ``reconcile`` (the view cannot write)."""
    # Divergences between the champion pointer, the MLflow alias and the store's files are
    # repaired first, and reported.
    try:
        repairs = repair(name) if repair is not None else reconcile(settings, registry, endpoint, name)
    except Exception as e:  # noqa: BLE001 - status must still print
        repairs = [f"could not reconcile: {type(e).__name__}: {e}"]
    versions = registry.versions(name)
    by_number = {int(v.version): v for v in versions}
    current = champion_version(settings, name)
    champion = {"version": None, "metrics": {}}
    if current is not None:
        run_id = by_number[current].run_id if current in by_number else None
        champion = {"version": current, "metrics": registry.run_metrics(run_id) if run_id else {}}
    checks = gate_checks(settings.models[name])
    vout = []
    for v in versions:
        t = v.tags
        passed = gate_passed(t, served_before(t, checks))
        vout.append(
            {
                "version": int(v.version),
                "gate_passed": bool(passed),
                "gate_state": "pending" if passed is None else ("passed" if passed else "failed"),
                "promoted": t.get(VERSION_PROMOTED) == "true",
                "reasons": [f"{c}: {t[gate_reason_tag(c)]}" for c in checks if gate_reason_tag(c) in t],
                "trigger": t.get(VERSION_TRIGGER, "manual"),
                **(
                    {"approval": t[approval.TAG], "approval_by": t.get(approval.TAG_BY, "")}
                    if t.get(approval.TAG)
                    else {}
                ),
                **_gate_figures(t),
            }
        )
    records = catalog.read_records(settings.model_dir(name))  # once: 1,000 batches are 1,000 files
    batches = []
    for r in records:
        b = {
            "partition": r.partition,
            "file": r.file or "",
            "rows": r.row_count,
            "quarantined_rows": int(r.quarantined_rows or 0),
            "status": r.status or "unknown",
        }
        for k in ("reason", "excluded", "decision", "drift", "performance", "estimate"):
            v = getattr(r, k)
            if v:
                b[k] = v.to_dict() if hasattr(v, "to_dict") else v
        batches.append(b)
    before_approval = approval_checks(settings.models[name])
    waiting = approval.awaiting(
        [(int(v.version), v.tags) for v in versions], current, gate_passed=lambda tags: servable(tags, before_approval)
    )
    return {
        "champion": champion,
        # deploy.strategy shadow / canary: the candidate judged on live traffic now
        "staging": _staging(settings, name),
        "versions": vout,
        "batches": batches,
        # deploy.approval: required -> gate-passed candidates waiting for a person
        "approval": {
            "mode": settings.models[name].deploy.approval,
            "awaiting": [a.to_dict() for a in waiting] if settings.models[name].deploy.approval == "required" else [],
        },
        "payoff": _payoff(settings, registry, name, versions, records),
        # CBPE: how far the label-free estimate was from the realised metric once labels came
        "estimate_tracking": estimate_tracking(records),
        "live_drift": live.read_summary(settings.model_dir(name)),
        "audit": [a.to_dict() for a in audit.read(settings.model_dir(name))],
        "repairs": repairs,
    }


def _payoff(settings: Settings, registry: MlflowRegistry, name: str, versions: list, records: list) -> dict:
    try:
        return payoff_of(settings, registry, name, versions, records).to_dict()
    except Exception as e:  # noqa: BLE001 - status must still print
        return {"error": f"{type(e).__name__}: {e}"}


def _staging(settings: Settings, name: str) -> dict | None:
    """The staged candidate and its evidence so far ("v5 in shadow behind v4: 312/500 requests")."""
    try:
        rec = champion_store(settings).staged(name)
    except (OSError, ValueError) as e:
        return {"line": f"staged record unreadable: {e}", "failures": []}
    if rec is None:
        return None
    d = settings.live_samples_dir / name
    rows = stage_files.count_rows(d, rec["version"])
    failures = stage_files.failures(d, rec["version"])
    wait = stage_files.labels_wait(d, rec)  # judged once, waiting for labelled live rows ...
    if wait is not None and wait.get("stamp") != catalog.records_stamp(settings.model_dir(name)):
        wait = None  # ... and batches landed since: due again (control/staging.ready)
    # what the staging sensor and `run` judge on (control/staging.ready): failures, the evidence in,
    # max_hours passed, or the champion moved under it
    due = bool(
        failures
        or (not wait and rec.get("min_requests") and rows >= rec["min_requests"])
        or stage_files.expired(rec, float(rec.get("max_hours", 24)), datetime.now(UTC))
        or _champion_moved(settings, name, rec.get("champion"))
    )
    return {
        "line": stage_files.progress_line(rec, rows),
        "version": rec["version"],
        "mode": rec.get("mode"),
        "requests": rows,
        "min_requests": rec.get("min_requests"),
        "started_at": rec.get("started_at"),
        "failures": failures,
        "due": due,
        "waiting": stage_files.waiting_line(wait) if wait else None,
    }


def _champion_moved(settings: Settings, name: str, judged_against: int | None) -> bool:
    try:
        return champion_version(settings, name) != judged_against
    except ValueError:  # an unreadable pointer: the repairs say so; not a reason to judge
        return False


def _gate_figures(tags: dict) -> dict:
    """The champion comparison's figures (``gate.comparison.*`` tags: method, rows, delta = candidate
    - champion with > 0 better, ci_low/ci_high, ...) and the failing slices, when the gate recorded them."""
    out = {}
    comp = {k.removeprefix(GATE_COMPARISON_PREFIX): v for k, v in tags.items() if k.startswith(GATE_COMPARISON_PREFIX)}
    if comp:
        out["comparison"] = {k: (v if k == "method" else int(v) if k == "rows" else float(v)) for k, v in comp.items()}
    if GATE_SLICES_FAILING in tags:
        failing = tags[GATE_SLICES_FAILING]
        out["failing_slices"] = [] if failing == "none" else failing.split(",")
    return out


def estimate_tracking(records: list[catalog.BatchRecord]) -> dict:
    t = estimate_tracking_of(records)
    return {"batches": len(t.rows), "mean_abs_error": t.mean_abs_error, "covered": t.covered, "per_batch": t.rows}


def status(settings: Settings, registry: MlflowRegistry, endpoint=None, repair=None) -> dict:
    """Raises ``RegistryLost`` (naming the tracking URI and what is missing) when the registry
    does not hold what the serving store knows: never a report over a fresh, empty registry."""
    check_registry(settings, registry, settings.models)
    return {
        "tracking_uri": settings.tracking_uri,
        "models": {n: model_status(settings, registry, n, endpoint, repair) for n in settings.models},
    }


def fast_status(settings: Settings) -> dict | None:
    """``status`` read from MLflow's SQLite store directly (no MLflow import: seconds saved), MLflow's
    client only for a repair; None when the store is not SQLite (the caller uses ``status``)."""
    from ml_platform.resources.registry_view import view_for

    view = view_for(settings)
    if view is None:
        return None

    def repair(name: str) -> list[str]:
        if not reconcile_needed(settings, view, name):
            return []
        from ml_platform.resources.endpoint import endpoint_for
        from ml_platform.resources.registry import registry_for

        return reconcile(settings, registry_for(settings), endpoint_for(settings), name)

    return status(settings, view, repair=repair)


def render(doc: dict) -> str:
    """The same facts as the JSON, as tables for people."""
    from tabulate import tabulate

    out = [f"MLflow tracking URI: {doc['tracking_uri']}"]
    for name, m in doc["models"].items():
        ch = m["champion"]
        metrics = ", ".join(f"{k}={v:.4f}" for k, v in sorted(ch["metrics"].items()))
        out.append(
            f"\n== {name} ==  champion: " + (f"v{ch['version']} ({metrics})" if ch["version"] is not None else "none")
        )
        if m.get("staging"):
            st = m["staging"]
            due = st.get("due")
            out.append(
                st["line"]
                + (f" (failed live: {'; '.join(st['failures'])})" if st["failures"] else "")
                + (f" - {st['waiting']}" if st.get("waiting") and not due else "")
                # who judges it: a user without the daemon must know `run` does
                + (
                    " - due: the staging sensor (`ml-platform up`; one started before `deploy` was set needs its "
                    "definitions reloaded) or `ml-platform run` judges it"
                    if due
                    else ""
                )
            )
        if m["versions"]:
            out.append(
                tabulate(
                    [
                        [
                            v["version"],
                            v["trigger"],
                            v["gate_state"],
                            "yes" if v["promoted"] else "",
                            _comparison_cell(v),
                            "\n".join(v["reasons"]),
                        ]
                        for v in m["versions"]
                    ],
                    headers=["version", "trigger", "gate", "promoted", "vs champion", "reasons"],
                )
            )
        if m["batches"]:
            out.append(
                tabulate(
                    [
                        [
                            b["partition"],
                            b["rows"],
                            b["quarantined_rows"],
                            b["status"] + (" (excluded)" if b.get("excluded") else ""),
                            _drift_cell(b),
                            _performance_cell(b),
                            _retrain_cell(b),
                            (b.get("decision") or {}).get("reason", b.get("reason") or ""),
                        ]
                        for b in m["batches"]
                    ],
                    headers=[
                        "batch",
                        "rows",
                        "quarantined",
                        "status",
                        "drift",
                        "measured / estimated",
                        "retrain",
                        "decision / reason",
                    ],
                    maxcolwidths=[None] * 7 + [70],
                )
            )
        tr = m.get("estimate_tracking") or {}
        if tr.get("batches"):
            out.append(
                f"label-free estimate (CBPE) vs realised on {tr['batches']} labelled batch(es): "
                f"mean |error| {tr['mean_abs_error']:.4f}, realised inside the estimate's interval "
                f"{tr['covered']:.0%}"
            )
        ld = m.get("live_drift")
        if ld:
            out.append(
                f"live traffic (endpoint sample, v{ld.get('champion_version')}): {ld['verdict']}"
                + (
                    f", {ld['rows']} rows {ld.get('window_from', '')[:19]} .. {ld.get('window_to', '')[:19]}"
                    if ld.get("rows")
                    else ""
                )
                + (f"; drifted: {', '.join(ld['drifted_features'])}" if ld.get("drifted_features") else "")
                + (f" ({ld['reason']})" if ld.get("reason") else "")
            )
            le = ld.get("estimate") or {}
            if le.get("value") is not None:
                out.append(
                    f"  estimated {le['metric']} on live traffic (CBPE): {le['value']:.4f} "
                    f"[{le['ci_low']:.4f}, {le['ci_high']:.4f}] vs holdout {le['baseline']:.4f}"
                    + (" - significant drop" if le.get("significant") else "")
                )
            elif le.get("reason"):
                out.append(f"  no live performance estimate: {le['reason']}")
        for a in (m.get("approval") or {}).get("awaiting", []):
            out.append(
                f"AWAITING APPROVAL: v{a['version']} ({a['trigger']}) passed the gate"
                + (f" against v{a['judged_against']}, which no longer serves: re-run its checks" if a["stale"] else "")
                + (f"; live: {a['live']}" if a.get("live") else "")
                + f"; ml-platform approve --model {name} --version "
                f"{a['version']}  |  ml-platform reject --model {name} --version {a['version']}"
            )
        out += payoff_lines(m.get("payoff") or {})
        if m.get("repairs"):
            out.append("repaired just now:\n" + "\n".join(f"  - {r}" for r in m["repairs"]))
        if m["audit"]:
            out.append(
                "audit (champion moves; rejections and exclusions by people):\n"
                + tabulate(
                    [
                        [
                            a["at"][:19],
                            a.get("from"),
                            a.get("to"),
                            a.get("kind", ""),
                            a.get("actor"),
                            a.get("reason"),
                            a.get("endpoint", ""),
                        ]
                        for a in m["audit"]
                    ],
                    headers=["at", "from", "to", "kind", "by", "why", "endpoint"],
                    maxcolwidths=[None] * 5 + [50, 40],
                )
            )
    return "\n".join(out)


def _comparison_cell(v: dict) -> str:
    c = v.get("comparison") or {}
    if "delta" not in c:
        return ""
    ci = f" [{c['ci_low']:+.4f}, {c['ci_high']:+.4f}]" if "ci_low" in c else ""
    return f"{c['delta']:+.4f}{ci}, {c.get('rows', '?')} rows"


def _drift_cell(b: dict) -> str:
    d = b.get("drift") or {}
    if d.get("verdict") in ("drifted", "stable"):
        return f"{d['verdict']} ({d.get('share_drifted', 0):.0%})"
    return d.get("verdict", "")


def _performance_cell(b: dict) -> str:
    """Measured metric (labels) and the CBPE estimate, e.g. "0.8123 / ~0.8050"."""
    p, e = b.get("performance") or {}, b.get("estimate") or {}
    cells = []
    if p.get("value") is not None:
        c = p.get("concept") or {}
        cells.append(
            f"{p['value']:.4f}"
            + ("!" if p.get("significant") else "")
            + (f" (concept moved, p={c['p_value']:.0e})" if c.get("significant") else "")
            + _challenger_note(p.get("challenger") or {})
        )
    if e.get("value") is not None:
        cells.append(f"~{e['value']:.4f}" + ("!" if e.get("significant") else ""))
    return " / ".join(cells)


def _challenger_note(ch: dict) -> str:
    """The challenger check in a few words: what a refit on the earlier batches would change."""
    if ch.get("error"):
        return " (refit check failed)"
    if "delta" not in ch:
        return ""
    return f" (a refit gains {ch['delta']:+.4f})" if ch.get("pays") else f" (refit {ch['delta']:+.4f}: no sure gain)"


def _retrain_cell(b: dict) -> str:
    d = b.get("decision") or {}
    return f"yes ({d['trigger']})" if d.get("retrain") else ("no" if d else "")


def to_json(doc: dict) -> str:
    return json.dumps(doc, indent=2, default=str)
