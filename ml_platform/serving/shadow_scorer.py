"""The shadow scorer: a child process of one endpoint worker that scores the requests mirrored to a
staged candidate that the worker does not score itself (a shadow's single-row copies are scored in
the worker after the answer, ``staging.Stage.score_due``): larger requests, a canary's copies, a
candidate too slow for the worker. It writes their evidence, so none of that holds the worker's GIL.

Scoring a batch in the worker with its evidence line is ~0.8 ms of GIL-holding Python per ~220
rows; on the event loop it stalled every request behind it (p99 at 1 connection 0.32 -> 1.8 ms), in
a thread it fought the loop for the GIL (measured, benchmarks/README.md "Shadow cost"). For what it
sends here, the worker pays an O(1) append of a small record per copy and, every
``SEND_SECONDS``, one non-blocking ``os.write`` of the batch to this process's stdin
(``ScorerProcess.send``). A full pipe drops the batch and counts it: nothing
queues without limit. The scorer runs at a lower priority (``NICE``): under overload it falls
behind and the worker drops, rather than the champion waiting for CPU.

Messages (pickled, each framed by its length): ``(head, records)``. ``head``: mode, candidate and
champion versions, the champion's feature plan (``Schema._plan``: the rows are that schema's
validated values), id column, the answered outputs' dtypes, time, the worker's dropped count.
``records``: one ``marshal`` record (version 2) per request, written on the request path while its objects are
hot: request id (None: made up here), a single-row request's values ``(numbers, categories)`` or a
larger request's pickled feeds, ids, the outputs the client got as lists (shadow: the champion's,
canary: the candidate's) and, canary, the candidate's live latency. The scorer runs the other
model (shadow: the candidate, canary: the champion) and writes the files
``core/staging.read_evidence`` reads, named by the worker's pid (``staging.py``'s docstring). It
exits when its stdin closes: the worker unstaged the candidate, shut down, or died (kill -9
included); what it has read is written first.
"""

from __future__ import annotations

import json
import logging
import marshal
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson

from ml_platform.serving.heap import freeze_heap
from ml_platform.serving.model import LoadedModel, load_version
from ml_platform.serving.requests import views
from ml_platform.serving.store import ModelStore, atomic_write

log = logging.getLogger("ml_platform.serving")

PIPE_BYTES = 1 << 20  # the pipe's capacity (Linux F_SETPIPE_SZ; 1 MiB is the unprivileged limit)
NICE = 10  # the scorer yields the CPU to the worker (and to everything at the default priority)
FLUSH_SECONDS = 2.0  # evidence and stats written this often (and at exit)
# The scorer wakes at most this often and takes what the pipe holds (up to ~9,000 single-row
# records: ~45,000 mirrored requests a second before the worker drops). Every wake-up beside the
# worker showed in its p99 at 1 connection: waking for each 20-ms batch, 0.15 -> 0.71 ms; every
# 0.2 s, 0.21 -> 0.45 ms (benchmarks/README.md "Shadow cost").
WAKE_SECONDS = 0.2
LATENCY_SAMPLE_SECONDS = 0.5  # shadow: one single-row call of the candidate timed this often
_FRAME = struct.Struct("<I")
_COUNT = struct.Struct("<i")  # marshal's list length
_F_SETPIPE_SZ = 1031
_OPTS = orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


def frame(msg: tuple) -> bytes:
    """One message for the pipe. Pickle is safe here: only the worker writes to its scorer's stdin,
    and the scorer unpickles nothing else."""
    body = pickle.dumps(msg, protocol=5)
    return _FRAME.pack(len(body)) + body


