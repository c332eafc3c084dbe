"""The retrain policy: given the batch history, should this batch trigger a retrain, and why.

Pure and deterministic over the catalog records, so the sensor (files arriving one by
one) and `ml-platform run` (files landed at once) reach the same decisions.

``on_drift`` (default) is performance-centred (``retrain.trigger_on: performance``): covariate
drift alone is a reason to look closer, not to retrain. It retrains when
  - the champion's metric dropped significantly on a labelled batch, or pooled over the last
    2-3 labelled batches (a drop too small for one batch's rows; trigger "performance", at once:
    labels are the strongest evidence), or
  - the labels no longer follow the champion's calibrated probabilities (``ConceptCheck`` at
    ``retrain.concept_alpha``; trigger "concept", at once): P(y | x) moved. A classifier's ROC AUC
    can hold through such a change (a decision threshold that shifts keeps the ranking) while a
    model refitted on the new labels gains; a covariate shift with the concept unchanged keeps the
    calibration and does not trigger it. A concept change alone does not start a
    regime window: the ranking held, so the older rows still teach it (benchmarks/README.md), or
  - a model refitted on the labelled batches before this one beat the champion on it by at least
    ``retrain.challenger_min_gain`` (the lower end of the paired bootstrap interval,
    ``core/challenger.py``; trigger "challenger", at once): retraining is measured to pay, on
    rows neither model trained on, where no drop shows (a relationship that moves a little every
    month). A concept that holds gains only the learning curve's thousandths, below the bar, or
  - on unlabelled batches, the CBPE estimate of the metric (``core/estimate.py``) dropped
    significantly over ``debounce_batches`` consecutive batches since the last retrain, with
    at least ``min_new_rows`` new rows (trigger "estimated_performance"), or
  - when neither a measurement nor an estimate exists (regression without labels, a champion
    without calibration) and ``retrain.unestimated_drift: retrain``: drift persisted over
    ``debounce_batches`` batches with ``min_new_rows`` new rows (trigger "drift").
``trigger_on: drift`` keeps the older rule: persistent drift retrains even while the
performance holds. Never for a batch too small to judge ("not enough data"), nor while a
retrain is within ``cooldown_seconds`` of the previous one. Without a champion a retrain is
always allowed. ``on_arrival`` retrains on every validated batch.
"""

from __future__ import annotations

from ml_platform.core.batch_record import BatchRecord, Decision, figure_dropped
from ml_platform.settings import ModelConfig, RetrainConfig

__all__ = ["Decision", "decide", "monitoring_complete", "scheduled"]


def monitoring_complete(record: BatchRecord) -> bool:
    """The batch's ingest run is done writing what the policy reads."""
    if record.status in (None, "raw"):
        return False
    if not record.is_validated:
        return True
    return record.drift is not None and record.performance is not None


def _since_last_retrain(history: list[BatchRecord]) -> list[BatchRecord]:
    for i in range(len(history) - 1, -1, -1):
        if history[i].retrained:
            return history[i + 1 :]
    return history


def _interval(p: dict, alpha: float) -> str:
    return f"{p['metric']} {p['value']:.4f} ({1 - alpha:.0%} CI {p['ci_low']:.4f}-{p['ci_high']:.4f})"


def _regime_start(recent: list[BatchRecord], start: str) -> str:
    """First batch of the trailing run of drifted / under-performing batches ending just before
    ``start`` (the batch that showed the shift; the first of a pooled window), else ``start``."""
    keys = [h.partition for h in recent]
    for h in reversed(recent[: keys.index(start)] if start in keys else recent):
        if not h.is_validated:
            continue
        if not h.shifted():
            break
        start = h.partition
    return start


