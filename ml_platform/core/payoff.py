"""The payoff ledger: what self-healing did for a model and what it cost.

A pure function (``ledger``) over three records the platform keeps anyway:
- the batches (catalog records): when each landed, whether it drifted or its metric dropped,
  which champion scored it and the metric measured once its labels came;
- the model versions (MLflow): trigger, gate verdicts, person's decision, training time;
- the audit of champion moves (who, when, from -> to, why).

It answers: how many retrains, by trigger; which candidates the gate blocked (bad deploys
prevented) and why; per drift episode, the time from its first drifted batch landing to a new
champion serving; the served metric before and after each promotion; the compute time spent
training. No Dagster, no MLflow.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from ml_platform.core import stage_files
from ml_platform.core.audit import AuditEntry
from ml_platform.core.batch_record import BatchRecord
from ml_platform.names import LIVE_CHECK

AROUND = 3  # batches averaged on each side of a promotion for "served before / after"


@dataclass
class BatchFacts:
    partition: str
    landed_at: float  # epoch seconds: the landing file's time, else the ingest's
    # When it was ingested and scored: which champion scored it is decided then (files landed
    # at once are scored one after another, across champion moves).
    scored_at: float = 0.0
    drifted: bool = False  # the drift verdict said "drifted"
    dropped: bool = False  # measured (labels) or estimated (CBPE) significant drop
    stable: bool = False  # judged and neither drifted nor dropped
    served_version: int | None = None  # the champion that scored the batch
    served_metric: float | None = None  # its metric on the batch's labels

    def __post_init__(self):
        self.scored_at = self.scored_at or self.landed_at

    @classmethod
    def from_record(cls, rec: BatchRecord) -> BatchFacts:
        """From a catalog record (``core/catalog``)."""
        perf = rec.performance_figure
        drifted, dropped = rec.drifted, rec.dropped()
        judged = rec.drift_verdict in ("drifted", "stable")
        version = perf.get("champion_version", rec.estimate_figure.get("champion_version"))
        landed = rec.landed_at
        return cls(
            partition=rec.partition,
            landed_at=landed,
            scored_at=float(rec.ingested_at or landed),
            drifted=drifted,
            dropped=dropped,
            stable=judged and not drifted and not dropped,
            served_version=None if version is None else int(version),
            served_metric=None if rec.measured_value is None else float(rec.measured_value),
        )


@dataclass
class VersionFacts:
    version: int
    trigger: str
    created_at: float  # epoch seconds
    gate: str  # passed | failed | pending
    failing: list[str] = field(default_factory=list)  # "check: reason" of each failed check
    approval: str | None = None  # approved | rejected (deploy.approval: required)
    approval_note: str = ""  # who and why, for a rejection
    train_seconds: float | None = None  # wall time of the retrain (all its candidates)
    gate_delta: float | None = None  # candidate - champion on the fair comparison set (> 0 better)


@dataclass
class Blocked:
    """A candidate that never served because the gate (or a person) stopped it."""

    version: int
    trigger: str
    by: str  # "gate" | "person" | "timeout" (max_hours without the evidence: not a bad deploy)
    why: list[str]


@dataclass
class Episode:
    """From the first drifted (or under-performing) batch landing to a new champion serving."""

    first_batch: str
    started_at: str
    batches: int  # shifted batches in the episode
    status: str  # recovered | subsided (drift ended, no new champion) | open
    performance_dropped: bool  # a measured or estimated significant drop in the episode
    retrains: int  # versions trained during the episode
    blocked: int  # of which the gate or a person stopped
    recovered_by: int | None = None  # the version that took over
    recovered_at: str | None = None
    time_to_recovery_seconds: float | None = None


@dataclass
class PromotionFacts:
    at: str
    kind: str  # deploy | rollback | auto-rollback | repair
    previous: int | None
    to: int | None
    trigger: str
    by: str
    served_before: float | None  # previous champion's measured metric, last AROUND batches before
    batches_before: int
    served_after: float | None  # new champion's measured metric, first AROUND batches after
    batches_after: int
    gate_delta: float | None  # what the gate saw: candidate - champion on the fair set


@dataclass
class Payoff:
    metric: str
    retrains: int
    retrains_by_trigger: dict[str, int]
    promotions: list[PromotionFacts]
    blocked: list[Blocked]
    episodes: list[Episode]
    train_seconds_total: float
    train_seconds_by_trigger: dict[str, float]
    train_runs_timed: int  # versions whose training time is known
    timeline: list[BatchFacts] = field(default_factory=list)  # for the plot; not in to_dict

    @property
    def bad_deploys_prevented(self) -> int:
        return sum(b.by == "gate" for b in self.blocked)

    @property
    def train_seconds_per_retrain(self) -> float | None:
        """Mean wall time of a timed retrain (every candidate and its backtest refits)."""
        return round(self.train_seconds_total / self.train_runs_timed, 3) if self.train_runs_timed else None

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("timeline")
        rec = [e["time_to_recovery_seconds"] for e in d["episodes"] if e["time_to_recovery_seconds"] is not None]
        d["bad_deploys_prevented"] = self.bad_deploys_prevented
        d["train_seconds_per_retrain"] = self.train_seconds_per_retrain
        d["median_time_to_recovery_seconds"] = statistics.median(rec) if rec else None
        return d


def epoch(iso: str) -> float:
    try:
        return datetime.fromisoformat(iso).timestamp()
    except (TypeError, ValueError):
        return 0.0


def _iso(t: float) -> str:

    return datetime.fromtimestamp(t, tz=UTC).isoformat(timespec="seconds")


def _mean(xs: list[float]) -> float | None:
    return float(statistics.fmean(xs)) if xs else None


def _promotions(
    moves: list[AuditEntry], batches: list[BatchFacts], versions: dict[int, VersionFacts]
) -> list[PromotionFacts]:
    out = []
    for m in moves:
        if m.to is None or m.kind == "repair":
            continue
        t = epoch(m.at)
        before = [
            b.served_metric
            for b in batches
            if b.scored_at < t and b.served_version == m.previous and b.served_metric is not None
        ][-AROUND:]
        after = [
            b.served_metric
            for b in batches
            if b.scored_at >= t and b.served_version == m.to and b.served_metric is not None
        ][:AROUND]
        v = versions.get(m.to)
        out.append(
            PromotionFacts(
                at=m.at,
                kind=m.kind,
                previous=m.previous,
                to=m.to,
                trigger=m.trigger,
                by=m.actor,
                served_before=_mean(before),
                batches_before=len(before),
                served_after=_mean(after),
                batches_after=len(after),
                gate_delta=v.gate_delta if v and m.kind == "deploy" else None,
            )
        )
    return out


def _blocked(versions: list[VersionFacts]) -> list[Blocked]:
    """Who stopped each version: the gate (a bad deploy prevented), a person (rejected, or its stage
    rolled back), or the clock (``max_hours`` without the evidence: nothing said it was bad)."""
    out = []
    live = f"{LIVE_CHECK}: "
    for v in versions:
        # a person who rejects a staged candidate also fails its live check (the stage ends): a
        # rejected version whose only failed check is the live one was stopped by that person
        only_live = bool(v.failing) and all(f.startswith(live) for f in v.failing)
        why = v.failing[0][len(live) :] if only_live else ""
        if v.approval == "rejected" and (only_live or not v.failing):
            out.append(Blocked(v.version, v.trigger, "person", [v.approval_note or "rejected"]))
        elif v.gate == "failed" and why.startswith(stage_files.ROLLED_BACK_BY):
            out.append(Blocked(v.version, v.trigger, "person", v.failing))
        elif v.gate == "failed" and why.startswith(stage_files.NO_EVIDENCE):
            out.append(Blocked(v.version, v.trigger, "timeout", v.failing))
        elif v.gate == "failed":
            out.append(Blocked(v.version, v.trigger, "gate", v.failing))
        elif v.approval == "rejected":
            out.append(Blocked(v.version, v.trigger, "person", [v.approval_note or "rejected"]))
    return out


def _episodes(batches: list[BatchFacts], deploys: list[AuditEntry], versions: list[VersionFacts]) -> list[Episode]:
    """Walk the batches in landing order: a shifted batch opens an episode; the first deploy
    after it was scored closes it (recovered: time from its landing), or else a later stable
    batch (subsided)."""
    episodes: list[Episode] = []
    deploy_times = sorted((epoch(d.at), d) for d in deploys)
    blocked = {b.version for b in _blocked(versions)}
    open_ep: tuple[BatchFacts, list[BatchFacts]] | None = None

    def close(
        first: BatchFacts, shifted: list[BatchFacts], end: float | None, status: str, by: AuditEntry | None
    ) -> Episode:
        lo, hi = first.scored_at, end if end is not None else float("inf")
        trained = [v for v in versions if lo <= v.created_at <= hi]
        return Episode(
            first_batch=first.partition,
            started_at=_iso(first.landed_at),
            batches=len(shifted),
            status=status,
            performance_dropped=any(b.dropped for b in shifted),
            retrains=len(trained),
            blocked=sum(v.version in blocked for v in trained),
            recovered_by=by.to if by else None,
            recovered_at=by.at if by else None,
            time_to_recovery_seconds=(end - first.landed_at) if by and end is not None else None,
        )

    for b in batches:
        if open_ep is not None:
            first, shifted = open_ep
            done = next(((t, d) for t, d in deploy_times if first.scored_at <= t <= b.scored_at), None)
            if done is not None:
                episodes.append(close(first, shifted, done[0], "recovered", done[1]))
                open_ep = None
            elif b.stable:
                episodes.append(close(first, shifted, b.scored_at, "subsided", None))
                open_ep = None
        if open_ep is None and (b.drifted or b.dropped):
            open_ep = (b, [b])
        elif open_ep is not None and (b.drifted or b.dropped):
            open_ep[1].append(b)
    if open_ep is not None:
        first, shifted = open_ep
        done = next(((t, d) for t, d in deploy_times if t >= first.scored_at), None)
        episodes.append(
            close(first, shifted, done[0], "recovered", done[1]) if done else close(first, shifted, None, "open", None)
        )
    return episodes


def ledger(metric: str, batches: list[BatchFacts], versions: list[VersionFacts], audit: list[AuditEntry]) -> Payoff:
    """The payoff of one model from its batches, versions and audit (any order)."""
    batches = sorted(batches, key=lambda b: (b.landed_at, b.scored_at, b.partition))
    versions = sorted(versions, key=lambda v: v.version)
    moves = [e for e in audit if e.moved]
    deploys = [e for e in moves if e.kind == "deploy" and e.to is not None]
    by_trigger = Counter(v.trigger for v in versions)
    seconds: dict[str, float] = {}
    for v in versions:
        if v.train_seconds is not None:
            seconds[v.trigger] = seconds.get(v.trigger, 0.0) + v.train_seconds
    return Payoff(
        metric=metric,
        retrains=len(versions),
        retrains_by_trigger=dict(sorted(by_trigger.items())),
        promotions=_promotions(moves, batches, {v.version: v for v in versions}),
        blocked=_blocked(versions),
        episodes=_episodes(batches, deploys, versions),
        train_seconds_total=round(sum(seconds.values()), 3),
        train_seconds_by_trigger={k: round(s, 3) for k, s in sorted(seconds.items())},
        train_runs_timed=sum(v.train_seconds is not None for v in versions),
        timeline=batches,
    )