# ---------------------------------------------------------------------------- the worker's side
class ScorerProcess:
    """The worker's handle on its scorer: start, non-blocking send, status, stop."""

    def __init__(self, store_root: Path, name: str, version: int, out_dir: Path, latency_budget_ms: float | None):
        args = {
            "store": str(store_root),
            "model": name,
            "version": int(version),
            "out": str(out_dir),
            "budget": latency_budget_ms,
            "parent": os.getpid(),
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ml_platform.serving.shadow_scorer", json.dumps(args)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self.fd = self.proc.stdin.fileno()
        os.set_blocking(self.fd, False)
        try:
            import fcntl

            fcntl.fcntl(self.fd, _F_SETPIPE_SZ, PIPE_BYTES)
        except (ImportError, OSError):  # not Linux, or over the limit: the default 64 KiB
            pass
        self.status_fd = self.proc.stdout.fileno()
        os.set_blocking(self.status_fd, False)
        self.backlog = b""  # the rest of a frame the pipe took only part of (at most one frame)
        self.scored = self.errors = 0
        self.ready = False  # its first status line: the candidate is loaded

    def send(self, data: bytes) -> bool:
        """Non-blocking. -> False when the pipe is full or the scorer is gone: the caller drops."""
        try:
            if self.backlog:
                n = os.write(self.fd, self.backlog)
                self.backlog = self.backlog[n:]
                if self.backlog:
                    return False
            n = os.write(self.fd, data)
        except BlockingIOError:
            return False
        except OSError:  # BrokenPipeError: the scorer died (Stages restarts it)
            return False
        if n < len(data):
            self.backlog = data[n:]
        return True

    def read_status(self) -> None:
        """The scorer's last "scored errors" line (it writes one per batch, never blocking)."""
        try:
            got = os.read(self.status_fd, 65536)
        except (BlockingIOError, OSError):
            return
        lines = got.split(b"\n")
        last = lines[-2] if len(lines) > 1 else b""
        if last:
            self.ready = True
            scored, errors = last.split()
            self.scored, self.errors = int(scored), int(errors)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self, last: bytes | None, timeout: float = 30.0) -> None:
        """Blocking (run it in a thread): hand over what is left, close the pipe and wait for the
        scorer to write its evidence and exit."""
        try:
            os.set_blocking(self.fd, True)
            if self.backlog:
                os.write(self.fd, self.backlog)
            if last:
                os.write(self.fd, last)
        except OSError:
            pass
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("shadow scorer %s did not finish in %ss: killed", self.proc.pid, timeout)
            self.proc.kill()
            self.proc.wait()
        self.read_status()
        self.proc.stdout.close()


