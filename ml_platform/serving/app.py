"""The scoring endpoint: a Starlette app over ONNX Runtime (DESIGN §3 "Endpoint").

Imports onnxruntime, numpy, orjson and starlette only: never dagster, sklearn, mlflow or
pandas (``ml_platform_tests/serving`` and the import-linter contract check this), so it
starts fast and loads no pickle.

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
``{"error": {"kind": ..., "field": ..., "message": ...}}`` (``errors.py``).

Layers, top to bottom: this module lists the routes and holds the scoring hot path
(:class:`_FastPath` answers the scoring routes ahead of Starlette's stack and calls
:meth:`ServingState.score` directly); ``endpoints.py`` has the other handlers; under them,
``body.py`` reads request bodies, ``requests.py`` / ``v2.py`` speak the two protocols,
``large.py`` scores large bodies off the event loop, ``slots.py`` keeps each model's
loaded version in step with its champion pointer, and ``model.py`` runs ONNX Runtime.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from pathlib import Path

import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ml_platform.serving import errors, v2
from ml_platform.serving.auth import bearer_matches
from ml_platform.serving.batching import IN_FLIGHT
from ml_platform.serving.body import (
    LARGE_BODY_BYTES,
    MAX_JSON_DEPTH,
    BodyReader,
    Disconnected,
    check_depth,
    decode,
    replay,
)
from ml_platform.serving.endpoints import Endpoints, http_error, server_error
from ml_platform.serving.errors import RequestError
from ml_platform.serving.heap import freeze_heap
from ml_platform.serving.large import SWITCH_INTERVAL, LargeRequests
from ml_platform.serving.metrics import Metrics
from ml_platform.serving.requests import MAX_ID_CHARS, mlflow_predictions
from ml_platform.serving.sample import LiveSampler
from ml_platform.serving.slots import ModelSlots
from ml_platform.serving.staging import Stages
from ml_platform.serving.store import ModelStore
from ml_platform.settings import ServingConfig

log = logging.getLogger("ml_platform.serving")

INLINE_ROWS = 256  # larger batches run in a worker thread so the event loop stays free
RID_HEADER = b"x-request-id"  # recorded with a staged candidate's evidence (else one is made up)
SMOKE_HEADER = b"x-ml-platform-smoke"  # the deploy's smoke rows: answered, not sampled (``smoke_allowed``)
_DEFAULTS = ServingConfig()  # create_app's defaults are the config's
_perf = time.perf_counter
_CT_JSON = (b"content-type", b"application/json")
_CLOSE = (b"connection", b"close")


def _request_id(header: bytes | None, v2_id) -> str | None:
    """The id a staged candidate's evidence carries: ``X-Request-Id``, else a V2 request's ``id``
    (else the shadow scorer makes one)."""
    if header:
        return header.decode("latin-1")[:200]
    return v2_id if isinstance(v2_id, str) and v2_id else None


class _FastPath:
    """Answers the scoring routes without Starlette's router, middleware, Request and
    Response objects; everything else goes on to ``app`` (the Starlette stack).

    :class:`_App` calls it first thing, so a scoring request costs one ``__call__`` and
    ``ServingState.score`` on top of uvicorn."""

    __slots__ = ("app", "state")

    def __init__(self, app, state: ServingState):
        self.app = app
        self.state = state

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "POST":
            path = scope["path"]
            root = scope.get("root_path")
            if root and path.startswith(root):
                path = path[len(root) :]
            name = protocol = None
            if path.startswith("/models/") and path.endswith("/invocations"):
                name, protocol = path[8:-12], "mlflow"
            elif path.startswith("/v2/models/") and path.endswith("/infer"):
                name, protocol = path[11:-6], "v2"
            elif path == "/invocations":
                protocol = "mlflow"
            if protocol is not None and (name is None or (name and "/" not in name)):
                ct = cl = smoke = auth = rid = None
                for k, v in scope["headers"]:
                    if k == b"content-type":
                        ct = v
                    elif k == b"content-length":
                        cl = v
                    elif k == SMOKE_HEADER:
                        smoke = v
                    elif k == b"authorization":
                        auth = v
                    elif k == RID_HEADER:
                        rid = v
                try:
                    status, body, version, close = await self.state.score(
                        name,
                        protocol,
                        ct,
                        cl,
                        receive,
                        scope.get(IN_FLIGHT),
                        sample=smoke is None or not self.state.smoke_allowed(auth),
                        xrid=rid,
                    )
                except Disconnected:
                    return
                except Exception:  # what ServerErrorMiddleware would do: log, answer 500
                    log.exception("unhandled error on POST %s", scope["path"])
                    status, version, close = 500, None, False
                    body = errors.internal().encoded()
                headers = [_CT_JSON, (b"content-length", b"%d" % len(body))]
                if version is not None:
                    headers.append((b"x-model-version", version))
                if close:  # the rest of the request was not read: this connection is done
                    headers.append(_CLOSE)
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                try:
                    self.state.score_due()
                except Exception:  # noqa: BLE001 - the shadow's copy never costs a client its connection
                    log.exception("scoring a staged candidate's copy failed")
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


class ServingState:
    """One worker's endpoint: the model slots, the body reader, the metrics and the live
    sample, the scoring hot path (:meth:`score`) and the lifespan (background tasks)."""

    def __init__(
        self,
        serving_dir: Path,
        models: list[str],
        *,
        admin_token: str | None,
        max_body_bytes: int,
        poll_seconds: float,
        sample_dir: Path | None,
        latency_budget_ms: float | None,
        stage_dir: Path | None,
        sample_max_rows: int,
        sample_flush_seconds: float,
        sample_rows_per_second: float | None,
        sample_max_bytes: int | None,
        body_timeout_seconds: float,
    ):
        self.metrics = Metrics()
        self.registry = ModelSlots(
            ModelStore(Path(serving_dir)),
            list(models),
            poll_seconds=poll_seconds,
            latency_budget_ms=latency_budget_ms,
            metrics=self.metrics,
        )
        self.slots = self.registry.slots
        self.only = self.registry.only
        self.due = None  # a Stage with a request to score once its answer is sent
        self.stages = self.registry.stages = Stages(self.registry.store, self.slots, stage_dir, latency_budget_ms)
        self.admin_token = admin_token or None
        self.body = BodyReader(max_body_bytes, body_timeout_seconds)
        self.max_body_bytes = self.body.max_bytes
        self.small_body = min(self.max_body_bytes, LARGE_BODY_BYTES)  # decoded on the event loop
        self.sampler = (
            LiveSampler(Path(sample_dir), sample_max_rows, sample_rows_per_second, sample_max_bytes)
            if sample_dir
            else None
        )
        self.sample_flush_seconds = sample_flush_seconds
        self.large = LargeRequests(self.metrics, self.sampler)
        self._tasks: list[asyncio.Task] = []

    @property
    def poll_seconds(self) -> float:
        return self.registry.poll_seconds

    def smoke_allowed(self, authorization: bytes | None) -> bool:
        """A request marked as the deploy's smoke test stays out of the live sample: with an
        admin token configured, only when it also carries that token (clients cannot hide
        their traffic from drift monitoring)."""
        return self.admin_token is None or bearer_matches(authorization, self.admin_token)

    async def flush_sample(self) -> dict:
        """Write the live sample collected so far (the background task does it every
        ``sample_flush_seconds``). -> rows written per model."""
        return await self.sampler.flush(self.metrics.sampled) if self.sampler is not None else {}

    def score_due(self) -> None:
        """The shadow's copy of the request just answered (when it was the only one in flight),
        or a full batch of copies, scored now that the answer is sent (``Stage.score_due``)."""
        stage = self.due
        if stage is not None:
            self.due = None
            stage.score_due()

    async def score(
        self,
        name: str | None,
        protocol: str,
        ct: bytes | None,
        cl: bytes | None,
        receive,
        in_flight=None,
        sample: bool = True,
        xrid: bytes | None = None,
    ) -> tuple[int, bytes, bytes | None, bool]:
        """The hot path. -> (status, JSON body, X-Model-Version or None, close the connection).
        ``in_flight``: the server's requests in flight, when it says (``batching.IN_FLIGHT``).
        ``sample`` False: answered and counted, but not added to the live sample (smoke rows)."""
        t0 = _perf()
        slot = self.slots.get(name if name is not None else self.only)
        model = slot.model if slot is not None else None
        if model is None:
            err = self.registry.resolve(name)
            await self.body.drain(receive, err)
            return err.status, err.encoded(), None, err.close
        hot = model.hot.get(protocol)
        if hot is None:
            hot = model.hot[protocol] = self.metrics.hot(model.name, model.version_str, protocol)
        outs = None
        try:
            body = raw = None
            if ct == b"application/json":  # the common case: one small body chunk
                msg = await receive()
                data = msg.get("body", b"")
                if (
                    not msg.get("more_body", False)
                    and msg["type"] == "http.request"
                    and 0 < len(data) <= self.small_body
                    and (cl is None or cl.isdigit() and int(cl) <= self.max_body_bytes)
                ):
                    try:
                        body = orjson.loads(data)
                    except orjson.JSONDecodeError:
                        body = None
                    if body is None:  # invalid JSON, whitespace or a literal null: the slow way
                        body = decode(data)
                    elif data.count(b"[") + data.count(b"{") > MAX_JSON_DEPTH:
                        check_depth(body, data)
                else:
                    raw = await self.body.read(ct, cl, replay(msg, receive))
            else:
                raw = await self.body.read(ct, cl, receive)
            if raw is not None:
                if len(raw) > LARGE_BODY_BYTES:
                    return await self.large.score(model, hot, protocol, raw, t0, sample)
                body = decode(raw)
            if protocol == "mlflow":
                parsed = model.schema.parse_mlflow(body)
                wanted = rid = None
            else:
                parsed, wanted, rid = v2.parse_request(model.schema, body)
                v2.check_outputs(model, wanted)
            ids = parsed.ids
            if ids is not None:
                if parsed.n != 1:
                    model.schema.check_ids(ids)
                else:
                    v = ids[0]
                    t = type(v)
                    if not ((t is str and len(v) <= MAX_ID_CHARS) or t is int or t is float or v is None):
                        model.schema.check_ids(ids)
            stage = slot.stage if sample else None  # the deploy's smoke rows stay with the champion
            if stage is not None and stage.canary:
                if stage.routes(parsed):
                    outs = self._canary(stage, parsed)
                    if outs is not None:  # the candidate answered; the scorer runs the champion on a copy
                        stage.mirror(_request_id(xrid, rid), parsed, outs, model, stage.recent[-1])
                        model = stage.model
                        hot = model.hot.get(protocol)
                        if hot is None:
                            hot = model.hot[protocol] = self.metrics.hot(model.name, model.version_str, protocol)
                stage = None
            if outs is not None:
                pass
            elif parsed.n == 1 and model.batchable and (in_flight is None or len(in_flight) > 1):
                outs = await model.batcher.submit(parsed)  # shares a call with its neighbours
            elif parsed.n > INLINE_ROWS:
                outs = await run_in_threadpool(model.run, parsed.feeds)
            else:
                outs = model.run(parsed.feeds)
        except RequestError as e:
            self.metrics.error(model.name, model.version_str, e.kind)
            return e.status, e.encoded(), model.version_bytes, e.close
        except Disconnected:
            raise
        except Exception as e:  # noqa: BLE001 - a model failure, not the client's
            log.exception("inference failed for %s v%s", model.name, model.version)
            self.metrics.error(model.name, model.version_str, "inference_failed")
            return 500, errors.inference_failed(e).encoded(), model.version_bytes, False
        n = parsed.n
        if model.classification:
            if n == 1:  # one row: build the answer and the class count from Python scalars
                label = outs[0].tolist()[0]
                if protocol == "mlflow":
                    out = orjson.dumps(
                        {
                            "predictions": [
                                {"label": label, "probabilities": dict(zip(model.class_keys, outs[1].tolist()[0]))}
                            ]
                        }
                    )
                else:
                    out = orjson.dumps(v2.response(model, outs, n, wanted, rid))
                key = model.label_key(label)
                classes = hot.classes
                classes[key] = classes.get(key, 0) + 1
            else:
                out = orjson.dumps(
                    {"predictions": mlflow_predictions(model, outs)}
                    if protocol == "mlflow"
                    else v2.response(model, outs, n, wanted, rid)
                )
                self.metrics.predicted_classes(hot.classes, outs[0])
        else:
            out = orjson.dumps(
                {"predictions": mlflow_predictions(model, outs)}
                if protocol == "mlflow"
                else v2.response(model, outs, n, wanted, rid)
            )
            self.metrics.predicted_values(model.name, model.version_str, outs[0].reshape(-1), model.value_buckets)
        if sample and self.sampler is not None:
            self.sampler.add(model, parsed, outs)
        if stage is not None:  # shadow: a copy for the candidate, scored after the answer
            if in_flight is None:  # no server that calls score_due(): the scorer does it all
                stage.mirror(_request_id(xrid, rid), parsed, outs, model)
            elif stage.mirror(_request_id(xrid, rid), parsed, outs, model, alone=len(in_flight) == 1, here=True):
                self.due = stage  # the server calls score_due() once the answer is sent
        hot.requests += 1
        hot.rows += n
        hot.latency.observe(_perf() - t0)
        return 200, out, model.version_bytes, False

    def _canary(self, stage, parsed):
        """The candidate answers this request: -> its outputs, or None when it failed (rolled back
        at once: this request and every later one go to the champion)."""
        t0 = _perf()
        try:
            outs = stage.model.run(parsed.feeds)
            stage.model._check_shapes(outs, parsed.n)
        except Exception as e:  # noqa: BLE001 - the candidate's failure, not the client's
            stage.mark_failed(f"inference failed on live traffic: {type(e).__name__}: {str(e)[:200]}")
            return None
        ms = (_perf() - t0) * 1000
        why = stage.observe_latency(ms)
        if why is not None:
            stage.mark_failed(why)
        return outs

    async def _score_route(self, request: Request, name: str | None, protocol: str) -> Response:
        # Normally unreached: _FastPath answers these routes before Starlette's router.
        h = request.headers
        enc = lambda v: v.encode("latin-1") if v is not None else None  # noqa: E731
        smoke = h.get(SMOKE_HEADER.decode()) is not None and self.smoke_allowed(enc(h.get("authorization")))
        status, body, version, close = await self.score(
            name, protocol, enc(h.get("content-type")), enc(h.get("content-length")), request.receive, sample=not smoke
        )
        headers = {"X-Model-Version": version.decode()} if version else {}
        if close:
            headers["Connection"] = "close"
        return Response(body, status_code=status, media_type="application/json", headers=headers)

    async def invocations(self, request: Request) -> Response:
        return await self._score_route(request, request.path_params["name"], "mlflow")

    async def invocations_only(self, request: Request) -> Response:
        return await self._score_route(request, None, "mlflow")

    async def v2_infer(self, request: Request) -> Response:
        return await self._score_route(request, request.path_params["name"], "v2")

    @contextlib.asynccontextmanager
    async def lifespan(self, app):
        freeze_heap()
        # A large request works in a thread (large.py): let the event loop have the GIL
        # back within SWITCH_INTERVAL rather than CPython's 5 ms.
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL))
        self._tasks = [asyncio.create_task(self.registry.poll_forever(), name="ml_platform-poll")]
        if self.sampler is not None:
            flush = self.sampler.flush_forever(self.metrics.sampled, self.sample_flush_seconds)
            self._tasks.append(asyncio.create_task(flush, name="ml_platform-sample"))
        if self.stages.dir is not None:
            stages = self.stages.run_forever(self.poll_seconds)
            self._tasks.append(asyncio.create_task(stages, name="ml_platform-staging"))
        try:
            yield
        finally:
            for t in self._tasks:
                t.cancel()
            for t in self._tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            self._tasks = []
            with contextlib.suppress(Exception):
                await self.stages.close()
            self.large.close()
            if self.sampler is not None:
                items, _ = self.sampler.take()
                if items:
                    self.sampler.write(items)


def create_app(
    serving_dir: Path,
    models: list[str],
    *,
    admin_token: str | None = None,
    max_body_bytes: int = _DEFAULTS.max_body_bytes,
    poll_seconds: float = _DEFAULTS.poll_seconds,
    sample_dir: Path | None = None,
    latency_budget_ms: float | None = None,  # None: each version's own budget (its gate's)
    sample_max_rows: int = 10_000,
    sample_flush_seconds: float = 5.0,
    sample_rows_per_second: float | None = None,
    sample_max_bytes: int | None = None,
    body_timeout_seconds: float = _DEFAULTS.body_timeout_seconds,
    stage_dir: Path | None = None,
) -> Starlette:
    """The endpoint for ``models`` reading ``serving_dir`` (``Settings.serving_dir``).

    Champions are loaded (and validated) here, synchronously; the lifespan starts the
    pointer poller and, with ``sample_dir``, the live-sample flusher. A request body that
    has started must arrive within ``body_timeout_seconds`` (else 408 and the connection
    closes); the server adds its own header/body read limits (``serving/protocol.py``). With
    ``stage_dir``, a candidate staged beside a champion (``staged.json``) is loaded as a shadow or a
    canary and its evidence recorded there (``staging.py``)."""
    state = ServingState(
        serving_dir,
        list(models),
        admin_token=admin_token,
        max_body_bytes=max_body_bytes,
        poll_seconds=poll_seconds,
        sample_dir=sample_dir,
        latency_budget_ms=latency_budget_ms,
        sample_max_rows=sample_max_rows,
        sample_flush_seconds=sample_flush_seconds,
        sample_rows_per_second=sample_rows_per_second,
        sample_max_bytes=sample_max_bytes,
        body_timeout_seconds=body_timeout_seconds,
        stage_dir=stage_dir,
    )
    state.registry.initial_load()
    state.stages.initial_load()
    ep = Endpoints(state.registry, state.metrics, state.admin_token)
    routes = [
        Route("/models/{name}/invocations", state.invocations, methods=["POST"]),
        Route("/v2/models/{name}/infer", state.v2_infer, methods=["POST"]),
        Route("/invocations", state.invocations_only, methods=["POST"]),
        Route("/v2/health/live", ep.live, methods=["GET"]),
        Route("/v2/health/ready", ep.ready, methods=["GET"]),
        Route("/v2/models/{name}", ep.v2_model, methods=["GET"]),
        Route("/v2/models/{name}/ready", ep.v2_model_ready, methods=["GET"]),
        Route("/v2", ep.server_meta, methods=["GET"]),
        Route("/ping", ep.ready, methods=["GET"]),
        Route("/health", ep.ready, methods=["GET"]),
        Route("/metrics", ep.metrics_route, methods=["GET"]),
        Route("/admin/reload", ep.admin_reload, methods=["POST"]),
        Route("/openapi.json", ep.openapi, methods=["GET"]),
    ]
    app = _App(
        routes=routes,
        lifespan=state.lifespan,
        exception_handlers={HTTPException: http_error, Exception: server_error},
    )
    app.fast = _FastPath(_StarletteStack(app), state)
    app.state.serving = state
    return app
