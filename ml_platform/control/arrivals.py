"""What the landing sensor does on a tick: bring the zone's index up to date, turn the new files
into ingest run requests (one run per file when one arrives, runs of several files over a range
of the batch partitions for a backlog), and report the backlog's progress in one bounded line."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field

import dagster as dg

from ml_platform import names
from ml_platform.control import ingest_claims
from ml_platform.control.chain import Chain
from ml_platform.control.decisions import ingest_tags
from ml_platform.core import catalog
from ml_platform.core.landing import LandingFile
from ml_platform.core.landing_index import LandingIndex, ScanStats, ZoneCursor
from ml_platform.names import (
    INGEST_PRIORITY,
    TAG_FILES,
    TAG_PRIORITY,
    TAG_RANGE_END,
    TAG_RANGE_START,
    TAG_SHA,
)
from ml_platform.runtime import console

PROGRESS_EVERY_SECONDS = 10.0
NAMES_IN_LOG = 3  # a tick's log line names at most this many files (first and last)


@dataclass
class Tick:
    requests: list = field(default_factory=list)
    new_keys: list = field(default_factory=list)
    cursor: ZoneCursor = field(default_factory=ZoneCursor)
    lines: list = field(default_factory=list)
    stats: ScanStats = field(default_factory=ScanStats)
    skip_reason: str = ""


def index_path(chain: Chain):
    return chain.dir / names.LANDING_INDEX


def file_config(files: list[LandingFile]) -> dict:
    """The run config of a multi-file ingest run: where each partition's file came from."""
    return {f.partition_key: {"path": str(f.path), "sha256": f.sha256, "arrival": f.mtime} for f in files}


def ingest_requests(chain: Chain, files: list[LandingFile], existing: set[str]) -> list[dg.RunRequest]:
    """One run per file, or, for a backlog, runs of up to ``landing.max_files_per_run`` files over
    a range of partitions. A range needs its partitions contiguous: the files' keys are added in
    this order by the same tick; a file whose key already exists gets a run of its own."""
    size = chain.cfg.landing.max_files_per_run
    alone = [f for f in files if f.partition_key in existing]
    fresh = [f for f in files if f.partition_key not in existing]
    requests = [_single(f) for f in alone]
    for i in range(0, len(fresh), size):
        chunk = fresh[i : i + size]
        requests.append(_single(chunk[0]) if len(chunk) == 1 else _multi(chain, chunk))
    return requests


def _single(f: LandingFile) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=f"ingest-{f.sha256}",
        partition_key=f.partition_key,
        tags={**ingest_tags(f), TAG_PRIORITY: str(INGEST_PRIORITY)},
    )


def _multi(chain: Chain, chunk: list[LandingFile]) -> dg.RunRequest:
    digest = hashlib.sha256("".join(f.sha256 for f in chunk).encode()).hexdigest()
    return dg.RunRequest(
        run_key=f"ingest-{digest}",
        tags={
            TAG_RANGE_START: chunk[0].partition_key,
            TAG_RANGE_END: chunk[-1].partition_key,
            TAG_FILES: str(len(chunk)),
            TAG_SHA: digest,  # the chunk's: one ingest run at a time on one machine (runtime/instance)
            TAG_PRIORITY: str(INGEST_PRIORITY),
        },
        # its own run config: the job's default (the console logger) is not merged into it
        run_config=console.job_run_config(
            {"ops": {names.step(chain.name, "raw_batch"): {"config": {"files": file_config(chunk)}}}}
        ),
    )


PER_KEY_LOOKUPS = 20  # below this many files, ask per key; above, read every key once (cheaper then)


def _existing_keys(instance, chain: Chain, files: list[LandingFile]) -> set[str]:
    """Which of the files' partition keys exist already (a few files: asked one by one, ~40 ms
    each on SQLite; many: every key read once, not the 100k a zone may hold for each file)."""
    name = chain.partitions.name
    if len(files) <= PER_KEY_LOOKUPS:
        return {f.partition_key for f in files if instance.has_dynamic_partition(name, f.partition_key)}
    keys = set(instance.get_dynamic_partitions(name))
    return {f.partition_key for f in files if f.partition_key in keys}


