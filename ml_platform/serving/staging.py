"""A staged candidate beside the champion: shadow (mirrored, never answers) or canary (answers a
sticky share of requests). The control plane stages a version (``ModelStore.stage``: the
``staged.json`` pointer) and judges the evidence this module records; the endpoint only loads,
routes, mirrors and records (docs/staging.md).

The champion's path pays one O(1) append per mirrored request (:meth:`Stage.mirror`); the other
model scores the mirrored rows later, in the background (``Stages._drain_one``), many requests in
one ONNX Runtime call between requests, so no request waits for the shadow's answer. The queue is
bounded: under overload requests are dropped and counted, never queued without limit.

Evidence, per worker, in ``<stage_dir>/<model>/``: ``stage-v<N>-<stamp>-<pid>.jsonl`` (one line per
scored batch, column-oriented: request ids, id column, features, both models' outputs, the
candidate's single-row latency, errors; ``core/staging.read_evidence`` turns them into rows),
``stage-v<N>-stats-<pid>.json`` (mirrored / dropped / errors so far) and, when a canary failed on
live traffic, ``stage-v<N>-failed-<pid>.json`` (every worker stops routing to it at its next poll;
the control plane refuses it).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import random
import time
import zlib
from collections import deque
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson

from ml_platform.serving.model import DEFAULT_LATENCY_BUDGET_MS, LoadedModel, RejectedModel, load_version
from ml_platform.serving.store import ModelStore, atomic_write

log = logging.getLogger("ml_platform.serving")

MAX_QUEUED_ROWS = 4096  # per worker: beyond this, mirrored requests are dropped (counted)
BATCH_ROWS = 256  # rows the other model scores per ONNX Runtime call (then other requests go first)
# An ONNX Runtime call has a fixed cost about that of a one-row call: the mirrored rows wait until
# there are BATCH_ROWS of them or DRAIN_SECONDS passed, so that cost is shared by many requests
# (draining every 20 ms cost the champion +35 % CPU per request at ~1,000 req/s, measured).
DRAIN_SECONDS = 0.25
TICK_SECONDS = 0.05
LATENCY_SAMPLE_SECONDS = 0.5  # shadow: one single-row call timed this often (it costs a call)
FLUSH_SECONDS = 2.0
LATENCY_WINDOW = 50  # canary: the last calls judged against the latency budget
LATENCY_STRIKES = 3  # ... this many of them over budget roll it back
_OPTS = orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY
_rids = itertools.count()
_PID = f"{os.getpid():x}"


def request_id() -> str:
    """A request id unique across workers and restarts (pid + counter + start time)."""
    return f"{_PID}{_BOOT}-{next(_rids)}"


_BOOT = f"{int(time.time()) % 100000:x}"


def failed_marker(model_dir: Path, version: int) -> list[Path]:
    return sorted(Path(model_dir).glob(f"stage-v{version}-failed-*.json"))


class Stage:
    """One staged candidate of one model in this worker."""

    def __init__(self, pointer: dict, model: LoadedModel, budget_ms: float, out_dir: Path):
        self.pointer = pointer
        self.version = int(pointer["version"])
        self.mode = pointer.get("mode", "shadow")
        self.canary = self.mode == "canary"
        self.share = float(pointer.get("share", 1.0))
        self._cut = int(self.share * 10_000)
        self.model = model
        self.budget_ms = float(budget_ms)
        self.dir = out_dir
        self.failed: str | None = None
        self.queue: deque = deque()
        self.queued_rows = 0
        self.mirrored = self.dropped = self.errors = 0
        self.lines: list[bytes] = []
        self.recent: deque = deque(maxlen=LATENCY_WINDOW)
        self.last_sample = 0.0
        self.last_drain = time.monotonic()
        self.stats_dirty = False

    # ---------------------------------------------------------------- the request path
    def routes(self, parsed) -> bool:
        """Canary: does this request go to the candidate? Sticky: the same id (or, without one,
        the same first row) always gets the same answer, in every worker (crc32, not ``hash``)."""
        if self.failed is not None:
            return False
        ids = parsed.ids
        if ids is not None and ids[0] is not None:
            key = str(ids[0]).encode()
        else:
            key = repr([c[0].item() for c in parsed.columns.values()]).encode()
        return zlib.crc32(key) % 10_000 < self._cut

    def mirror(self, rid: str | None, parsed, outs, answered_by: LoadedModel, ms: float | None = None) -> None:
        """O(1): queue a copy of an answered request for the other model (shadow: a share of
        requests, canary: every one the candidate answered)."""
        if self.failed is not None:
            return
        if not self.canary and self.share < 1.0 and random.random() >= self.share:
            return
        n = parsed.n
        if self.queued_rows + n > MAX_QUEUED_ROWS:
            self.dropped += n
            self.stats_dirty = True
            return
        self.queue.append((time.time(), rid or request_id(), parsed, outs, answered_by, ms))
        self.queued_rows += n

    def observe_latency(self, ms: float) -> str | None:
        """Canary: one live single-row call of the candidate; -> why it must be rolled back, or None."""
        recent = self.recent
        recent.append(ms)
        if ms > self.budget_ms:
            over = sum(1 for x in recent if x > self.budget_ms)
            if over >= LATENCY_STRIKES:
                return (
                    f"{over} of its last {len(recent)} live calls exceeded the latency budget "
                    f"{self.budget_ms:g} ms (slowest {max(recent):.1f} ms)"
                )
        return None

    # ---------------------------------------------------------------- background
    def take(self) -> list:
        items, rows = [], 0
        q = self.queue
        while q and rows < BATCH_ROWS:
            it = q.popleft()
            items.append(it)
            rows += it[2].n
        self.queued_rows -= rows
        return items

    def block(self, items, feeds: dict, other: LoadedModel, other_outs: list | None, error, alone_ms) -> None:
        """One evidence line for a drained batch, column-oriented (one JSON array per column, numpy
        arrays encoded by orjson in C): per-row Python work here would cost the champion's process
        more than the shadow's inference does. ``feeds``: the batch's request columns."""
        answered = [np.concatenate(p) for p in zip(*(it[3] for it in items))]
        champ, cand = (answered, other_outs) if not self.canary else (other_outs, answered)
        first = items[0][4]
        idc = first.schema.id_column
        ids = None
        if idc:
            ids = []
            for it in items:
                got = it[2].ids
                ids.extend(got if got is not None else [None] * it[2].n)
        rids = []
        for it in items:
            rid, n = it[1], it[2].n
            rids.extend([rid] if n == 1 else [f"{rid}/{r}" for r in range(n)])
        out = {
            "ts": datetime.fromtimestamp(items[0][0], UTC).isoformat(timespec="milliseconds"),
            "mode": self.mode,
            "candidate": self.version,
            "champion": (first if not self.canary else other).version,
            "rows": len(rids),
            "rid": rids,
            "id_column": idc,
            "id": ids,
            "features": {
                k: (v.reshape(-1) if v.dtype.kind == "f" else v.reshape(-1).tolist()) for k, v in feeds.items()
            },
            "champion_out": _columns(champ),
            "candidate_out": _columns(cand),
            "candidate_ms": ([it[5] for it in items for _ in range(it[2].n)] if self.canary else alone_ms),
            "error": error,
        }
        try:
            self.lines.append(orjson.dumps(out, default=str, option=_OPTS))
        except TypeError as e:  # whatever a request smuggled in: skipped, counted
            log.warning("staging evidence of v%s not encodable: %s", self.version, e)
            self.errors += len(rids)
        self.mirrored += len(rids)
        self.stats_dirty = True

    def flush(self) -> None:
        """Blocking: write the evidence collected so far (run it in a thread)."""
        lines, self.lines = self.lines, []
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        try:
            if lines:
                atomic_write(self.dir / f"stage-v{self.version}-{stamp}-{os.getpid()}.jsonl", b"".join(lines))
            if self.stats_dirty:
                self.stats_dirty = False
                stats = {
                    "version": self.version,
                    "mode": self.mode,
                    "pid": os.getpid(),
                    "mirrored": self.mirrored,
                    "dropped": self.dropped,
                    "errors": self.errors,
                    "at": datetime.now(UTC).isoformat(timespec="seconds"),
                }
                atomic_write(self.dir / f"stage-v{self.version}-stats-{os.getpid()}.json", orjson.dumps(stats))
        except OSError as e:
            log.warning("staging evidence of v%s not written to %s: %s", self.version, self.dir, e)

    def mark_failed(self, reason: str) -> None:
        """Stop at once in this worker; the marker tells the other workers and the control plane."""
        if self.failed is not None:
            return
        self.failed = reason
        self.queue.clear()
        self.queued_rows = 0
        log.error("staged v%s failed on live traffic, back to the champion: %s", self.version, reason)
        try:
            atomic_write(
                self.dir / f"stage-v{self.version}-failed-{os.getpid()}.json",
                orjson.dumps({"version": self.version, "reason": reason, "at": datetime.now(UTC).isoformat()}),
            )
        except OSError as e:
            log.warning("could not record the failure of staged v%s: %s", self.version, e)


def _columns(outs) -> dict | None:
    """A model's outputs for the evidence: {"label", "probabilities"} or {"value"} (numpy arrays)."""
    if outs is None:
        return None
    if len(outs) == 2:
        lab = outs[0]
        return {"label": lab if lab.dtype.kind in "iuf" else lab.tolist(), "probabilities": outs[1]}
    return {"value": np.asarray(outs[0]).reshape(-1)}


