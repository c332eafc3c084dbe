"""uvicorn's httptools protocol with one ``send()`` per small response instead of two.

uvicorn writes a response's status line and headers on ``http.response.start`` and the
body on ``http.response.body``: two ``transport.write`` calls, so two ``send`` syscalls
and, with ``TCP_NODELAY``, two TCP segments for a 100-byte JSON answer, a large share of
the endpoint's CPU time on small requests. :class:`CorkedTransport` holds a
response head written on its own until the next write (the body: one ``send`` for both)
or, when none comes, until the event loop's next turn (``call_soon``), so nothing waits
longer than one loop iteration and the byte order on the wire never changes.

It also puts uvicorn's set of in-flight request tasks in each request's scope
(``batching.IN_FLIGHT``), so a request that is alone skips the cross-request batching.

And it bounds what a slow or idle client can hold (uvicorn alone has no read timeout: a
connection that sends half a request line waits forever):

- ``header_timeout``: a connection must deliver a request's line and headers within this
  many seconds of its first byte (or of opening the connection); else 408 and close.
- ``body_timeout``: the body must follow within this many seconds of the headers; else 408
  and close (the app reading the body sees the disconnect).
- ``max_connections``: a connection beyond this many (per worker) gets a 503 and is closed
  at once, before it can hold anything.

Deadlines cost a float per request; one sweep per second per worker closes the late ones.
``configure`` sets them (``server.app_factory``, from ``serving.*`` in the config; until
then they are the config's defaults). Its error answers have the endpoint's error body
(``errors.py``).

Used by ``server.run`` as ``http="ml_platform.serving.protocol:HttpToolsCorked"`` when
httptools is installed. Imported by uvicorn only (never by ``serving.app``).
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ml_platform.serving.batching import IN_FLIGHT
from ml_platform.serving.errors import RequestError
from ml_platform.settings import ServingConfig

_DEFAULTS = ServingConfig()


class CorkedTransport:
    """A transport proxy that joins a response head with the write that follows it."""

    __slots__ = ("_t", "_loop", "_held")

    def __init__(self, transport, loop):
        self._t = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._t.write(held + bytes(data))
        elif data[:5] == b"HTTP/" and data[-4:] == b"\r\n\r\n":  # a response head, alone
            self._held = bytes(data)
            self._loop.call_soon(self.flush)
        else:
            self._t.write(data)

    def flush(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            if not self._t.is_closing():
                self._t.write(held)

    def writelines(self, lines) -> None:
        self.flush()
        self._t.writelines(lines)

    def write_eof(self) -> None:
        self.flush()
        self._t.write_eof()

    def close(self) -> None:
        self.flush()
        self._t.close()

    def abort(self) -> None:
        self._held = None
        self._t.abort()

    def set_protocol(self, protocol) -> None:
        self.flush()
        self._t.set_protocol(protocol)

    def get_write_buffer_size(self) -> int:
        return self._t.get_write_buffer_size() + len(self._held or b"")

    def __getattr__(self, name):  # is_closing, get_extra_info, pause_reading, ...
        return getattr(self._t, name)


def _error_response(status: int, reason: str, kind: str, message: str, field: str | None = None) -> bytes:
    body = RequestError(kind, message, field, status).encoded()
    return (
        b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
        b"connection: close\r\n\r\n" % (status, reason.encode(), len(body))
    ) + body


SWEEP_SECONDS = 1.0


class HttpToolsCorked(HttpToolsProtocol):
    header_timeout: float | None = _DEFAULTS.header_timeout_seconds
    body_timeout: float | None = _DEFAULTS.body_timeout_seconds
    max_connections: int | None = None  # None: no cap (``configure`` sets serving.max_connections)

    # per connection: when the part being read must be complete (None: not reading), and
    # which part that is ("idle": no request begun yet, "headers", "body")
    _deadline: float | None = None
    _phase: str | None = None

    @classmethod
    def configure(
        cls, header_timeout: float | None = None, body_timeout: float | None = None, max_connections: int | None = None
    ) -> None:
        cls.header_timeout = header_timeout
        cls.body_timeout = body_timeout
        cls.max_connections = max_connections

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.transport = CorkedTransport(transport, self.loop)
        cap = self.max_connections
        if cap is not None and len(self.connections) > cap:
            self.connections.discard(self)
            transport.write(
                _error_response(
                    503,
                    "Service Unavailable",
                    "overloaded",
                    f"too many connections (at most {cap} per worker: serving.max_connections); retry later",
                )
            )
            transport.close()
            return
        if self.header_timeout is not None:
            self._deadline = self.loop.time() + self.header_timeout
            self._phase = "idle"
            self._sweep_soon()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope[IN_FLIGHT] = self.tasks  # type: ignore[literal-required]
        if self.header_timeout is not None:
            if self._phase != "idle":  # a connection's first request counts from its opening
                self._deadline = self.loop.time() + self.header_timeout
                self._sweep_soon()
            self._phase = "headers"

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        if self.body_timeout is not None:
            self._deadline = self.loop.time() + self.body_timeout
            self._phase = "body"
            self._sweep_soon()
        else:
            self._deadline = self._phase = None

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._deadline = self._phase = None

    # ---- the sweep: one timer per worker, running while some connection has a deadline
    def _sweep_soon(self) -> None:
        state = self.server_state
        if getattr(state, "_ml_platform_sweep", None) is None:
            state._ml_platform_sweep = self.loop.call_later(SWEEP_SECONDS, _sweep, self.loop, state)

    def _timed_out(self) -> None:
        phase, self._deadline, self._phase = self._phase, None, None
        t = self.transport
        if t is None or t.is_closing():
            return
        cycle = self.cycle
        if phase == "body" and cycle is None:  # not an HTTP request cycle (an upgrade): just close
            phase = None
        if phase in ("headers", "body"):
            # answer unless a response is (being) sent: a pipelined predecessor's, or an early
            # answer to this request
            if (
                not cycle.response_started
                if phase == "body"
                else cycle is None or cycle.response_complete or not cycle.response_started
            ):
                limit, key = (
                    (self.body_timeout, "body_timeout_seconds")
                    if phase == "body"
                    else (self.header_timeout, "header_timeout_seconds")
                )
                t.write(
                    _error_response(
                        408,
                        "Request Timeout",
                        "timeout",
                        f"the request {phase} did not arrive within {limit:g} s (serving.{key})",
                        phase,
                    )
                )
            if phase == "body" and not cycle.response_complete:  # the app reading it sees a disconnect
                cycle.disconnected = True
                cycle.message_event.set()
        t.close()


def _sweep(loop, state) -> None:
    state._ml_platform_sweep = None
    now = loop.time()
    pending = False
    for conn in list(state.connections):
        deadline = getattr(conn, "_deadline", None)
        if deadline is None:
            continue
        if now >= deadline:
            conn._timed_out()
        else:
            pending = True
    if pending:
        state._ml_platform_sweep = loop.call_later(SWEEP_SECONDS, _sweep, loop, state)