def decide(
    record: BatchRecord,
    history: list[BatchRecord],
    cfg: ModelConfig,
    *,
    has_champion: bool,
    retrain_in_flight: bool = False,
    now: float | None = None,
) -> Decision:
    """Decision for ``record``; ``history`` = earlier records in arrival order, with their decisions.
    ``retrain_in_flight``: a train run of this model is queued or running. A batch a person
    took out of training (``ml-platform exclude``) is never a reason to retrain, and the others
    are judged as if it had never landed."""
    if record.excluded:
        return Decision(
            False,
            "none",
            f"excluded from training by {record.excluded.get('by', '?')}: {record.excluded.get('reason', '')}",
        )
    history = [r for r in history if not r.excluded]
    status = record.status
    if status != "validated":
        return Decision(False, "none", f"batch {status}: {record.reason}")
    rc = cfg.retrain
    if rc.policy == "on_arrival":
        if not has_champion:
            return Decision(True, "arrival", "no champion yet: a retrain is always allowed")
        return Decision(True, "arrival", "policy on_arrival: every validated batch retrains")
    if retrain_in_flight:
        return Decision(
            False,
            "none",
            "a retrain is already queued or running (at most one in flight): "
            "this batch is not a reason for another; the batches after it are "
            "judged against that retrain's result",
        )
    if record.unlabelled and not has_champion:
        return Decision(False, "none", "unlabelled batch and no champion: nothing to train on")
    if not has_champion:
        return Decision(True, "arrival", "no champion yet: a retrain is always allowed")

    recent = _since_last_retrain(history)
    last_retrain = next((h.decision.at for h in reversed(history) if h.retrained and h.decision.at is not None), None)
    at = record.validated_at or now
    cooling = (
        rc.cooldown_seconds > 0
        and last_retrain is not None
        and at is not None
        and at - last_retrain < rc.cooldown_seconds
    )

    perf = record.performance_figure
    est = record.estimate_figure
    d = record.drift_summary
    verdict = record.drift_verdict
    parts = []
    rows = int(record.valid_rows or 0)
    if rows < cfg.drift.min_rows:  # too small to judge: never a retrain by itself
        return Decision(
            False,
            "none",
            f"drift: not enough data ({rows} rows, drift.min_rows "
            f"{cfg.drift.min_rows}): too small to judge, never a retrain by itself",
        )
    validated = [h for h in recent + [record] if h.is_validated]
    alpha = rc.performance_alpha
    drop, start = None, record.partition
    if figure_dropped(perf, rc.min_drop):
        drop = f"{_interval(perf, alpha)} below champion v{perf.get('champion_version')} holdout {perf['baseline']:.4f}"
    elif (pool := _pooled_drop(validated, alpha, rc.min_drop)) is not None:
        k, p = pool
        start = validated[-k].partition
        drop = (
            f"{_interval(p.to_dict(), alpha)} over the last {k} labelled batches ({p.rows} rows) below "
            f"champion v{p.champion_version} holdout {p.baseline:.4f}"
        )
    if drop is not None:
        if cooling:
            return Decision(False, "none", f"{drop}, but within the {rc.cooldown_seconds:.0f}s cooldown")
        also = ([f"concept change too: {_concept(record)}"] if record.concept_moved else []) + (
            [f"retraining pays too: {_challenger(record)}"] if record.retraining_pays else []
        )
        return Decision(
            True,
            "performance",
            "; ".join([f"significant performance drop: {drop}", *also]),
            _regime_start(recent, start),
        )
    if record.concept_moved:
        concept = f"concept change: {_concept(record)}"
        if cooling:
            return Decision(False, "none", f"{concept}, but within the {rc.cooldown_seconds:.0f}s cooldown")
        also = [f"retraining pays too: {_challenger(record)}"] if record.retraining_pays else []
        return Decision(True, "concept", "; ".join([concept, *also]))
    if record.retraining_pays:
        pays = f"retraining pays: {_challenger(record)}"
        if cooling:
            return Decision(False, "none", f"{pays}, but within the {rc.cooldown_seconds:.0f}s cooldown")
        return Decision(True, "challenger", pays)
    new_rows = sum(int(h.valid_rows or 0) for h in validated)
    measured = perf.get("value") is not None
    estimated = not measured and est.get("value") is not None
    if measured:
        parts.append(
            f"{perf['metric']} {perf['value']:.4f} vs holdout {perf['baseline']:.4f} (no significant drop"
            + (f" of at least {rc.min_drop})" if perf.get("significant") else ")")
        )
        if record.challenger_check.get("error"):
            parts.append(f"challenger check failed: {record.challenger_check['error']}")
        elif record.challenger_check:
            parts.append(_challenger(record))
    elif perf.get("skipped"):
        parts.append(f"performance skipped: {perf['skipped']}")
    if estimated:
        what = f"estimated {_interval(est, alpha)} without labels (CBPE) vs holdout {est['baseline']:.4f}"
        if figure_dropped(est, rc.min_drop):
            streak = _streak(validated, lambda h: h.dropped(rc.min_drop))
            what = (
                f"{what}: significant drop, {streak} consecutive batch(es), {new_rows} new rows since the last retrain"
            )
            return _debounced(rc, what, streak, new_rows, cooling) or Decision(
                True, "estimated_performance", what, _regime_start(recent, record.partition)
            )
        parts.append(f"{what} (no significant drop)")
    elif not measured and est.get("reason"):
        parts.append(f"no estimate: {est['reason']}")

    judged = measured or estimated
    if verdict == "drifted" and judged and rc.trigger_on == "performance":
        return Decision(
            False,
            "none",
            f"drift in {', '.join(d.get('drifted_features') or []) or 'features'} "
            f"(share {d.get('share_drifted', 0):.0%}) looked at closer: "
            f"{'; '.join(parts)}; drift alone does not retrain",
        )
    if verdict == "drifted" and (judged or rc.unestimated_drift == "retrain"):
        streak = _streak(validated, lambda h: h.drifted)
        what = (
            f"drift in {', '.join(d.get('drifted_features') or []) or 'features'} "
            f"(share {d.get('share_drifted', 0):.0%}), {streak} consecutive drifted batch(es), "
            f"{new_rows} new rows since the last retrain"
            + ("" if judged else ", performance neither measured nor estimated")
        )
        return _debounced(rc, what, streak, new_rows, cooling) or Decision(
            True, "drift", what, _regime_start(recent, record.partition)
        )
    if verdict == "drifted":
        parts.insert(
            0,
            f"drift in {', '.join(d.get('drifted_features') or []) or 'features'}, performance neither "
            "measured nor estimated: waiting for labels (retrain.unestimated_drift: wait)",
        )
    elif verdict in ("no reference", "no champion", "skipped"):
        parts.insert(0, d.get("reason") or verdict)
    elif verdict == "not enough data":
        parts.insert(0, f"drift: not enough data ({d.get('rows', record.valid_rows)} rows)")
    elif verdict == "stable":
        parts.insert(0, f"no drift (share {d.get('share_drifted', 0):.0%})")
    return Decision(False, "none", "; ".join(parts) or "nothing to act on")