# ---------------------------------------------------------------------------- the scorer
class Scorer:
    """Scores mirrored batches with the other model and collects their evidence lines."""

    def __init__(self, store: ModelStore, name: str, version: int, out: Path, budget, parent: int):
        self.store, self.name, self.version, self.dir, self.budget = store, name, version, out, budget
        self.parent = parent
        self.candidate = load_version(store, name, version, budget)
        self.champions: dict[int, LoadedModel] = {}
        self.lines: list[bytes] = []
        self.mirrored = self.dropped = self.errors = 0
        self.mode = "shadow"
        self.last_sample = 0.0
        self.boot = f"{parent:x}{int(time.time()) % 100000:x}s"
        self.count = 0
        self.stats_dirty = False

    def _champion(self, version: int) -> LoadedModel:
        """Canary: the champion scores the candidate's rows (loaded here once per version)."""
        got = self.champions.get(version)
        if got is None:
            self.champions = {version: load_version(self.store, self.name, version, self.budget)}
            got = self.champions[version]
        return got

    def handle(self, msg: tuple) -> None:
        head, body = msg
        self.mode = head["mode"]
        self.dropped = max(self.dropped, int(head["dropped"]))
        self.stats_dirty = True
        if not body:
            return
        records = marshal.loads(b"[" + _COUNT.pack(head["records"]) + body)  # one list: ~1 µs a record
        rids = [r[0] for r in records]
        rows = [r[1] if type(r[1]) is tuple else pickle.loads(r[1]) for r in records]
        ids = [r[2] for r in records]
        answered = [
            np.array([v for r in records for v in r[3][j]], dtype=np.dtype(dt)) for j, dt in enumerate(head["dtypes"])
        ]
        ms = [r[4] for r in records]
        canary = self.mode == "canary"
        plan = head["plan"]
        ns = [1 if type(r) is tuple else len(next(iter(r.values()))) for r in rows]
        total = sum(ns)
        feeds = _feeds(plan, rows)
        alone_ms = err = outs = None
        try:
            other = self.candidate if not canary else self._champion(int(head["champion"]))
            now = time.monotonic()
            if not canary and ns[0] == 1 and now - self.last_sample >= LATENCY_SAMPLE_SECONDS:
                self.last_sample = now  # a single-row latency sample of the shadow
                t0 = time.perf_counter()
                other.run({k: v[:1] for k, v in feeds.items()})
                alone_ms = round((time.perf_counter() - t0) * 1000, 4)
            if other.batchable:
                outs = other.run(feeds)
            else:  # rows that must not share a call (a transform that looks across rows)
                parts = [other.run(_feeds(plan, [r])) for r in rows]
                outs = [np.concatenate(p) for p in zip(*parts)]
        except Exception as e:  # noqa: BLE001 - the other model's failure is evidence
            err = f"{type(e).__name__}: {str(e)[:200]}"
            outs = None
            self.errors += total
        rid_out = []
        for rid, n in zip(rids, ns):
            if rid is None:
                self.count += 1
                rid = f"{self.boot}-{self.count}"
            rid_out.extend([rid] if n == 1 else [f"{rid}/{r}" for r in range(n)])
        idc = head["id_column"]
        id_out = None
        if idc:
            id_out = []
            for got, n in zip(ids, ns):
                id_out.extend(got if got is not None else [None] * n)
        champ, cand = (answered, outs) if not canary else (outs, answered)
        line = {
            "ts": datetime.fromtimestamp(head["ts"], UTC).isoformat(timespec="milliseconds"),
            "mode": self.mode,
            "candidate": self.version,
            "champion": int(head["champion"]),
            "rows": total,
            "rid": rid_out,
            "id_column": idc,
            "id": id_out,
            "features": {
                k: (v.reshape(-1) if v.dtype.kind == "f" else v.reshape(-1).tolist()) for k, v in feeds.items()
            },
            "champion_out": _columns(champ),
            "candidate_out": _columns(cand),
            "candidate_ms": ([m for m, n in zip(ms, ns) for _ in range(n)] if canary else alone_ms),
            "error": err,
        }
        try:
            self.lines.append(orjson.dumps(line, default=str, option=_OPTS))
        except TypeError as e:  # whatever a request smuggled in: skipped, counted
            log.warning("staging evidence of v%s not encodable: %s", self.version, e)
            self.errors += total
        self.mirrored += total

    def flush(self) -> None:
        """Write the evidence collected so far and the stats (named by the worker's pid)."""
        lines, self.lines = self.lines, []
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        try:
            if lines:
                atomic_write(self.dir / f"stage-v{self.version}-{stamp}-{self.parent}.jsonl", b"".join(lines))
            if self.stats_dirty:
                self.stats_dirty = False
                stats = {
                    "version": self.version,
                    "mode": self.mode,
                    "pid": self.parent,
                    "mirrored": self.mirrored,
                    "dropped": self.dropped,
                    "errors": self.errors,
                    "at": datetime.now(UTC).isoformat(timespec="seconds"),
                }
                atomic_write(self.dir / f"stage-v{self.version}-stats-{self.parent}.json", orjson.dumps(stats))
        except OSError as e:
            log.warning("staging evidence of v%s not written to %s: %s", self.version, self.dir, e)


def _feeds(plan: tuple, rows: list) -> dict:
    """The batch's feeds: single-row values stacked (``requests.views``), larger requests' feeds
    concatenated, rows in request order."""
    if all(type(r) is tuple for r in rows):
        nums = list(zip(*[r[0] for r in rows]))
        cats = list(zip(*[r[1] for r in rows]))
        return views(plan, nums, cats, len(rows))
    parts = [views(plan, r[0], r[1], 1) if type(r) is tuple else r for r in rows]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _columns(outs) -> dict | None:
    """A model's outputs for the evidence: {"label", "probabilities"} or {"value"} (numpy arrays)."""
    if outs is None:
        return None
    if len(outs) == 2:
        lab = outs[0]
        return {"label": lab if lab.dtype.kind in "iuf" else lab.tolist(), "probabilities": outs[1]}
    return {"value": np.asarray(outs[0]).reshape(-1)}


