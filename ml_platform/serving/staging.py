"""A staged candidate beside the champion: shadow (mirrored, never answers) or canary (answers a
sticky share of requests). The control plane stages a version (``ModelStore.stage``: the
``staged.json`` pointer) and judges the evidence recorded here; the endpoint only loads, routes,
mirrors and records (docs/staging.md).

Where a copy is scored (docs/staging.md "Cost on the champion's path"):

- **Here, after an answer is sent** (a shadow's single-row copies, :meth:`Stage.score_due`): a
  request that was the only one in flight at once (10-30 µs the worker would spend waiting for the
  next request); those that were not, in batches of ``INLINE_BATCH`` within ``INLINE_SHARE`` of
  the worker's time, paced evenly (beyond it: dropped, counted). A process beside the worker, on its core, is
  what cost the champion's tail. The records go to this worker's own ``.frames`` file
  (``core/stage_files.py``) at each send: nothing else wakes for them.
- **In the worker's shadow scorer**, a child process (``shadow_scorer.py``): larger requests, a
  canary's copies, a candidate too slow for the worker. The request pays one append of a record;
  every ``SEND_SECONDS`` the loop hands the batch over in one non-blocking pipe write. Bounded
  twice: at most ``MAX_QUEUED_ROWS`` wait for the next send, and a full pipe drops the batch;
  dropped rows are counted, never queued without limit.

A canary's own answers (and its latency judging) stay here.

Evidence, per worker (files named by the worker's pid), in ``<stage_dir>/<model>/``:
``stage-v<N>-<stamp>-<pid>.jsonl`` (one line per scored batch, column-oriented: request ids, id
column, features, both models' outputs, the candidate's single-row latency, errors;
``core/staging.read_evidence`` turns them into rows), ``stage-v<N>-<stamp>-<pid>.frames`` (the
rows the worker scored, appended at each send), ``stage-v<N>-stats-<pid>.json`` (the scorer's
counts and the worker's dropped count; it and the .jsonl written by the scorer) and, when a canary
failed on live traffic, ``stage-v<N>-failed-<pid>.json`` (every worker stops routing to it at its
next poll; the control plane refuses it).
"""

from __future__ import annotations

import asyncio
import logging
import marshal
import math
import os
import pickle
import random
import time
import zlib
from collections import deque
from datetime import UTC, datetime
from pathlib import Path

import orjson

from ml_platform.core.stage_files import FRAMES, pack_block
from ml_platform.serving.model import DEFAULT_LATENCY_BUDGET_MS, LoadedModel, RejectedModel, load_version
from ml_platform.serving.shadow_scorer import ScorerProcess, frame
from ml_platform.serving.store import ModelStore, atomic_write

log = logging.getLogger("ml_platform.serving")

MAX_QUEUED_ROWS = 4096  # per worker, between two sends: beyond this, mirrored requests are dropped (counted)
# How often the loop hands the mirrored rows to the scorer (one os.write of the batch's records)
# and appends the rows scored here to the worker's .frames file. As often as the scorer wakes: a
# tick every 20 ms cost a saturated worker ~5 % of its CPU with nothing to send (benchmarks/README.md
# "Shadow cost").
SEND_SECONDS = 0.2
# After a batch the scorer could not take (pipe full: it is behind, e.g. starved at idle priority
# beside a saturated worker), requests are not recorded for this long, only counted as dropped:
# building records that would be dropped cost the worker ~4 µs a request (benchmarks/README.md
# "Shadow cost"). The scorer wakes every 0.2 s (shadow_scorer.WAKE_SECONDS).
BACKOFF_SECONDS = 0.2
IDLE_TICK_SECONDS = 0.05  # nothing staged: how often the staged pointers' checks run
RESTART_SECONDS = 10.0  # a scorer that died is restarted at most this often
# A shadow's copies are scored in the worker only while a row costs it less than this (moving
# average over single calls and batches); else by the scorer.
INLINE_MAX_MS = 0.1
# Single-row requests that arrived while others were in flight: scored here, this many per call
# after an answer is sent (a stall of ~0.2 ms on the test VM for the requests waiting), within this
# share of the worker's time; beyond it they are dropped (counted). Paced: a batch that took t
# begins the next no sooner than t / INLINE_SHARE after it began (copies in between dropped). A
# budget per second spent at its start instead gave the first ~0.3 s of every second the whole
# cost, and the p99 with it; paced at 2 % a saturated worker lost ~8 % of its req/s, at 1 % ~3-6 %
# (benchmarks/README.md "Shadow cost").
INLINE_BATCH = 32
INLINE_SHARE = 0.01
LATENCY_SAMPLE_SECONDS = 0.5  # under load, one copy timed alone this often (the shadow's live latency)
LATENCY_WINDOW = 50  # canary: the last calls judged against the latency budget
LATENCY_STRIKES = 3  # ... this many of them over budget roll it back