def _done(rec: catalog.BatchRecord | None) -> bool:
    return rec is not None and (rec.validated_at is not None or rec.status in ("failed", "rejected", "validated"))


def _names(files: list[LandingFile]) -> str:
    if len(files) <= NAMES_IN_LOG:
        return ", ".join(f.path.name for f in files)
    return f"{files[0].path.name}, {files[1].path.name} ... {files[-1].path.name}"


def landing_tick(chain: Chain, instance, cursor_text: str | None, *, now: float | None = None) -> Tick:
    now = time.time() if now is None else now
    cur = ZoneCursor.from_dict(json.loads(cursor_text) if cursor_text else {})
    tick = Tick(cursor=cur)
    landing = chain.settings.landing_dir(chain.name)
    with LandingIndex(index_path(chain)) as ix:
        done = _settle(chain, ix, cur, landing)  # first: a refused copy's file is looked at again now
        tick.stats = ix.scan(landing, cur, settle_seconds=chain.cfg.automation.settle_seconds, now=now)
        files = ix.ready(landing)
        if files:  # only then read the catalog: `ml-platform run` may have ingested them already
            files = _take(chain, instance, ix, tick, files, now)
        _progress(ix, cur, tick, now, done, len(files))
    if not tick.requests:
        tick.skip_reason = "no new landing files" + (" (more to hash next tick)" if tick.stats.more else "")
    return tick


def _take(chain: Chain, instance, ix: LandingIndex, tick: Tick, files: list[LandingFile], now: float) -> list:
    """Request the files nobody took: under the ingest-claims lock, so that what the records and
    `ml-platform run`'s claims say and the requests marked here are one step for `run`
    (``control/ingest_claims``); the index is committed before the lock is let go."""
    with ingest_claims.claims_lock(chain):
        known = catalog.known_sha256(chain.dir)
        ix.mark_done([f.path.name for f in files if f.sha256 in known])
        claimed = ingest_claims.live_claims(chain)
        held = [f for f in files if f.sha256 in claimed and f.sha256 not in known]
        files = [f for f in files if f.sha256 not in known and f.sha256 not in claimed]
        if files:
            existing = _existing_keys(instance, chain, files)
            tick.new_keys = [f.partition_key for f in files if f.partition_key not in existing]
            tick.requests = ingest_requests(chain, files, existing)
            ix.mark_requested(files, now)
        ix.db.commit()
    if held:  # left new in the index: looked at again next tick (done once `run`'s record holds them)
        tick.lines.append(f"{len(held)} file(s) being ingested by `ml-platform run`, left to it: {_names(held)}")
    if files:
        tick.lines.append(f"{len(files)} new file(s) in {len(tick.requests)} run(s): {_names(files)}")
    return files


def _settle(chain: Chain, ix: LandingIndex, cur: ZoneCursor, landing) -> int:
    """Match in-flight requests with the catalog, only when a record was written since: how
    many are done (ingested, rejected or failed)."""
    stamp = catalog.records_stamp(chain.dir)
    if stamp == cur.stamp:
        return 0
    cur.stamp = stamp
    finished = [n for n, p in ix.in_flight() if _done(catalog.read_record(chain.dir, p))]
    ix.settle_requests(landing, finished)
    return len(finished)


def _progress(ix: LandingIndex, cur: ZoneCursor, tick: Tick, now: float, done: int, new: int) -> None:
    """How the backlog goes, in one line at most every ``PROGRESS_EVERY_SECONDS``: files done /
    pending, rate, ETA."""
    pending = len(ix.in_flight())
    if not pending and not done:
        cur.backlog_since, cur.backlog_done = 0.0, 0
        return
    if cur.backlog_since == 0.0:
        cur.backlog_since, cur.backlog_done = now, 0
    cur.backlog_done += done
    if pending > 1 and (new or now - cur.logged_at >= PROGRESS_EVERY_SECONDS):
        rate = cur.backlog_done / max(now - cur.backlog_since, 1e-9) * 60
        eta = f"{pending / rate:.1f} min" if rate > 0 else "unknown (none done yet)"
        tick.lines.append(
            f"backlog: {cur.backlog_done} file(s) done, {pending} pending; {rate:.1f} files/min; ETA {eta}"
        )
        cur.logged_at = now
