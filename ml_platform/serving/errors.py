"""The endpoint's one error type, and the errors more than one module answers with.

Every answer other than a prediction is a :class:`RequestError`: it carries the HTTP
``status``, a machine-readable ``kind``, the request ``field`` it is about and a
``message`` for people, and renders as the one error body of the endpoint,
``{"error": {"kind": ..., "field": ..., "message": ...}}`` (``Error`` in the OpenAPI
document). Client errors are 4xx; 5xx means the model or the server failed.

An error raised in several places (an unknown model, a missing admin token, an
internal error) is built by one function here, so its kind, field and wording are
the same wherever it comes from.
"""

from __future__ import annotations

from collections.abc import Iterable

import orjson


class RequestError(Exception):
    """An error answer: HTTP ``status`` with a machine-readable ``kind`` and the ``field``.

    ``close``: the rest of the request was not read, so the connection must close after
    the answer. ``headers``: extra response headers (``WWW-Authenticate`` on a 401)."""

    close = False
    headers: dict | None = None

    def __init__(
        self,
        kind: str,
        message: str,
        field: str | None = None,
        status: int = 400,
        *,
        close: bool = False,
        headers: dict | None = None,
    ):
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.field = field
        self.status = status
        if close:
            self.close = True
        if headers:
            self.headers = headers

    def body(self) -> dict:
        return {"error": {"kind": self.kind, "field": self.field, "message": self.message}}

    def encoded(self) -> bytes:
        return orjson.dumps(self.body())


def unknown_model(name, served: Iterable[str]) -> RequestError:
    return RequestError("unknown_model", f"unknown model {name!r}; this endpoint serves {sorted(served)}", "model", 404)


def model_required(served: Iterable[str]) -> RequestError:
    """``POST /invocations`` on an endpoint that serves more than one model."""
    names = sorted(served)
    return RequestError(
        "model_required",
        f"{len(names)} models are served here ({', '.join(names)}): POST /models/<name>/invocations",
        "model",
        400,
    )


def no_champion(name: str, last_rejection: dict | None) -> RequestError:
    reason = f"; last rejection: {last_rejection['reason']}" if last_rejection else ""
    return RequestError("no_champion", f"model {name!r} has no champion loaded yet" + reason, "model", 503)


def unauthorized() -> RequestError:
    return RequestError(
        "unauthorized",
        "send 'Authorization: Bearer <admin token>'",
        "authorization",
        401,
        headers={"WWW-Authenticate": "Bearer"},
    )


def inference_failed(exc: BaseException) -> RequestError:
    return RequestError("inference_failed", f"the model failed on this input: {str(exc)[:200]}", None, 500)


def internal() -> RequestError:
    """An unexpected exception (the server logs it; the client learns nothing of it)."""
    return RequestError("internal", "internal error (logged by the server)", None, 500)


def no_route(method: str, path: str, status: int, detail: str, headers: dict | None = None) -> RequestError:
    """Starlette's own 404 (no such route) and 405 (wrong method), in the endpoint's format."""
    kind = {404: "not_found", 405: "method_not_allowed"}.get(status, "http_error")
    message = f"{method} {path}: {detail}"
    if status == 404:
        message += " (see GET /openapi.json for the routes)"
    return RequestError(kind, message, None, status, headers=headers)