_dumps = marshal.dumps


def _pickle(feeds: dict) -> bytes:
    return pickle.dumps(feeds, protocol=5)


def _scalar(v):
    return v.item() if hasattr(v, "item") else v


def failed_marker(model_dir: Path, version: int) -> list[Path]:
    return sorted(Path(model_dir).glob(f"stage-v{version}-failed-*.json"))


class Stage:
    """One staged candidate of one model in this worker."""

    def __init__(self, pointer: dict, model: LoadedModel | None, budget_ms: float, out_dir: Path):
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
        self.scorer: ScorerProcess | None = None
        self.started = 0.0  # when the scorer was (re)started
        self._reset()
        self.queued_rows = 0
        self.mirrored = self.dropped = 0  # rows handed to the scorer or written here / dropped
        self.backoff_until = 0.0  # monotonic time: rows dropped without a record until then
        self.recent: deque = deque(maxlen=LATENCY_WINDOW)
        self.due: tuple | None = None  # a request to score here once its answer is sent
        self.batch: list = []  # ... and those that were not alone in flight (_score_batch)
        # perf_counter time: no new batch is begun before it (INLINE_SHARE; none at a share of 0)
        self.paced_until = 0.0 if INLINE_SHARE > 0 else math.inf
        self.last_sample = 0.0  # when a batch's first row was last timed alone
        self.scored_here = 0  # rows scored in this worker (score_due), written to frames_fd
        self.dropped_sent = 0
        self.frames_fd: int | None = None
        self.closed = False
        self.inline = not self.canary and model is not None and model.batchable
        self.inline_ms = 0.0  # moving average of those calls (a row's time)
        self.inline_calls = 0

    def _reset(self) -> None:
        """The batch of the next send: one record per request (:meth:`mirror`); the rows this
        worker scored itself (:meth:`score_due`) in a batch of their own."""
        self.buf = bytearray()
        self.records = 0
        self.sbuf = bytearray()
        self.srecords = 0
        self.champion: LoadedModel | None = None  # whose schema parsed the rows
        self.dtypes: list | None = None  # of the answered outputs (the lists come back as these)
        self.ts = 0.0

    @property
    def errors(self) -> int:
        return self.scorer.errors if self.scorer is not None else 0

    @property
    def scorer_state(self) -> str:
        """ "ready" (the candidate loaded in the scorer), "starting", or "down" (rows are dropped)."""
        sc = self.scorer
        return "down" if sc is None else "ready" if sc.ready else "starting"

    @property
    def scored(self) -> int:
        return self.scored_here + (self.scorer.scored if self.scorer is not None else 0)

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
            # the first row's validated values: numpy scalars as Python ones; text is already str
            key = repr([_scalar(c[0]) for c in parsed.columns.values()]).encode()
        return zlib.crc32(key) % 10_000 < self._cut

    def mirror(
        self,
        rid: str | None,
        parsed,
        outs,
        champion: LoadedModel,
        ms: float | None = None,
        alone: bool = False,
        here: bool = False,
    ) -> bool:
        """Keep a copy of an answered request (shadow: a share of requests, canary: every one the
        candidate answered): a record for the scorer, or the request itself to score here.
        ``outs``: what the client got; ``champion``: the model whose schema parsed the request.
        ``here``: the caller calls :meth:`score_due` once the answer is sent when this returns
        True, so a shadow's single-row copies are scored in this worker (``alone``: no other
        request is in flight)."""
        if self.failed is not None or self.closed:
            return False
        if not self.canary and self.share < 1.0 and random.random() >= self.share:
            return False
        n = parsed.n
        if self.queued_rows + n > MAX_QUEUED_ROWS or (self.backoff_until and time.monotonic() < self.backoff_until):
            self.dropped += n
            return False
        here = here and self.inline and parsed.row is not None
        if here and not alone and not self.batch and time.perf_counter() < self.paced_until:
            self.dropped += 1  # the share for batches is spent: overloaded, counted only
            return False
        if champion is not self.champion:
            if self.queued_rows:  # a champion swap since the last send: its rows go in their own batch
                self.send()
            self.champion = champion
        if not self.queued_rows:
            self.ts = time.time()
            self.dtypes = [o.dtype.str for o in outs]
        if here:
            self.queued_rows += 1
            if alone:
                if self.due is not None:
                    self._score_one()
                self.due = (rid, parsed, outs)
                return True
            self.batch.append((rid, parsed, outs))
            return len(self.batch) >= INLINE_BATCH
        self._record(rid, parsed, outs, ms)
        return False

    def _record(self, rid, parsed, outs, ms) -> None:
        # Serialized now, while the request's objects are in the CPU's cache: keeping them for the
        # send instead (and freeing them there) cost ~3 µs a request, measured in-process.
        row = parsed.row
        try:
            self.buf += _dumps(
                (rid, row if row is not None else _pickle(parsed.feeds), parsed.ids, [o.tolist() for o in outs], ms),
                2,  # version 2: no back-references, so records concatenate (the scorer reads them as one list)
            )
        except ValueError:  # not marshallable (ids and values are validated: never seen)
            self.dropped += parsed.n
            return
        self.queued_rows += parsed.n
        self.records += 1

    def score_due(self, force: bool = False) -> None:
        """Score here, after an answer went out, what :meth:`mirror` kept: the request that was
        alone in flight (10-30 µs of time the worker would have spent waiting), or a full batch of
        those that were not (``INLINE_BATCH``, ``INLINE_SHARE``; ``force``: any batch, at a
        send). Any process running on the worker's core delays its wake-ups
        (benchmarks/README.md "Shadow cost"): the scorer beside it is left what cannot be done
        here. The records, with both outputs, go to this worker's ``.frames`` file at the next
        send."""
        if self.due is not None:
            self._score_one()
        if self.batch and (force or len(self.batch) >= INLINE_BATCH):
            self._score_batch()

    def _score_one(self) -> None:
        """The request alone in flight, timed (its milliseconds are the shadow's live single-row
        latency). A candidate slower than ``INLINE_MAX_MS`` a row (moving average, batches
        included), or one that fails, is left to the scorer from then on."""
        rid, parsed, outs = self.due
        self.due = None
        self.queued_rows -= 1
        t0 = time.perf_counter()
        try:
            mine = self.model.run(parsed.feeds)
        except Exception:  # noqa: BLE001 - the scorer runs it again and records the error
            self.inline = False
            self._record(rid, parsed, outs, None)
            return
        ms = (time.perf_counter() - t0) * 1000
        self._cost(ms)
        try:
            self.sbuf += _dumps(
                (rid, parsed.row, parsed.ids, [o.tolist() for o in outs], [o.tolist() for o in mine], round(ms, 4)), 2
            )
        except ValueError:
            self.dropped += 1
            return
        self.queued_rows += 1
        self.srecords += 1

    def _score_batch(self) -> None:
        """Copies of requests that were not alone, in one call. Its time a row feeds the same
        average as single calls (a candidate too slow is left to the scorer); every
        ``LATENCY_SAMPLE_SECONDS`` its first row is also timed alone, as the live latency."""
        rows, self.batch = self.batch, []
        n = len(rows)
        self.queued_rows -= n
        t0 = time.perf_counter()
        ms = None
        try:
            if t0 - self.last_sample >= LATENCY_SAMPLE_SECONDS:
                self.last_sample = t0
                self.model.run(rows[0][1].feeds)
                ms = round((time.perf_counter() - t0) * 1000, 4)
            mine = self.model.run(self.champion.schema.stack([p for _, p, _ in rows]))
            cols = [m.tolist() for m in mine]
            buf = bytearray()
            for i, (rid, parsed, outs) in enumerate(rows):
                rec = (rid, parsed.row, parsed.ids, [o.tolist() for o in outs], [[c[i]] for c in cols], ms)
                buf += _dumps(rec, 2)
                ms = None  # the sample is the first row's; a batch's time is not a row's latency
        except Exception:  # noqa: BLE001 - the scorer runs them row by row and records the errors
            self.inline = False  # as for a single call: a candidate that fails is the scorer's
            for rid, parsed, outs in rows:
                self._record(rid, parsed, outs, None)
            self._pace(t0)
            return
        self.sbuf += buf
        self.queued_rows += n
        self.srecords += n
        self._cost(self._pace(t0) * 1000 / n)

    def _pace(self, t0: float) -> float:
        """A batch begun at ``t0`` is done: no new one before ``INLINE_SHARE`` allows. -> its seconds."""
        t1 = time.perf_counter()
        share = INLINE_SHARE
        self.paced_until = t1 + (t1 - t0) * (1 / share - 1) if share > 0 else math.inf
        return t1 - t0

    def _cost(self, ms_a_row: float) -> None:
        # judged on the average once 20 calls are in (a cold or preempted first call is no
        # verdict), at once on a call 100 times over (never 20 of those on the loop)
        self.inline_calls += 1
        self.inline_ms += (ms_a_row - self.inline_ms) * 0.05
        if (self.inline_calls >= 20 and self.inline_ms > INLINE_MAX_MS) or ms_a_row > 100 * INLINE_MAX_MS:
            self.inline = False
            log.info("staged v%s: %.2f ms a row, scored by the shadow scorer from now on", self.version, self.inline_ms)

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

    # ---------------------------------------------------------------- on the loop, every SEND_SECONDS
    def _message(self) -> bytes:
        """The batch as one frame for the scorer (``shadow_scorer.py``'s message), and a new batch."""
        champ = self.champion
        head = {
            "mode": self.mode,
            "candidate": self.version,
            "champion": champ.version if champ is not None else None,
            "plan": champ.schema._plan if champ is not None else (),
            "id_column": champ.schema.id_column if champ is not None else None,
            "dtypes": self.dtypes,
            "records": self.records,
            "ts": self.ts,
            "dropped": self.dropped,
        }
        data = frame((head, self.buf))
        self._reset()
        self.champion = champ
        return data

    def _append_scored(self) -> None:
        """The rows scored here, appended to this worker's ``.frames`` file as they are (one
        ``os.write``; ``core/stage_files.py`` reads them): no other process wakes for them."""
        n, body = self.srecords, bytes(self.sbuf)
        self.sbuf = bytearray()
        self.srecords = 0
        self.queued_rows -= n
        champ = self.champion
        head = {
            "mode": self.mode,
            "candidate": self.version,
            "champion": champ.version,
            "plan": champ.schema._plan,
            "id_column": champ.schema.id_column,
            "records": n,
            "ts": datetime.fromtimestamp(self.ts, UTC).isoformat(timespec="milliseconds"),
        }
        try:
            if self.frames_fd is None:
                stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
                path = self.dir / f"stage-v{self.version}-{stamp}-{os.getpid()}{FRAMES}"
                self.frames_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            data = pack_block(head, body)
            size = os.fstat(self.frames_fd).st_size
            if os.write(self.frames_fd, data) != len(data):  # a full disk: never leave half a block
                os.ftruncate(self.frames_fd, size)
                raise OSError(f"short write of {len(data)} bytes")
        except OSError as e:
            self.dropped += n
            log.warning("staged v%s: %d scored rows not written to %s: %s", self.version, n, self.dir, e)
            return
        self.mirrored += n
        self.scored_here += n

    def send(self) -> None:
        """Non-blocking: hand the batch to the scorer; a full pipe drops it (counted). The rows
        scored here go to this worker's own evidence file."""
        self.score_due(force=True)
        if self.srecords:
            self._append_scored()
        if not self.records and self.dropped == self.dropped_sent:
            return
        rows, self.queued_rows = self.queued_rows, 0
        data = self._message()
        if self.scorer is not None and self.scorer.send(data):
            self.dropped_sent = self.dropped  # the scorer's stats file carries the count
            self.mirrored += rows
            self.backoff_until = 0.0
        elif rows:
            self.dropped += rows
            self.backoff_until = time.monotonic() + BACKOFF_SECONDS

    async def close(self) -> None:
        """The copies still to score here, scored and appended to the ``.frames`` file (closed);
        the last batch and the final counts to the scorer (on the loop, as every send), then wait
        in a thread for it to write the evidence and exit. Copies that reach a closed stage (a
        request that read it before it was replaced) are not kept."""
        self.closed = True
        self.score_due(force=True)
        if self.srecords:
            self._append_scored()
        if self.frames_fd is not None:
            os.close(self.frames_fd)
            self.frames_fd = None
        scorer = self.scorer
        if scorer is None:  # none to hand the rest to (it could not start, or died): counted
            self.dropped += self.queued_rows
            self.queued_rows = 0
            self._reset()
            return
        self.scorer = None
        self.mirrored += self.queued_rows  # waited for, not dropped: the scorer is still reading
        self.queued_rows = 0
        last = self._message()  # with the final dropped count (also when there is no row left)
        await asyncio.to_thread(scorer.close, last)

    def mark_failed(self, reason: str) -> None:
        """Stop at once in this worker; the marker tells the other workers and the control plane."""
        if self.failed is not None:
            return
        self.failed = reason
        self._reset()
        self.due = None
        self.batch = []
        self.queued_rows = 0
        log.error("staged v%s failed on live traffic, back to the champion: %s", self.version, reason)
        try:
            atomic_write(
                self.dir / f"stage-v{self.version}-failed-{os.getpid()}.json",
                orjson.dumps({"version": self.version, "reason": reason, "at": datetime.now(UTC).isoformat()}),
            )
        except OSError as e:
            log.warning("could not record the failure of staged v%s: %s", self.version, e)