def _concept(record: BatchRecord) -> str:
    from ml_platform.core.calibration import ConceptCheck

    c = record.concept_check
    return ConceptCheck(**{k: c[k] for k in ConceptCheck.__dataclass_fields__}).summary()


def _challenger(record: BatchRecord) -> str:
    from ml_platform.core.challenger import ChallengerCheck

    return ChallengerCheck.from_dict(record.challenger_check).summary()


def _pooled_drop(validated: list[BatchRecord], alpha: float, min_drop: float):
    """(k, pooled figure) for the shortest trailing run of k = 2 or 3 labelled batches, measured
    against the same champion, whose pooled figure shows a significant drop; else None."""
    from ml_platform.core.estimate import pooled

    run: list[dict] = []
    for h in reversed(validated):
        p = h.performance_figure
        if p.get("method") != "measured" or p.get("value") is None:
            break
        if run and p.get("champion_version") != run[0].get("champion_version"):
            break
        run.insert(0, p)
        if len(run) >= 2:
            fig = pooled(run, alpha=alpha)
            if fig is not None and figure_dropped(fig.to_dict(), min_drop):
                return len(run), fig
        if len(run) == 3:
            break
    return None


def _streak(validated: list[BatchRecord], hit) -> int:
    """Consecutive batches (newest backwards) for which ``hit`` holds."""
    n = 0
    for h in reversed(validated):
        if not hit(h):
            break
        n += 1
    return n


def scheduled(
    records: list[BatchRecord],
    cfg: ModelConfig,
    *,
    champion: int | None,
    champion_batches=None,
    retrain_in_flight: bool = False,
    since: float | None = None,
) -> Decision:
    """The weekly schedule's decision (``retrain.schedule``): a retrain judged by the gate even
    without drift, but only when it has something new to learn from.

    ``records``: the catalog in arrival order. ``champion_batches``: the batches the champion's
    window trained on (None: unknown). ``since``: when the run that built the newest candidate
    started (whatever launched it, and whether the gate passed or blocked it; a run that died
    before building one does not count). New data = labelled batches outside the champion's
    window validated after ``since``; without ``since`` (no candidate recorded on this
    instance), those after the newest batch of the window. Without any, a retrain would refit
    the rows the champion or the last candidate already learnt from, and is skipped."""
    when = f"weekly retrain ({cfg.retrain.schedule})"
    if retrain_in_flight:
        return Decision(False, "none", f"{when} skipped: a retrain is already queued or running")
    if not any(r.trainable for r in records):
        return Decision(False, "none", f"{when} skipped: no labelled batch to train on yet")
    window = set(map(str, champion_batches or ()))
    if since is not None:
        new = [r for r in records if r.trainable and r.partition not in window and (r.validated_at or 0) > since]
        used = "the newest candidate's run started"
    else:
        cut = max((i for i, r in enumerate(records) if r.partition in window), default=-1)
        new = [r for r in records[cut + 1 :] if r.trainable]
        used = f"champion v{champion}'s training data" + (f" (newest: {records[cut].partition})" if cut >= 0 else "")
    if not new:
        return Decision(
            False, "none", f"{when} skipped: no labelled batch validated since {used}: it would refit the same rows"
        )
    unknown = champion is not None and champion_batches is None
    rows = sum(r.row_count for r in new)
    return Decision(
        True,
        "schedule",
        f"{when}: {len(new)} new labelled batch(es), {rows} rows, since {used} "
        f"(first: {new[0].partition})" + (f"; champion v{champion}'s training batches are unknown" if unknown else ""),
    )


def _debounced(rc: RetrainConfig, what: str, streak: int, new_rows: int, cooling: bool) -> Decision | None:
    """The no-retrain a signal from unlabelled evidence (drift, an estimate) still gets: too few
    consecutive batches, too few new rows, or the cooldown; None when it may retrain."""
    if streak < rc.debounce_batches:
        return Decision(False, "none", f"{what}; waiting for {rc.debounce_batches} (debounce)")
    if new_rows < rc.min_new_rows:
        return Decision(False, "none", f"{what}; waiting for {rc.min_new_rows} new rows")
    if cooling:
        return Decision(False, "none", f"{what}; within the {rc.cooldown_seconds:.0f}s cooldown")
    return None
