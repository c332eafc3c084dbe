"""The endpoint's HTTP handlers other than scoring: model metadata and readiness, health,
metrics, the admin reload and the OpenAPI document, plus Starlette's error handlers.

They are thin: each reads the request, asks the model slots (``slots.py``) or the metrics,
and renders JSON; every error is a :class:`~ml_platform.serving.errors.RequestError`
rendered by :func:`error_response`. Scoring requests never get here: the fast path in
``app.py`` answers them before Starlette's router.
"""

from __future__ import annotations

import logging
import os

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from ml_platform.serving import errors, v2
from ml_platform.serving.auth import bearer_matches
from ml_platform.serving.errors import RequestError
from ml_platform.serving.metrics import Metrics
from ml_platform.serving.openapi import openapi_document
from ml_platform.serving.slots import ModelSlots

log = logging.getLogger("ml_platform.serving")
JSON = "application/json"


def json_response(payload, status: int = 200, headers: dict | None = None) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type=JSON, headers=headers)


def error_response(e: RequestError) -> Response:
    return Response(e.encoded(), status_code=e.status, media_type=JSON, headers=e.headers)


class Endpoints:
    """The handlers, over the model slots, the metrics and the admin token (None: the
    admin route needs none)."""

    def __init__(self, models: ModelSlots, metrics: Metrics, admin_token: str | None):
        self.models = models
        self.metrics = metrics
        self.admin_token = admin_token

    async def v2_model(self, request: Request) -> Response:
        name = request.path_params["name"]
        try:
            slot = self.models.slot(name)
        except RequestError as e:
            return error_response(e)
        m = slot.model
        readiness = self.models.model_readiness(slot)
        body = {
            "name": name,
            "versions": [str(v) for v in await run_in_threadpool(self.models.store.versions, name)],
            "platform": "onnxruntime",
            "inputs": v2.input_metadata(m) if m else [],
            "outputs": v2.output_metadata(m) if m else [],
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
            "staged": _staged(slot.stage),
            "worker": os.getpid(),  # the process that answered (serving.workers), as in its evidence files' names
        }
        return json_response(body, headers=m.headers if m else None)

    async def v2_model_ready(self, request: Request) -> Response:
        name = request.path_params["name"]
        try:
            slot = self.models.slot(name)
        except RequestError as e:
            return error_response(e)
        r = self.models.model_readiness(slot)
        m = slot.model
        return json_response({"name": name, **r}, 200 if r["ready"] else 503, headers=m.headers if m else None)

    async def live(self, request: Request) -> Response:
        return json_response({"live": True})

    async def ready(self, request: Request) -> Response:
        ok, models = self.models.readiness()
        body = {"ready": ok, "models": models}
        if not ok:
            body["reason"] = "; ".join(
                f"{n}: {r['reason']}" for n, r in models.items() if r["required"] and not r["ready"]
            )
        return json_response(body, 200 if ok else 503)

    async def server_meta(self, request: Request) -> Response:
        return json_response(
            {"name": "ml_platform", "version": "1", "extensions": [], "models": sorted(self.models.slots)}
        )

    async def metrics_route(self, request: Request) -> Response:
        return Response(self.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def admin_reload(self, request: Request) -> Response:
        if self.admin_token is not None:
            auth = request.headers.get("authorization")
            if not bearer_matches(auth.encode("latin-1") if auth is not None else None, self.admin_token):
                return error_response(errors.unauthorized())
        try:
            results = await self.models.reload_now(request.query_params.get("model"))
        except RequestError as e:
            return error_response(e)
        return json_response({"models": results, "pid": os.getpid()})

    async def openapi(self, request: Request) -> Response:
        return json_response(openapi_document(sorted(self.models.slots)))


async def http_error(request: Request, exc: HTTPException) -> Response:
    return error_response(
        errors.no_route(request.method, request.url.path, exc.status_code, exc.detail, getattr(exc, "headers", None))
    )


async def server_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(errors.internal())


def _staged(stage) -> dict | None:
    """This worker's view of the staged candidate (``staging.py``)."""
    if stage is None:
        return None
    return {
        "version": stage.version,
        "mode": stage.mode,
        "share": stage.share,
        "mirrored": stage.mirrored,
        "scored": stage.scored,
        "queued": stage.queued_rows,
        "dropped": stage.dropped,
        "errors": stage.errors,
        "failed": stage.failed,
        "scorer": stage.scorer_state,
    }
