"""The scoring endpoint: a Starlette app over ONNX Runtime (DESIGN §3 "Endpoint").

Imports onnxruntime, numpy, orjson and starlette only: never dagster, sklearn, mlflow or
pandas (``ml_platform_tests/serving`` checks this), so it starts fast and loads no pickle.

Routes
------
- ``POST /models/{name}/invocations``  MLflow scoring protocol (``dataframe_split``,
  ``dataframe_records``, ``inputs``) -> ``{"predictions": [...]}``
- ``POST /invocations``                the same, when exactly one model is configured
- ``POST /v2/models/{name}/infer``     Open Inference Protocol (KServe V2)
- ``GET  /v2/models/{name}``           model metadata (+ ``last_rejection``)
- ``GET  /v2/models/{name}/ready``, ``GET /v2/health/live``, ``GET /v2/health/ready``, ``GET /v2``
  (readiness: 200 only when every model with a champion pointer serves exactly the version
  the pointer names; a 503 names the model, the version and the reason)
- ``GET  /metrics``                    Prometheus text format
- ``POST /admin/reload[?model=NAME]``  reload now (Bearer token when ``admin_token`` is set)
- ``GET  /openapi.json``

Every response that used a model carries ``X-Model-Version``. Every error body is
``{"error": {"kind": ..., "field": ..., "message": ...}}``; client errors are 4xx.

Hot reload: a background task stats each model's ``current.json`` every
``poll_seconds``; on change it builds the new version in a new session off the event
loop, validates it (``model.LoadedModel.validate``) and only then swaps the slot's
reference. Requests hold their own reference, so nothing in flight is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import logging
import os
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ml_platform.serving.batching import IN_FLIGHT
from ml_platform.serving.metrics import Metrics
from ml_platform.serving.model import LoadedModel, RejectedModel, load_version
from ml_platform.serving.requests import V2_TYPES, RequestError, _jtype
from ml_platform.serving.sample import LiveSampler
from ml_platform.serving.store import ModelStore

log = logging.getLogger("ml_platform.serving")

INLINE_ROWS = 256  # larger batches run in a worker thread so the event loop stays free
SAMPLE_SLICE = 32  # live-sample requests encoded per event-loop slice
SMOKE_HEADER = b"x-ml-platform-smoke"  # the deploy's smoke rows: answered, not sampled (``smoke_allowed``)
JSON = "application/json"
_perf = time.perf_counter

# ---- hostile requests (issue 9) ----
MAX_JSON_DEPTH = 32  # containers nested deeper than this: 400 (a valid request nests 5 deep)
MAX_ID_CHARS = 256  # an id column value: a string up to this long, a number or null
DRAIN_FACTOR = 16  # after a 413, read and drop up to this many times the limit (at least
DRAIN_MIN_BYTES = 64 << 20  # this much) so a client still sending reads the answer, not a reset
# Bodies above LARGE_BODY_BYTES are decoded, validated, scored and encoded in a worker
# thread, LARGE_CONCURRENCY at a time, in chunks of CHUNK_ROWS rows (JSON decoded in pieces
# of about SPLIT_BYTES), so that no single step holds the GIL for long and single-row
# requests keep being answered between the steps.
LARGE_BODY_BYTES = 64 << 10
LARGE_CONCURRENCY = 1
CHUNK_ROWS = 1024
SPLIT_BYTES = 128 << 10
SWITCH_INTERVAL = 0.0005  # s; CPython's default (5 ms) would let a big request's thread
#                           hold the GIL that long each time the event loop wants it
_ID_TYPES = frozenset((str, int, float, type(None)))


def _bracket_count(raw: bytes) -> int:
    """An upper bound of the nesting depth of a JSON text (brackets inside strings count too)."""
    return raw.count(b"[") + raw.count(b"{")


def _max_depth_bound(raw: bytes, slice_bytes: int = 1 << 20) -> int:
    """A tighter upper bound: the running count of opening minus closing brackets (strings
    included), slice by slice (no numpy call on the whole body holds the GIL for long)."""
    arr = np.frombuffer(raw, dtype=np.uint8)
    depth, top = 0, 0
    for i in range(0, len(arr), slice_bytes):
        a = arr[i:i + slice_bytes]
        step = ((a == 91) | (a == 123)).astype(np.int32) - ((a == 93) | (a == 125))
        run = np.cumsum(step) + depth
        top = max(top, int(run.max()))
        depth = int(run[-1])
    return top


def _too_deep(obj, limit: int = MAX_JSON_DEPTH) -> tuple[str, str] | None:
    """-> (field, path) of the first container nested deeper than ``limit``, or None.
    ``path`` is where it is; ``field`` the request field it belongs to (the path up to its
    last object key, at most 4 steps: ``dataframe_records[0].charges``, ``inputs[0].data``)."""
    stack = [(obj, 1, None, None)]
    while stack:
        entry = stack.pop()
        o, d = entry[0], entry[1]
        if d > limit:
            steps = []
            while entry is not None and entry[3] is not None:
                steps.append(entry[3])
                entry = entry[2]
            steps.reverse()
            last_key = max((i for i, s in enumerate(steps) if isinstance(s, str)), default=0)
            fmt = lambda ss: "".join(f"[{s}]" if isinstance(s, int) else f".{s}" for s in ss).lstrip(".")  # noqa: E731
            path = fmt(steps)
            return (fmt(steps[:min(last_key + 1, 4)]) or "body"), (path if len(path) <= 80 else path[:77] + "...")
        if type(o) is dict:
            for k, v in o.items():
                if type(v) is dict or type(v) is list:
                    stack.append((v, d + 1, entry, k))
        else:
            for i, v in enumerate(o):
                if type(v) is dict or type(v) is list:
                    stack.append((v, d + 1, entry, i))
    return None


def _check_depth(body, raw: bytes) -> None:
    """400 when the decoded ``body`` nests deeper than MAX_JSON_DEPTH (a cheap upper bound
    first: the exact walk only runs when the bytes could nest that deep)."""
    if _bracket_count(raw) > MAX_JSON_DEPTH:
        _raise_too_deep(body)


def _raise_too_deep(body) -> None:
    if type(body) is not dict and type(body) is not list:
        return
    hit = _too_deep(body)
    if hit is not None:
        raise RequestError("too_deep", f"the body nests containers more than {MAX_JSON_DEPTH} levels "
                           f"deep (at {hit[1]}); values must be scalars", hit[0])


def _check_ids(ids, column: str) -> None:
    """An id column value is echoed to the live sample: a string (at most MAX_ID_CHARS),
    a number or null; anything else is a 400 naming the id column."""
    types = set(map(type, ids))
    if types <= _ID_TYPES:
        if str not in types or max(len(v) for v in ids if type(v) is str) <= MAX_ID_CHARS:
            return
    for i, v in enumerate(ids):
        t = type(v)
        if t not in _ID_TYPES:
            raise RequestError("wrong_type", f"row {i}: id column {column!r} must be a string, "
                               f"a number or null, got {_jtype(v)}", column)
        if t is str and len(v) > MAX_ID_CHARS:
            raise RequestError("out_of_schema", f"row {i}: id column {column!r} value has "
                               f"{len(v)} characters, at most {MAX_ID_CHARS} are accepted", column)


_ROW_REF = re.compile(r"^(row|element) (\d+)")
_FIELD_REF = re.compile(r"\[(\d+)\]$")


def _shifted(e: RequestError, offset: int) -> RequestError:
    """The error of a chunk that starts at row ``offset``, renumbered for the whole request."""
    if offset:
        e.message = _ROW_REF.sub(lambda m: f"{m[1]} {int(m[2]) + offset}", e.message, count=1)
        e.args = (e.message,)
        if e.field:
            e.field = _FIELD_REF.sub(lambda m: f"[{int(m[1]) + offset}]", e.field)
    return e


# The shapes a big request usually has, decoded piece by piece (see _loads_large).
_RECORDS_HEAD = re.compile(rb'\A\s*\{\s*"(dataframe_records|inputs|instances)"\s*:\s*\[')
_RECORDS_TAIL = re.compile(rb'\]\s*\}\s*\Z')
_RECORDS_SEP = re.compile(rb'\}\s*,\s*\{')
_SPLIT_HEAD = re.compile(rb'\A\s*\{\s*"dataframe_split"\s*:\s*\{\s*"columns"\s*:\s*(\[[^\[\]]*\])\s*,'
                         rb'\s*"data"\s*:\s*\[')
_SPLIT_TAIL = re.compile(rb'\]\s*\}\s*\}\s*\Z')
_SPLIT_SEP = re.compile(rb'\]\s*,\s*\[')


def _tail(raw: bytes, pattern: re.Pattern, start: int) -> int | None:
    """Where ``pattern`` (anchored at the end) starts, looking at the last 64 bytes only."""
    base = max(start, len(raw) - 64)
    t = pattern.search(raw, base)
    return t.start() if t is not None else None


def _loads_pieces(middle: bytes, sep: re.Pattern, piece_bytes: int) -> list | None:
    """The values of the JSON array whose inside is ``middle``, decoded in pieces of about
    ``piece_bytes`` cut at ``sep`` (between two values), or None when that fails. A cut inside a string never decodes (the piece before
    it ends inside that string), and when every piece decodes, the pieces joined by commas
    are exactly the array's values (JSON's grammar is unambiguous)."""
    out, start, n = [], 0, len(middle)
    while start < n:
        m = sep.search(middle, min(start + piece_bytes, n)) if start + piece_bytes < n else None
        end = m.start() + 1 if m else n
        try:
            part = orjson.loads(b"[" + middle[start:end] + b"]")
        except orjson.JSONDecodeError:
            return None
        out.extend(part)
        if not m:
            break
        start = m.end() - 1
    return out


def _loads_large(raw: bytes, piece_bytes: int = SPLIT_BYTES):
    """``orjson.loads(raw)``, but a ``dataframe_records`` / ``dataframe_split`` body
    is decoded a piece of rows at a time: one ``orjson.loads`` of 10 MB takes ~70 ms, a
    piece ~1 ms. Any other shape, or anything unexpected, is decoded in one go (which also
    gives the JSON error message)."""
    m = _RECORDS_HEAD.match(raw)
    if m:
        end = _tail(raw, _RECORDS_TAIL, m.end())
        if end is not None:
            rows = _loads_pieces(raw[m.end():end], _RECORDS_SEP, piece_bytes)
            if rows is not None:
                return {m.group(1).decode(): rows}
    m = _SPLIT_HEAD.match(raw)
    if m:
        end = _tail(raw, _SPLIT_TAIL, m.end())
        if end is not None:
            try:
                columns = orjson.loads(m.group(1))
            except orjson.JSONDecodeError:
                columns = None
            rows = _loads_pieces(raw[m.end():end], _SPLIT_SEP, piece_bytes) if columns is not None else None
            if rows is not None:
                return {"dataframe_split": {"columns": columns, "data": rows}}
    return orjson.loads(raw)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _json(payload, status: int = 200, headers: dict | None = None) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type=JSON, headers=headers)


def _error(e: RequestError, headers: dict | None = None) -> Response:
    return Response(orjson.dumps(e.body()), status_code=e.status, media_type=JSON, headers=headers)


def _replay(first: dict, receive=None):
    """A ``receive`` that gives ``first`` again, then defers to ``receive``."""
    pending = [first]

    async def again():
        if pending:
            return pending.pop()
        return await receive()

    return again


class _Disconnected(Exception):
    """The client went away before sending the whole body."""


_CT_JSON = (b"content-type", b"application/json")
_CLOSE = (b"connection", b"close")


class _FastPath:
    """Answers the scoring routes without Starlette's router, middleware, Request and
    Response objects; everything else goes on to ``app`` (the Starlette stack).

    :class:`_App` calls it first thing, so a scoring request costs one ``__call__`` and
    ``ServingState.score`` on top of uvicorn."""

    __slots__ = ("app", "state")

    def __init__(self, app, state: "ServingState"):
        self.app = app
        self.state = state

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "POST":
            path = scope["path"]
            root = scope.get("root_path")
            if root and path.startswith(root):
                path = path[len(root):]
            name = protocol = None
            if path.startswith("/models/") and path.endswith("/invocations"):
                name, protocol = path[8:-12], "mlflow"
            elif path.startswith("/v2/models/") and path.endswith("/infer"):
                name, protocol = path[11:-6], "v2"
            elif path == "/invocations":
                protocol = "mlflow"
            if protocol is not None and (name is None or (name and "/" not in name)):
                ct = cl = smoke = auth = None
                for k, v in scope["headers"]:
                    if k == b"content-type":
                        ct = v
                    elif k == b"content-length":
                        cl = v
                    elif k == SMOKE_HEADER:
                        smoke = v
                    elif k == b"authorization":
                        auth = v
                try:
                    status, body, version, close = await self.state.score(
                        name, protocol, ct, cl, receive, scope.get(IN_FLIGHT),
                        sample=smoke is None or not self.state.smoke_allowed(auth))
                except _Disconnected:
                    return
                except Exception:  # what ServerErrorMiddleware would do: log, answer 500
                    log.exception("unhandled error on POST %s", scope["path"])
                    status, version, close = 500, None, False
                    body = orjson.dumps(RequestError("internal", "internal error (logged by the "
                                                     "server)", None, 500).body())
                headers = [_CT_JSON, (b"content-length", b"%d" % len(body))]
                if version is not None:
                    headers.append((b"x-model-version", version))
                if close:  # the rest of the request was not read: this connection is done
                    headers.append(_CLOSE)
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


class _App(Starlette):
    """Starlette with the scoring fast path in front of its whole stack."""

    fast: _FastPath | None = None

    async def __call__(self, scope, receive, send):
        fast = self.fast
        if fast is not None:
            await fast(scope, receive, send)
        else:
            await Starlette.__call__(self, scope, receive, send)


class _StarletteStack:
    """The rest of the app behind the fast path: ``Starlette.__call__`` (sets
    ``scope["app"]``, builds the middleware stack once)."""

    __slots__ = ("app",)

    def __init__(self, app: Starlette):
        self.app = app

    async def __call__(self, scope, receive, send):
        await Starlette.__call__(self.app, scope, receive, send)


class Slot:
    """One configured model: the version serving now and what the poller has seen.

    ``pending`` is set while the pointer names a version that is not the one serving:
    ``{"version": N, "reason": ...}`` (being loaded, or rejected and why); readiness
    reports it."""

    __slots__ = ("name", "model", "pointer_sig", "last_rejection", "pending", "lock")

    def __init__(self, name: str):
        self.name = name
        self.model: LoadedModel | None = None
        self.pointer_sig = None
        self.last_rejection: dict | None = None
        self.pending: dict | None = None
        self.lock: asyncio.Lock | None = None


class ServingState:
    def __init__(self, serving_dir: Path, models: list[str], *, admin_token: str | None,
                 max_body_bytes: int, poll_seconds: float, sample_dir: Path | None,
                 latency_budget_ms: float, sample_max_rows: int = 10_000,
                 sample_flush_seconds: float = 5.0, sample_rows_per_second: float | None = None,
                 sample_max_bytes: int | None = None, body_timeout_seconds: float = 30.0):
        if not models:
            raise ValueError("at least one model name is required")
        self.store = ModelStore(Path(serving_dir))
        for m in models:
            self.store.model_dir(m)  # validates the name
        self.slots = {m: Slot(m) for m in models}
        self.only = models[0] if len(models) == 1 else None
        self.admin_token = admin_token or None
        self.max_body_bytes = int(max_body_bytes)
        self.small_body = min(self.max_body_bytes, LARGE_BODY_BYTES)  # decoded on the event loop
        self.body_timeout = float(body_timeout_seconds)
        self._large_sem: asyncio.Semaphore | None = None
        self._large_pool: ThreadPoolExecutor | None = None
        self.poll_seconds = float(poll_seconds)
        self.latency_budget_ms = float(latency_budget_ms)
        self.metrics = Metrics()
        self.metrics.gauges = self._gauges
        self.sampler = (LiveSampler(Path(sample_dir), sample_max_rows, sample_rows_per_second, sample_max_bytes)
                        if sample_dir else None)
        self.sample_flush_seconds = sample_flush_seconds
        self._tasks: list[asyncio.Task] = []

    # ------------------------------------------------------------------ loading
    def _gauges(self) -> dict:
        return {n: (s.model.version if s.model else None, s.model is not None) for n, s in self.slots.items()}

    def _pointer_sig(self, name: str):
        try:
            st = os.stat(self.store.pointer_path(name))
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _result(self, slot: Slot, status: str, version, reason: str | None = None) -> dict:
        return {"version": version, "status": status, "reason": reason,
                "serving_version": slot.model.version if slot.model else None}

    def _plan(self, slot: Slot, force: bool):
        """-> None (nothing changed), ("done", result) or ("load", version, pointer)."""
        sig = self._pointer_sig(slot.name)
        if not force and sig == slot.pointer_sig:
            return None
        slot.pointer_sig = sig
        if sig is None:
            return ("done", self._unload(slot))
        try:
            ptr = self.store.current(slot.name)
        except (OSError, ValueError) as e:
            return ("done", self._reject(slot, None, f"unreadable pointer: {e}"))
        if ptr is None:
            return ("done", self._unload(slot))
        v = ptr["version"]
        if slot.model is not None and slot.model.version == v:
            slot.model.pointer = ptr
            slot.pending = None
            return ("done", self._result(slot, "unchanged", v))
        slot.pending = {"version": v, "reason": f"v{v} is being loaded"}
        return ("load", v, ptr)

    def _unload(self, slot: Slot) -> dict:
        """No pointer: no champion. A model that was serving stops (the pointer was removed
        on purpose, e.g. the first deploy of a model was rolled back)."""
        slot.pending = None
        if slot.model is None:
            return self._result(slot, "unchanged", None, "no champion published")
        old, slot.model = slot.model, None
        self.metrics.reload(slot.name, "unloaded")
        log.warning("model %s: champion pointer removed, v%s unloaded", slot.name, old.version)
        return self._result(slot, "unloaded", None, f"champion pointer removed; v{old.version} unloaded")

    def _reject(self, slot: Slot, version, reason: str) -> dict:
        slot.last_rejection = {"version": version, "reason": reason, "at": _now()}
        slot.pending = {"version": version, "reason": (f"v{version} rejected: {reason}" if version is not None
                                                       else reason)}
        self.metrics.reload(slot.name, "rejected")
        log.error("model %s v%s rejected (%s; not ready): %s", slot.name, version,
                  f"v{slot.model.version} keeps serving" if slot.model else "nothing serving", reason)
        return self._result(slot, "rejected", version, reason)

    def _accept(self, slot: Slot, model: LoadedModel) -> dict:
        model.batcher.observe = self.metrics.batch_rows(slot.name)
        old = slot.model
        slot.model = model  # the swap: one reference assignment
        slot.pending = None
        self.metrics.reload(slot.name, "loaded")
        log.info("model %s v%s loaded (was %s; single-row p99 %.3f ms)", slot.name, model.version,
                 f"v{old.version}" if old else "none", model.last_latency_ms.get("p99", float("nan")))
        return self._result(slot, "loaded", model.version)

    def _load(self, slot: Slot, version: int, ptr: dict | None) -> LoadedModel:
        return load_version(self.store, slot.name, version, self.latency_budget_ms, ptr)

    def initial_load(self) -> dict:
        """Synchronous load at startup: each model's champion, exactly the version its
        pointer names. A champion that cannot be loaded (a missing or corrupt file, a failed
        validation) is rejected and reported by readiness; nothing else is loaded in its
        place (no fallback to an earlier version: the pointer is the one source of truth)."""
        results = {}
        for slot in self.slots.values():
            plan = self._plan(slot, force=True)
            if plan[0] == "done":
                results[slot.name] = plan[1]
                if plan[1]["status"] == "unchanged":
                    log.info("model %s: no champion published, nothing to serve", slot.name)
                continue
            _, v, ptr = plan
            try:
                results[slot.name] = self._accept(slot, self._load(slot, v, ptr))
            except RejectedModel as e:
                results[slot.name] = self._reject(slot, v, e.reason)
            except Exception as e:  # noqa: BLE001 - one broken model must not stop the others
                log.exception("loading %s v%s failed", slot.name, v)
                results[slot.name] = self._reject(slot, v, f"unexpected error: {e}")
        return results

    async def reload(self, slot: Slot, force: bool = False) -> dict | None:
        if slot.lock is None:
            slot.lock = asyncio.Lock()
        async with slot.lock:
            plan = self._plan(slot, force)
            if plan is None:
                return None
            if plan[0] == "done":
                return plan[1]
            _, v, ptr = plan
            try:
                model = await asyncio.to_thread(self._load, slot, v, ptr)
            except RejectedModel as e:
                return self._reject(slot, v, e.reason)
            except Exception as e:  # noqa: BLE001 - never let a bad file kill the poller
                log.exception("loading %s v%s failed", slot.name, v)
                return self._reject(slot, v, f"unexpected error: {e}")
            return self._accept(slot, model)

    # ------------------------------------------------------------ background
    async def _poll_loop(self) -> None:
        while True:
            await asyncio.sleep(self.poll_seconds)
            for slot in self.slots.values():
                try:
                    await self.reload(slot)
                except Exception:  # noqa: BLE001
                    log.exception("polling %s failed", slot.name)

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.sample_flush_seconds)
            try:
                await self.flush_sample()
            except Exception:  # noqa: BLE001
                log.exception("live sample flush failed")

    async def flush_sample(self) -> dict:
        if self.sampler is None:
            return {}
        items, dropped = self.sampler.take()
        for m, d in dropped.items():
            self.metrics.sampled(m, 0, d)
        if not items:
            return {}
        lines: dict[str, list[bytes]] = {}
        for i in range(0, len(items), SAMPLE_SLICE):
            self.sampler.encode(items[i:i + SAMPLE_SLICE], lines)
            await asyncio.sleep(0)  # let requests in between slices
        for m, bad in self.sampler.take_unwritable().items():
            self.metrics.sampled(m, 0, 0, bad)
            log.warning("live sample: %d row(s) of %s could not be encoded and were skipped", bad, m)
        written = await asyncio.to_thread(self.sampler.write_lines, lines)
        for m, r in written.items():
            self.metrics.sampled(m, r, 0)
        return written

    @contextlib.asynccontextmanager
    async def lifespan(self, app):
        # Everything loaded so far (modules, sessions, schemas) lives as long as the process:
        # move it out of the collector's reach, and collect young garbage less often, so a
        # request rarely pays for a full scan of the heap.
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 20, 100)
        # A big request works in a thread (_score_large): let the event loop have the GIL
        # back within SWITCH_INTERVAL rather than CPython's 5 ms.
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL))
        self._tasks = [asyncio.create_task(self._poll_loop(), name="ml_platform-poll")]
        if self.sampler is not None:
            self._tasks.append(asyncio.create_task(self._flush_loop(), name="ml_platform-sample"))
        try:
            yield
        finally:
            for t in self._tasks:
                t.cancel()
            for t in self._tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            self._tasks = []
            if self._large_pool is not None:
                self._large_pool.shutdown(wait=False)
                self._large_pool = self._large_sem = None
            if self.sampler is not None:
                items, _ = self.sampler.take()
                if items:
                    self.sampler.write(items)

    # ------------------------------------------------------------- requests
    async def _read_body(self, ct: bytes | None, cl: bytes | None, receive) -> bytes:
        """The whole body, or a RequestError (415, 413, 408). An error found before the body
        has arrived is raised only once the rest is read and dropped (``_drain``): a client
        that sends its whole body before it reads (``urllib`` with ``Connection: close``)
        would otherwise get a connection reset instead of the answer."""
        if ct != b"application/json" and (ct is None or ct.split(b";", 1)[0].strip().lower()
                                           != b"application/json"):
            shown = ct.decode("latin-1") if ct is not None else None
            err = RequestError("unsupported_media_type", "send the body as JSON with the header "
                               f"'Content-Type: application/json' (got {shown!r})", "content-type", 415)
            await self._drain(receive, err)
            raise err
        limit = self.max_body_bytes
        if cl is not None:
            try:
                declared = int(cl)
            except ValueError:
                raise RequestError("bad_request", "invalid Content-Length", "content-length") from None
            if declared > limit:
                err = RequestError("payload_too_large", f"the body has {declared} bytes, the limit is "
                                   f"{limit} (serving.max_body_bytes)", "body", 413)
                await self._drain(receive, err, declared=declared)
                raise err
        msg = await receive()  # the server's read timeout covers a first chunk that never comes
        deadline = None
        chunks, size = [], 0
        while True:
            if msg["type"] == "http.disconnect":
                raise _Disconnected
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > limit:
                err = RequestError("payload_too_large", f"the body exceeds the limit of {limit} bytes "
                                   "(serving.max_body_bytes)", "body", 413)
                if msg.get("more_body", False):
                    await self._drain(receive, err, received=size)
                raise err
            chunks.append(chunk)
            if not msg.get("more_body", False):
                break
            if deadline is None:
                deadline = asyncio.get_running_loop().time() + self.body_timeout
            msg = await self._receive_by(receive, deadline)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _receive_by(self, receive, deadline: float) -> dict:
        """The next body message, or a 408 (and the connection closed) after ``deadline``."""
        try:
            return await asyncio.wait_for(receive(), max(0.0, deadline - asyncio.get_running_loop().time()))
        except asyncio.TimeoutError:
            err = RequestError("timeout", f"the body did not arrive within {self.body_timeout:g} s "
                               "(serving.body_timeout_seconds)", "body", 408)
            err.close = True
            raise err from None

    async def _drain(self, receive, err: RequestError, declared: int | None = None, received: int = 0) -> None:
        """Read and drop the rest of the body before answering ``err``: at most DRAIN_FACTOR
        times the limit (DRAIN_MIN_BYTES at least) within ``body_timeout``. When that is not
        enough, ``err.close`` asks for the connection to be closed after the answer."""
        cap = max(DRAIN_MIN_BYTES, DRAIN_FACTOR * self.max_body_bytes)
        if declared is not None and declared > cap:
            err.close = True
            return
        deadline = asyncio.get_running_loop().time() + self.body_timeout
        while received <= cap:
            try:
                msg = await self._receive_by(receive, deadline)
            except RequestError:
                break
            if msg["type"] == "http.disconnect":
                raise _Disconnected
            received += len(msg.get("body", b""))
            if not msg.get("more_body", False):
                return
        err.close = True

    @staticmethod
    def _decode(raw: bytes):
        if not raw or raw.isspace():
            raise RequestError("empty_body", "the body is empty (expected a JSON object)", "body")
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise RequestError("invalid_json", f"the body is not valid JSON: {e}", "body") from None
        _check_depth(body, raw)
        return body

    def _resolve(self, name: str | None):
        """-> the LoadedModel serving ``name``, or an error (RequestError)."""
        if name is None:
            if self.only is None:
                self.metrics.error("_unknown", "", "model_required")
                return RequestError(
                    "model_required", f"{len(self.slots)} models are served here "
                    f"({', '.join(sorted(self.slots))}): POST /models/<name>/invocations", "model", 400)
            name = self.only
        slot = self.slots.get(name)
        if slot is None:
            self.metrics.error("_unknown", "", "unknown_model")
            return RequestError("unknown_model", f"unknown model {name!r}; this endpoint "
                                f"serves {sorted(self.slots)}", "model", 404)
        model = slot.model
        if model is None:
            self.metrics.error(name, "", "no_champion")
            reason = (f"; last rejection: {slot.last_rejection['reason']}" if slot.last_rejection else "")
            return RequestError("no_champion", f"model {name!r} has no champion loaded yet" + reason,
                                "model", 503)
        return model

    def smoke_allowed(self, authorization: bytes | None) -> bool:
        """A request marked as the deploy's smoke test stays out of the live sample: with an
        admin token configured, only when it also carries that token (clients cannot hide
        their traffic from drift monitoring)."""
        if self.admin_token is None:
            return True
        scheme, _, token = (authorization or b"").partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.admin_token.encode())

    async def score(self, name: str | None, protocol: str, ct: bytes | None, cl: bytes | None,
                    receive, in_flight=None, sample: bool = True) -> tuple[int, bytes, bytes | None, bool]:
        """The hot path. -> (status, JSON body, X-Model-Version or None, close the connection).
        ``in_flight``: the server's requests in flight, when it says (``batching.IN_FLIGHT``).
        ``sample`` False: answered and counted, but not added to the live sample (smoke rows)."""
        t0 = _perf()
        slot = self.slots.get(name if name is not None else self.only)
        model = slot.model if slot is not None else None
        if model is None:
            err = self._resolve(name)
            await self._drain(receive, err)
            return err.status, orjson.dumps(err.body()), None, getattr(err, "close", False)
        hot = model.hot.get(protocol)
        if hot is None:
            hot = model.hot[protocol] = self.metrics.hot(model.name, model.version_str, protocol)
        try:
            body = raw = None
            if ct == b"application/json":  # the common case: one small body chunk
                msg = await receive()
                data = msg.get("body", b"")
                if (not msg.get("more_body", False) and msg["type"] == "http.request"
                        and 0 < len(data) <= self.small_body
                        and (cl is None or cl.isdigit() and int(cl) <= self.max_body_bytes)):
                    try:
                        body = orjson.loads(data)
                    except orjson.JSONDecodeError:
                        body = None
                    if body is None:  # invalid JSON, whitespace or a literal null: the slow way
                        body = self._decode(data)
                    elif data.count(b"[") + data.count(b"{") > MAX_JSON_DEPTH:
                        _check_depth(body, data)
                else:
                    raw = await self._read_body(ct, cl, _replay(msg, receive))
            else:
                raw = await self._read_body(ct, cl, receive)
            if raw is not None:
                if len(raw) > LARGE_BODY_BYTES:
                    return await self._score_large(model, hot, protocol, raw, t0, sample)
                body = self._decode(raw)
            if protocol == "mlflow":
                parsed = model.schema.parse_mlflow(body)
                wanted = rid = None
            else:
                parsed, wanted, rid = model.schema.parse_v2(body)
                model.check_outputs(wanted)
            ids = parsed.ids
            if ids is not None:
                if parsed.n != 1:
                    _check_ids(ids, model.schema.id_column)
                else:
                    v = ids[0]
                    t = type(v)
                    if not ((t is str and len(v) <= MAX_ID_CHARS) or t is int or t is float or v is None):
                        _check_ids(ids, model.schema.id_column)
            if parsed.n == 1 and model.batchable and (in_flight is None or len(in_flight) > 1):
                outs = await model.batcher.submit(parsed)  # shares a call with its neighbours
            elif parsed.n > INLINE_ROWS:
                outs = await run_in_threadpool(model.run, parsed.feeds)
            else:
                outs = model.run(parsed.feeds)
        except RequestError as e:
            self.metrics.error(model.name, model.version_str, e.kind)
            return e.status, orjson.dumps(e.body()), model.version_bytes, getattr(e, "close", False)
        except _Disconnected:
            raise
        except Exception as e:  # noqa: BLE001 - a model failure, not the client's
            log.exception("inference failed for %s v%s", model.name, model.version)
            self.metrics.error(model.name, model.version_str, "inference_failed")
            err = RequestError("inference_failed", f"the model failed on this input: {str(e)[:200]}",
                               None, 500)
            return 500, orjson.dumps(err.body()), model.version_bytes, False
        n = parsed.n
        if model.classification:
            if n == 1:  # one row: build the answer and the class count from Python scalars
                label = outs[0].tolist()[0]
                if protocol == "mlflow":
                    out = orjson.dumps({"predictions": [
                        {"label": label, "probabilities": dict(zip(model.class_keys, outs[1].tolist()[0]))}]})
                else:
                    out = orjson.dumps(self._v2_payload(model, outs, n, wanted, rid))
                key = model.label_key(label)
                classes = hot.classes
                classes[key] = classes.get(key, 0) + 1
            else:
                out = orjson.dumps({"predictions": model.mlflow_predictions(outs)} if protocol == "mlflow"
                                   else self._v2_payload(model, outs, n, wanted, rid))
                self.metrics.predicted_classes(hot.classes, outs[0])
        else:
            out = orjson.dumps({"predictions": model.mlflow_predictions(outs)} if protocol == "mlflow"
                               else self._v2_payload(model, outs, n, wanted, rid))
            self.metrics.predicted_values(model.name, model.version_str, outs[0].reshape(-1),
                                          model.value_buckets)
        if sample and self.sampler is not None:
            self.sampler.add(model, parsed, outs)
        hot.requests += 1
        hot.rows += n
        hot.latency.observe(_perf() - t0)
        return 200, out, model.version_bytes, False

    # ------------------------------------------------------- big requests
    async def _score_large(self, model: LoadedModel, hot, protocol: str, raw: bytes, t0: float,
                           sample: bool = True):
        """A big body: everything but the accounting runs in a worker thread (``_large_work``),
        LARGE_CONCURRENCY requests at a time, so single-row requests keep their latency."""
        if self._large_sem is None:
            self._large_sem = asyncio.Semaphore(LARGE_CONCURRENCY)
            self._large_pool = ThreadPoolExecutor(LARGE_CONCURRENCY, thread_name_prefix="ml_platform-large")
        async with self._large_sem:
            out, n, samples, classes, values = await asyncio.get_running_loop().run_in_executor(
                self._large_pool, self._large_work, model, protocol, raw)
        if classes:
            counts = hot.classes
            for k, c in classes.items():
                counts[k] = counts.get(k, 0) + c
        if values is not None:
            self.metrics.predicted_values(model.name, model.version_str, values, model.value_buckets)
        if sample and self.sampler is not None:
            self.sampler.add_many(model, samples)
        hot.requests += 1
        hot.rows += n
        hot.latency.observe(_perf() - t0)
        return 200, out, model.version_bytes, False

    @staticmethod
    def _chunks(body, protocol: str):
        """-> [(first row, request body of those rows)]: an MLflow row list longer than
        CHUNK_ROWS in pieces of CHUNK_ROWS rows, anything else whole."""
        if protocol == "mlflow" and type(body) is dict and len(body) == 1:
            key, payload = next(iter(body.items()))
            if key in ("dataframe_records", "inputs", "instances") and type(payload) is list:
                rows = payload
                wrap = lambda part: {key: part}  # noqa: E731
            elif key == "dataframe_split" and type(payload) is dict and type(payload.get("data")) is list:
                rows = payload["data"]
                wrap = lambda part: {key: {**payload, "data": part}}  # noqa: E731
            else:
                rows = None
            if rows is not None and len(rows) > CHUNK_ROWS:
                return [(i, wrap(rows[i:i + CHUNK_ROWS])) for i in range(0, len(rows), CHUNK_ROWS)]
        return [(0, body)]

    def _large_work(self, model: LoadedModel, protocol: str, raw: bytes):
        """In a worker thread: decode (in pieces), validate, score and encode a big request,
        CHUNK_ROWS rows at a time; no step holds the GIL for more than a few ms (ONNX Runtime
        releases it). -> (response body, rows, live-sample items, class counts, regression values).
        Errors name the row of the whole request."""
        try:
            body = _loads_large(raw)
        except orjson.JSONDecodeError as e:
            raise RequestError("invalid_json", f"the body is not valid JSON: {e}", "body") from None
        if _bracket_count(raw) > MAX_JSON_DEPTH and _max_depth_bound(raw) > MAX_JSON_DEPTH:
            _raise_too_deep(body)
        schema = model.schema
        samples, classes, values, parts, n = [], {}, [], [], 0
        for offset, part in self._chunks(body, protocol):
            try:
                if protocol == "mlflow":
                    parsed = schema.parse_mlflow(part)
                else:
                    parsed, wanted, rid = schema.parse_v2(part)
                    model.check_outputs(wanted)
                if parsed.ids is not None:
                    _check_ids(parsed.ids, schema.id_column)
            except RequestError as e:
                raise _shifted(e, offset) from None
            outs = model.run(parsed.feeds)
            if protocol == "mlflow":
                parts.append(orjson.dumps(model.mlflow_predictions(outs))[1:-1])
            else:
                parts.append(orjson.dumps(self._v2_payload(model, outs, parsed.n, wanted, rid)))
            if model.classification:
                Metrics.predicted_classes(classes, outs[0])
            else:
                values.append(outs[0].reshape(-1))
            if self.sampler is not None:
                samples.append((parsed, outs))
            n += parsed.n
        out = b'{"predictions":[' + b",".join(p for p in parts if p) + b"]}" if protocol == "mlflow" else parts[0]
        return out, n, samples, classes, (np.concatenate(values) if values else None)


    @staticmethod
    def _v2_payload(model: LoadedModel, outs: list, n: int, wanted, rid) -> dict:
        payload = {"model_name": model.name, "model_version": model.version_str,
                   "outputs": model.v2_outputs(outs, n, wanted)}
        if rid is not None:
            payload["id"] = rid
        return payload

    async def _score_route(self, request: Request, name: str | None, protocol: str) -> Response:
        # Normally unreached: _FastPath answers these routes before Starlette's router.
        h = request.headers
        enc = lambda v: v.encode("latin-1") if v is not None else None  # noqa: E731
        smoke = h.get(SMOKE_HEADER.decode()) is not None and self.smoke_allowed(enc(h.get("authorization")))
        status, body, version, close = await self.score(name, protocol, enc(h.get("content-type")),
                                                        enc(h.get("content-length")), request.receive,
                                                        sample=not smoke)
        headers = {"X-Model-Version": version.decode()} if version else {}
        if close:
            headers["Connection"] = "close"
        return Response(body, status_code=status, media_type=JSON, headers=headers)

    # --------------------------------------------------------------- routes
    async def invocations(self, request: Request) -> Response:
        return await self._score_route(request, request.path_params["name"], "mlflow")

    async def invocations_only(self, request: Request) -> Response:
        return await self._score_route(request, None, "mlflow")

    async def v2_infer(self, request: Request) -> Response:
        return await self._score_route(request, request.path_params["name"], "v2")

    async def v2_model(self, request: Request) -> Response:
        name = request.path_params["name"]
        slot = self.slots.get(name)
        if slot is None:
            return _error(RequestError("unknown_model", f"unknown model {name!r}; this endpoint "
                                       f"serves {sorted(self.slots)}", "model", 404))
        m = slot.model
        readiness = self.model_readiness(slot)
        body = {
            "name": name,
            "versions": [str(v) for v in await run_in_threadpool(self.store.versions, name)],
            "platform": "onnxruntime",
            "inputs": m.v2_inputs() if m else [],
            "outputs": m.v2_output_meta() if m else [],
            "ready": readiness["ready"],
            "ready_reason": readiness["reason"],
            "champion": readiness["champion"],
            "version": m.version_str if m else None,
            "task": m.task if m else None,
            "classes": m.classes if m else None,
            "id_column": m.schema.id_column if m else None,
            "features": m.meta.get("features") if m else None,
            "metrics": m.meta.get("metrics") if m else None,
            "loaded_at": m.loaded_at if m else None,
            "latency_ms": m.last_latency_ms if m else None,
            "batching": m.batchable if m else None,  # concurrent single-row requests share calls
            "pointer": m.pointer if m else None,
            "last_rejection": slot.last_rejection,
        }
        return _json(body, headers=m.headers if m else None)

    async def v2_model_ready(self, request: Request) -> Response:
        name = request.path_params["name"]
        slot = self.slots.get(name)
        if slot is None:
            return _error(RequestError("unknown_model", f"unknown model {name!r}", "model", 404))
        r = self.model_readiness(slot)
        m = slot.model
        return _json({"name": name, **r}, 200 if r["ready"] else 503, headers=m.headers if m else None)

    async def live(self, request: Request) -> Response:
        return _json({"live": True})

    def model_readiness(self, slot: Slot) -> dict:
        """Is ``slot`` serving exactly the version its champion pointer names (read now)?
        -> {"ready", "loaded", "version" (loaded, or None), "champion" (the pointer's version,
        or None), "reason" (why not, or None), "required" (readiness waits for this model: it
        has a pointer, readable or not)}."""
        m = slot.model
        loaded = m.version if m is not None else None
        out = {"ready": False, "loaded": m is not None, "version": loaded, "champion": None,
               "reason": None, "required": True}
        try:
            ptr = self.store.current(slot.name)
        except (OSError, ValueError) as e:
            out["reason"] = f"unreadable champion pointer: {e}"
            return out
        if ptr is None:
            out["required"] = False
            out["reason"] = "no champion published" + (f" (v{loaded} still loaded)" if m is not None else "")
            return out
        pv = out["champion"] = ptr["version"]
        if loaded == pv:
            out["ready"] = True
            return out
        pend = slot.pending
        if pend is not None and pend.get("version") == pv:
            reason = pend["reason"]
        else:
            reason = f"the champion pointer names v{pv}, which is not loaded yet"
        out["reason"] = reason + (f"; v{loaded} keeps serving" if m is not None else "; nothing serving")
        return out

    def readiness(self) -> tuple[bool, dict]:
        """Ready when every model that has a champion pointer serves exactly the pointer's
        version (a model without a pointer has nothing to wait for)."""
        models = {n: self.model_readiness(s) for n, s in self.slots.items()}
        return all(r["ready"] or not r["required"] for r in models.values()), models

    async def ready(self, request: Request) -> Response:
        ok, models = self.readiness()
        body = {"ready": ok, "models": models}
        if not ok:
            body["reason"] = "; ".join(f"{n}: {r['reason']}" for n, r in models.items()
                                       if r["required"] and not r["ready"])
        return _json(body, 200 if ok else 503)

    async def server_meta(self, request: Request) -> Response:
        return _json({"name": "ml_platform", "version": "1", "extensions": [],
                      "models": sorted(self.slots)})

    async def metrics_route(self, request: Request) -> Response:
        return Response(self.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def admin_reload(self, request: Request) -> Response:
        if self.admin_token is not None:
            auth = request.headers.get("authorization", "")
            scheme, _, token = auth.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(),
                                                                     self.admin_token.encode()):
                return _error(RequestError("unauthorized", "send 'Authorization: Bearer <admin token>'",
                                           "authorization", 401), {"WWW-Authenticate": "Bearer"})
        target = request.query_params.get("model")
        if target is not None and target not in self.slots:
            return _error(RequestError("unknown_model", f"unknown model {target!r}; this endpoint "
                                       f"serves {sorted(self.slots)}", "model", 404))
        names = [target] if target is not None else list(self.slots)
        results = {}
        for n in names:
            results[n] = await self.reload(self.slots[n], force=True)
        return _json({"models": results, "pid": os.getpid()})

    async def openapi(self, request: Request) -> Response:
        return _json(openapi_document(sorted(self.slots)))


async def _http_error(request: Request, exc: HTTPException) -> Response:
    kinds = {404: "not_found", 405: "method_not_allowed"}
    msg = f"{request.method} {request.url.path}: {exc.detail}"
    if exc.status_code == 404:
        msg += " (see GET /openapi.json for the routes)"
    return _error(RequestError(kinds.get(exc.status_code, "http_error"), msg, None, exc.status_code),
                  getattr(exc, "headers", None))


async def _server_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return _error(RequestError("internal", "internal error (logged by the server)", None, 500))


def create_app(serving_dir: Path, models: list[str], *, admin_token: str | None = None,
               max_body_bytes: int = 1_048_576, poll_seconds: float = 1.0,
               sample_dir: Path | None = None, latency_budget_ms: float = 50.0,
               sample_max_rows: int = 10_000, sample_flush_seconds: float = 5.0,
               sample_rows_per_second: float | None = None, sample_max_bytes: int | None = None,
               body_timeout_seconds: float = 30.0) -> Starlette:
    """The endpoint for ``models`` reading ``serving_dir`` (``Settings.serving_dir``).

    Champions are loaded (and validated) here, synchronously; the lifespan starts the
    pointer poller and, with ``sample_dir``, the live-sample flusher. A request body that
    has started must arrive within ``body_timeout_seconds`` (else 408 and the connection
    closes); the server adds its own header/body read limits (``serving/protocol.py``)."""
    state = ServingState(serving_dir, list(models), admin_token=admin_token,
                         max_body_bytes=max_body_bytes, poll_seconds=poll_seconds,
                         sample_dir=sample_dir, latency_budget_ms=latency_budget_ms,
                         sample_max_rows=sample_max_rows, sample_flush_seconds=sample_flush_seconds,
                         sample_rows_per_second=sample_rows_per_second, sample_max_bytes=sample_max_bytes,
                         body_timeout_seconds=body_timeout_seconds)
    state.initial_load()
    routes = [
        Route("/models/{name}/invocations", state.invocations, methods=["POST"]),
        Route("/v2/models/{name}/infer", state.v2_infer, methods=["POST"]),
        Route("/invocations", state.invocations_only, methods=["POST"]),
        Route("/v2/health/live", state.live, methods=["GET"]),
        Route("/v2/health/ready", state.ready, methods=["GET"]),
        Route("/v2/models/{name}", state.v2_model, methods=["GET"]),
        Route("/v2/models/{name}/ready", state.v2_model_ready, methods=["GET"]),
        Route("/v2", state.server_meta, methods=["GET"]),
        Route("/ping", state.ready, methods=["GET"]),
        Route("/health", state.ready, methods=["GET"]),
        Route("/metrics", state.metrics_route, methods=["GET"]),
        Route("/admin/reload", state.admin_reload, methods=["POST"]),
        Route("/openapi.json", state.openapi, methods=["GET"]),
    ]
    app = _App(routes=routes, lifespan=state.lifespan,
               exception_handlers={HTTPException: _http_error, Exception: _server_error})
    app.fast = _FastPath(_StarletteStack(app), state)
    app.state.serving = state
    return app


# ---------------------------------------------------------------------- OpenAPI
def _err_ref():
    return {"description": "Error", "content": {JSON: {"schema": {"$ref": "#/components/schemas/Error"}}}}


def openapi_document(models: list[str]) -> dict:
    name_param = {"name": "name", "in": "path", "required": True,
                  "schema": {"type": "string", "enum": models}}
    version_header = {"X-Model-Version": {"schema": {"type": "string"},
                                          "description": "Version of the model that answered"}}
    errors = {c: _err_ref() for c in ("400", "404", "413", "415", "503")}
    mlflow_body = {"required": True, "content": {JSON: {"schema": {"$ref": "#/components/schemas/MlflowRequest"}}}}
    mlflow_resp = {"200": {"description": "Predictions", "headers": version_header,
                           "content": {JSON: {"schema": {"$ref": "#/components/schemas/MlflowResponse"}}}},
                   **errors}
    plain = {"200": {"description": "OK", "content": {JSON: {"schema": {"type": "object"}}}}}
    return {
        "openapi": "3.0.3",
        "info": {"title": "ml_platform endpoint", "version": "1",
                 "description": "ONNX Runtime scoring endpoint: MLflow scoring protocol and Open "
                                "Inference Protocol (KServe V2). Errors: {error: {kind, field, message}}."},
        "paths": {
            "/models/{name}/invocations": {"post": {
                "summary": "Score rows (MLflow scoring protocol)", "parameters": [name_param],
                "requestBody": mlflow_body, "responses": mlflow_resp}},
            "/invocations": {"post": {
                "summary": "Score rows with the only configured model", "requestBody": mlflow_body,
                "responses": mlflow_resp}},
            "/v2/models/{name}/infer": {"post": {
                "summary": "Score rows (Open Inference Protocol)", "parameters": [name_param],
                "requestBody": {"required": True, "content": {JSON: {"schema": {"$ref": "#/components/schemas/V2Request"}}}},
                "responses": {"200": {"description": "Outputs", "headers": version_header,
                                      "content": {JSON: {"schema": {"$ref": "#/components/schemas/V2Response"}}}},
                              **errors}}},
            "/v2/models/{name}": {"get": {"summary": "Model metadata", "parameters": [name_param],
                                          "responses": {**plain, "404": _err_ref()}}},
            "/v2/models/{name}/ready": {"get": {"summary": "Model readiness", "parameters": [name_param],
                                                "responses": {**plain, "503": _err_ref()}}},
            "/v2/health/live": {"get": {"summary": "Liveness", "responses": plain}},
            "/v2/health/ready": {"get": {"summary": "Readiness: every model with a champion pointer serves "
                                                    "exactly the pointer's version",
                                         "responses": {**plain, "503": {"description": "Not ready"}}}},
            "/v2": {"get": {"summary": "Server metadata", "responses": plain}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {
                "200": {"description": "Text exposition format", "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
            "/admin/reload": {"post": {
                "summary": "Reload champions now (Bearer token when configured)",
                "parameters": [{"name": "model", "in": "query", "required": False, "schema": {"type": "string"}}],
                "responses": {"200": {"description": "Per-model outcome", "content": {JSON: {"schema": {"$ref": "#/components/schemas/ReloadResponse"}}}},
                              "401": _err_ref(), "404": _err_ref()}}},
            "/openapi.json": {"get": {"summary": "This document", "responses": plain}},
        },
        "components": {"schemas": {
            "Error": {"type": "object", "required": ["error"], "properties": {"error": {
                "type": "object", "required": ["kind", "field", "message"], "properties": {
                    "kind": {"type": "string"}, "field": {"type": "string", "nullable": True},
                    "message": {"type": "string"}}}}},
            "MlflowRequest": {"type": "object", "description": "Exactly one of the keys.", "properties": {
                "dataframe_split": {"type": "object", "required": ["columns", "data"], "properties": {
                    "columns": {"type": "array", "items": {"type": "string"}},
                    "data": {"type": "array", "items": {"type": "array", "items": {}}}}},
                "dataframe_records": {"type": "array", "items": {"type": "object"}},
                "inputs": {"oneOf": [{"type": "array", "items": {"type": "object"}},
                                     {"type": "object", "additionalProperties": {"type": "array"}}]}}},
            "MlflowResponse": {"type": "object", "properties": {"predictions": {"type": "array", "items": {
                "oneOf": [{"type": "number"}, {"type": "object", "properties": {
                    "label": {}, "probabilities": {"type": "object", "additionalProperties": {"type": "number"}}}}]}}}},
            "V2Tensor": {"type": "object", "required": ["name", "shape", "datatype", "data"], "properties": {
                "name": {"type": "string"}, "shape": {"type": "array", "items": {"type": "integer"}},
                "datatype": {"type": "string", "enum": sorted(V2_TYPES)},
                "data": {"type": "array", "items": {}}}},
            "V2Request": {"type": "object", "required": ["inputs"], "properties": {
                "id": {"type": "string"},
                "inputs": {"type": "array", "items": {"$ref": "#/components/schemas/V2Tensor"}},
                "outputs": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}}}}}},
            "V2Response": {"type": "object", "properties": {
                "model_name": {"type": "string"}, "model_version": {"type": "string"}, "id": {"type": "string"},
                "outputs": {"type": "array", "items": {"$ref": "#/components/schemas/V2Tensor"}}}},
            "ReloadResponse": {"type": "object", "properties": {"models": {"type": "object", "additionalProperties": {
                "type": "object", "properties": {
                    "version": {"type": "integer", "nullable": True},
                    "status": {"type": "string", "enum": ["loaded", "unchanged", "rejected", "unloaded"]},
                    "reason": {"type": "string", "nullable": True},
                    "serving_version": {"type": "integer", "nullable": True}}}}}},
        }},
    }