class Stages:
    """Follows each model's ``staged.json``, hands the mirrored requests to the scorers (one per
    worker)."""

    def __init__(self, store: ModelStore, slots: dict, stage_dir: Path | None, latency_budget_ms: float | None):
        self.store = store
        self.slots = slots
        self.dir = Path(stage_dir) if stage_dir is not None else None
        self.latency_budget_ms = latency_budget_ms
        self.sigs: dict = {}
        self.locks: dict[str, asyncio.Lock] = {}

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
        to ``budget`` live), and start its scorer. A version that cannot be loaded is marked failed:
        the control plane refuses it; the champion is untouched either way."""
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
        else:
            self._start_scorer(stage)
        return stage

    def _start_scorer(self, stage: Stage) -> None:
        stage.started = time.monotonic()
        try:
            stage.scorer = ScorerProcess(
                self.store.root, stage.model.name, stage.version, stage.dir, self.latency_budget_ms
            )
        except OSError as e:  # no process to be had: every mirrored row is dropped (counted)
            log.error("could not start the shadow scorer of v%s: %s", stage.version, e)

    def initial_load(self) -> None:
        """At startup, synchronously: a restart during staging resumes it at once."""
        for slot in self.slots.values():
            plan = self._plan(slot, force=True)
            if plan is not None and plan[0] == "load":
                slot.stage = self._build(slot, *plan[1:])

    async def follow(self, slot, force: bool = False) -> None:
        """Load, replace or drop ``slot``'s staged candidate when its ``staged.json`` changed. One
        at a time per model: the poll and ``POST /admin/reload`` both call it, and a load awaits a
        thread (and a scorer's start, seconds on a busy machine) during which another call would
        plan from the stage being replaced, and the slower load would undo the newer pointer."""
        async with self.locks.setdefault(slot.name, asyncio.Lock()):
            await self._follow(slot, force)

    async def _follow(self, slot, force: bool) -> None:
        plan = self._plan(slot, force)
        if plan is None:
            return
        old = slot.stage
        new = None
        if plan[0] == "update":  # the same scorer goes on (each batch says its mode)
            old.send()
            old.closed = True  # a request that read it before the swap keeps no copy there (never sent)
            new = Stage(plan[1], old.model, plan[3], plan[2])
            new.mirrored, new.dropped, new.failed = old.mirrored, old.dropped, old.failed
            new.scorer, new.started = old.scorer, old.started
            new.frames_fd, new.scored_here, old.frames_fd = old.frames_fd, old.scored_here, None
            slot.stage = new
            return
        if plan[0] == "load":
            new = await asyncio.to_thread(self._build, slot, *plan[1:])
            if new is None:
                return
        if old is not None:
            slot.stage = None
            await old.close()
        slot.stage = new  # the swap: one reference assignment, as for the champion
        if new is not None:
            log.info("model %s: v%s staged as %s (share %s)", slot.name, new.version, new.mode, new.share)
        else:
            log.info("model %s: staged v%s unloaded", slot.name, old.version)

    def _tend(self, stage: Stage, now: float) -> None:
        """Every tick: send the batch, read the scorer's counts, restart a scorer that died."""
        stage.send()
        scorer = stage.scorer
        if scorer is not None:
            scorer.read_status()
            if not scorer.alive():
                log.error(
                    "the shadow scorer of v%s exited (%s); mirrored rows are dropped until it restarts",
                    stage.version,
                    scorer.proc.returncode,
                )
                scorer.close(None, timeout=1)
                stage.scorer = None
        if stage.scorer is None and stage.failed is None and now - stage.started >= RESTART_SECONDS:
            self._start_scorer(stage)

    async def run_forever(self, poll_seconds: float) -> None:
        last_poll = time.monotonic()
        while True:
            staged = any(slot.stage is not None for slot in self.slots.values())
            await asyncio.sleep(SEND_SECONDS if staged else IDLE_TICK_SECONDS)
            now = time.monotonic()
            poll = now - last_poll >= poll_seconds
            for slot in self.slots.values():
                try:
                    if slot.stage is not None:
                        self._tend(slot.stage, now)
                    if poll:
                        await self.follow(slot)
                except Exception:  # noqa: BLE001
                    log.exception("staging of %s failed", slot.name)
            if poll:
                last_poll = now

    async def close(self) -> None:
        for slot in self.slots.values():
            stage, slot.stage = slot.stage, None
            if stage is not None:
                await stage.close()