_SAME_BATCH = ("mode", "candidate", "champion", "plan", "id_column", "dtypes")


def merged(msgs: list[tuple]) -> list[tuple]:
    """The messages of one wake-up as few batches: consecutive ones of the same champion, mode and
    outputs joined (their records concatenate), so the other model runs once per wake-up rather
    than once per send (~20 % less of the scorer's CPU a row when sends came every 20 ms; a
    scorer that fell behind reads several sends at once)."""
    out: list[tuple] = []
    for head, body in msgs:
        if out and all(out[-1][0][k] == head[k] for k in _SAME_BATCH) and (out[-1][1] or not body):
            last, parts = out[-1]
            last["records"] += head["records"]
            last["dropped"] = max(last["dropped"], head["dropped"])
            parts += body
        else:
            out.append((dict(head), bytearray(body)))
    return out


def _status(scorer: Scorer) -> None:
    try:
        os.write(1, b"%d %d\n" % (scorer.mirrored, scorer.errors))
    except (BlockingIOError, OSError):  # the worker reads when it can; never wait for it
        pass


def _policy() -> int:
    """The scorer's scheduling policy. On one core with its worker (the endpoint pinned, e.g.
    `taskset -c 1 ml-platform serve`; the scorer inherits the worker's CPUs) SCHED_IDLE: it runs
    only while the worker waits and yields the moment a request arrives, so the champion's p99
    does not move (a saturated worker starves it: its rows are dropped and counted). Sharing
    cores with other work, SCHED_IDLE did worse than SCHED_BATCH (benchmarks/README.md "Shadow
    cost"): SCHED_BATCH, which never preempts on waking."""
    return os.SCHED_IDLE if len(os.sched_getaffinity(0)) == 1 else os.SCHED_BATCH


def serve(args: dict) -> int:
    # The worker's process group gets the terminal's and a supervisor's signals: the scorer ends
    # when its stdin closes instead, after writing what it has.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        os.nice(NICE)
        os.sched_setscheduler(0, _policy(), os.sched_param(0))
    except (AttributeError, OSError):
        pass
    parent = int(args["parent"])
    scorer = Scorer(
        ModelStore(Path(args["store"])), args["model"], int(args["version"]), Path(args["out"]), args["budget"], parent
    )
    freeze_heap()
    os.set_blocking(1, False)
    _status(scorer)  # loaded: the worker shows it as ready
    fd = 0
    buf = bytearray()
    last_flush = time.monotonic()
    eof = False
    while not eof:
        ready, _, _ = select.select([fd], [], [], FLUSH_SECONDS)
        if ready:
            chunk = os.read(fd, PIPE_BYTES)
            if not chunk:
                eof = True
            buf += chunk
            start = 0
            msgs = []
            while len(buf) - start >= 4:
                (size,) = _FRAME.unpack_from(buf, start)
                if len(buf) - start - 4 < size:
                    break
                msgs.append(pickle.loads(bytes(buf[start + 4 : start + 4 + size])))
                start += 4 + size
            del buf[:start]
            for msg in merged(msgs):
                scorer.handle(msg)
            _status(scorer)
            if not eof:  # the batches that arrive meanwhile wait in the pipe (see WAKE_SECONDS)
                time.sleep(WAKE_SECONDS)
        now = time.monotonic()
        if eof or now - last_flush >= FLUSH_SECONDS:
            last_flush = now
            scorer.flush()
        if os.getppid() != parent:  # the worker is gone and someone else holds the pipe
            scorer.flush()
            break
    return 0


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s shadow-scorer %(levelname)s %(message)s")
    try:
        return serve(json.loads(argv[1]))
    except Exception:  # noqa: BLE001 - reported in the worker's log, which notices the exit
        log.exception("shadow scorer failed")
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