def _threaded(fn):
    async def call(feeds):
        return await asyncio.to_thread(fn, feeds)

    return call


def _inline(fn):
    async def call(feeds):
        return fn(feeds)

    return call


def _concat(items) -> dict:
    """The request columns of ``items`` as one batch of feeds."""
    parsed = [it[2] for it in items]
    if all(p.row is not None for p in parsed):  # single-row requests: stacked from their values
        return parsed[0]._schema.stack(parsed)
    feeds = [p.feeds for p in parsed]
    return {k: np.concatenate([f[k] for f in feeds]) for k in feeds[0]}


class Stages:
    """Follows each model's ``staged.json`` and scores the mirrored requests (one per worker)."""

    def __init__(self, store: ModelStore, slots: dict, stage_dir: Path | None, latency_budget_ms: float | None):
        self.store = store
        self.slots = slots
        self.dir = Path(stage_dir) if stage_dir is not None else None
        self.latency_budget_ms = latency_budget_ms
        self.sigs: dict = {}

    def _sig(self, name: str):
        try:
            st = os.stat(self.store.stage_path(name))
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _plan(self, slot, force: bool):
        """-> None (nothing to do) or ("drop",) / ("load" | "update", pointer, out_dir, live budget)."""
        if self.dir is None:
            return None
        sig = self._sig(slot.name)
        if not force and sig == self.sigs.get(slot.name):
            stage = slot.stage
            if stage is not None and stage.failed is None and stage.canary:
                marks = failed_marker(stage.dir, stage.version)  # another worker rolled it back
                if marks:
                    stage.failed = f"rolled back by another worker ({marks[0].name})"
            return None
        self.sigs[slot.name] = sig
        try:
            ptr = self.store.staged(slot.name) if sig is not None else None
        except (OSError, ValueError) as e:
            log.error("model %s: unreadable staged pointer: %s", slot.name, e)
            ptr = None
        if ptr is None:
            return ("drop",) if slot.stage is not None else None
        old = slot.stage
        if old is not None and old.pointer == ptr:
            return None
        out = self.dir / slot.name
        out.mkdir(parents=True, exist_ok=True)
        budget = float(ptr.get("latency_budget_ms") or self.latency_budget_ms or DEFAULT_LATENCY_BUDGET_MS)
        if old is not None and old.version == ptr["version"]:  # new settings, same version: no reload
            return ("update", ptr, out, budget)
        return ("load", ptr, out, budget)

    def _build(self, slot, ptr: dict, out: Path, budget: float) -> Stage | None:
        """Load and validate the staged version as a champion would be (its own gate's budget; held
        to ``budget`` live). A version that cannot be loaded is marked failed: the control plane
        refuses it; the champion is untouched either way."""
        v = int(ptr["version"])
        try:
            model = load_version(self.store, slot.name, v, self.latency_budget_ms)
        except RejectedModel as e:
            Stage(ptr, None, budget, out).mark_failed(f"the endpoint could not load v{v}: {e.reason}")
            return None
        except Exception as e:  # noqa: BLE001 - never let a bad file kill the poller
            log.exception("loading staged %s v%s failed", slot.name, v)
            Stage(ptr, None, budget, out).mark_failed(f"the endpoint could not load v{v}: {e}")
            return None
        stage = Stage(ptr, model, budget, out)
        if failed_marker(out, v):
            stage.failed = "failed on live traffic before this worker started"
        return stage

    def initial_load(self) -> None:
        """At startup, synchronously: a restart during staging resumes it at once."""
        for slot in self.slots.values():
            plan = self._plan(slot, force=True)
            if plan is not None and plan[0] == "load":
                slot.stage = self._build(slot, *plan[1:])

    async def follow(self, slot, force: bool = False) -> None:
        """Load, replace or drop ``slot``'s staged candidate when its ``staged.json`` changed."""
        plan = self._plan(slot, force)
        if plan is None:
            return
        old = slot.stage
        new = None
        if plan[0] == "update":
            await self._drain_one(old, everything=True)
            new = Stage(plan[1], old.model, plan[3], plan[2])
            new.mirrored, new.dropped, new.errors, new.lines = old.mirrored, old.dropped, old.errors, old.lines
            new.failed = old.failed
            slot.stage = new
            return
        if plan[0] == "load":
            new = await asyncio.to_thread(self._build, slot, *plan[1:])
            if new is None:
                return
        if old is not None:
            await self._retire(old)
        slot.stage = new  # the swap: one reference assignment, as for the champion
        if new is not None:
            log.info("model %s: v%s staged as %s (share %s)", slot.name, new.version, new.mode, new.share)
        else:
            log.info("model %s: staged v%s unloaded", slot.name, old.version)

    async def _retire(self, stage: Stage) -> None:
        await self._drain_one(stage, everything=True)
        await asyncio.to_thread(stage.flush)

    async def _drain_one(self, stage: Stage, everything: bool = False) -> None:
        while stage.queue:
            items = stage.take()
            slot = self.slots.get(stage.model.name)
            other = stage.model if not stage.canary else (slot.model if slot is not None else None)
            if other is None:
                return
            feeds = _concat(items)
            alone_ms = err = outs = None
            # A plain graph runs here, on the event loop, between requests: a batch of BATCH_ROWS rows
            # is a fraction of a millisecond, where a worker thread would fight the loop for the GIL
            # (on a busy 2-core machine a descheduled GIL holder stalls the loop for whole time
            # slices: -40 % req/s at 1 connection, measured). A model with a transform (pandas,
            # milliseconds) runs in a thread instead.
            run = _inline(other.run) if other.transform is None else _threaded(other.run)
            try:
                now = time.monotonic()
                if not stage.canary and items[0][2].n == 1 and now - stage.last_sample >= LATENCY_SAMPLE_SECONDS:
                    stage.last_sample = now  # a single-row latency sample of the shadow
                    t0 = time.perf_counter()
                    await run({k: v[:1] for k, v in feeds.items()})
                    alone_ms = round((time.perf_counter() - t0) * 1000, 4)
                if other.batchable:
                    outs = await run(feeds)
                else:  # rows that must not share a call (a transform that looks across rows)
                    parts = [await run(it[2].feeds) for it in items]
                    outs = [np.concatenate(p) for p in zip(*parts)]
            except Exception as e:  # noqa: BLE001 - the other model's failure is evidence
                err = f"{type(e).__name__}: {str(e)[:200]}"
                outs = None
                stage.errors += sum(it[2].n for it in items)
            stage.block(items, feeds, other, outs, err, alone_ms)
            if not everything:
                await asyncio.sleep(0)

    async def run_forever(self, poll_seconds: float) -> None:
        last_poll = last_flush = time.monotonic()
        while True:
            await asyncio.sleep(TICK_SECONDS)
            now = time.monotonic()
            for slot in self.slots.values():
                stage = slot.stage
                try:
                    if (
                        stage is not None
                        and stage.queue
                        and (stage.queued_rows >= BATCH_ROWS or now - stage.last_drain >= DRAIN_SECONDS)
                    ):
                        stage.last_drain = now
                        await self._drain_one(stage)
                    if now - last_poll >= poll_seconds:
                        await self.follow(slot)
                except Exception:  # noqa: BLE001
                    log.exception("staging of %s failed", slot.name)
            if now - last_poll >= poll_seconds:
                last_poll = now
            if now - last_flush >= FLUSH_SECONDS:
                last_flush = now
                for slot in self.slots.values():
                    if slot.stage is not None and (slot.stage.lines or slot.stage.stats_dirty):
                        await asyncio.to_thread(slot.stage.flush)

    async def close(self) -> None:
        for slot in self.slots.values():
            if slot.stage is not None:
                await self._retire(slot.stage)
