"""A request body, from ASGI ``receive`` to decoded JSON, within the endpoint's limits.

:class:`BodyReader` reads the whole body: ``Content-Type`` must be JSON (else 415), the
body at most ``serving.max_body_bytes`` (else 413) and, once it has started, complete
within ``serving.body_timeout_seconds`` (else 408, and the connection closes). A body that
is refused before it has arrived is read and dropped first (:meth:`BodyReader.drain`), up to
a bound: a client that writes its whole body before reading (``urllib`` with
``Connection: close``) then gets the answer instead of a connection reset.

:func:`decode` turns it into JSON (400 when empty, invalid or nested deeper than
``MAX_JSON_DEPTH``: a valid request nests 5 deep). A body above ``LARGE_BODY_BYTES`` goes
to the large-request path (``large.py``), which decodes it with :func:`decode_large` in a
worker thread, a piece of rows at a time, so that no single step holds the GIL for long.

The single-row fast path in ``app.py`` reads a one-chunk body itself and comes here only
for anything else.
"""

from __future__ import annotations

import asyncio
import re

import numpy as np
import orjson

from ml_platform.serving.errors import RequestError

MAX_JSON_DEPTH = 32  # containers nested deeper than this: 400
DRAIN_FACTOR = 16  # after a 413, read and drop up to this many times the limit (at least
DRAIN_MIN_BYTES = 64 << 20  # this much) so a client still sending reads the answer, not a reset
LARGE_BODY_BYTES = 64 << 10  # bodies above this go to the large-request path (large.py)
SPLIT_BYTES = 128 << 10  # a large body is decoded in pieces of about this many bytes


class Disconnected(Exception):
    """The client went away before sending the whole body."""


def replay(first: dict, receive):
    """A ``receive`` that gives ``first`` again, then defers to ``receive``."""
    pending = [first]

    async def again():
        if pending:
            return pending.pop()
        return await receive()

    return again


def is_json(ct: bytes | None) -> bool:
    return ct == b"application/json" or (ct is not None and ct.split(b";", 1)[0].strip().lower() == b"application/json")


class BodyReader:
    """Reads request bodies within ``max_body_bytes`` and ``timeout`` seconds."""

    __slots__ = ("max_bytes", "timeout")

    def __init__(self, max_body_bytes: int, timeout_seconds: float):
        self.max_bytes = int(max_body_bytes)
        self.timeout = float(timeout_seconds)

    async def read(self, ct: bytes | None, cl: bytes | None, receive) -> bytes:
        """The whole body, or a RequestError (415, 413, 408). An error found before the body
        has arrived is raised only once the rest is read and dropped (:meth:`drain`)."""
        if not is_json(ct):
            shown = ct.decode("latin-1") if ct is not None else None
            err = RequestError(
                "unsupported_media_type",
                f"send the body as JSON with the header 'Content-Type: application/json' (got {shown!r})",
                "content-type",
                415,
            )
            await self.drain(receive, err)
            raise err
        limit = self.max_bytes
        if cl is not None:
            try:
                declared = int(cl)
            except ValueError:
                raise RequestError("bad_request", "invalid Content-Length", "content-length") from None
            if declared > limit:
                err = RequestError(
                    "payload_too_large",
                    f"the body has {declared} bytes, the limit is {limit} (serving.max_body_bytes)",
                    "body",
                    413,
                )
                await self.drain(receive, err, declared=declared)
                raise err
        msg = await receive()  # the server's read timeout covers a first chunk that never comes
        deadline = None
        chunks, size = [], 0
        while True:
            if msg["type"] == "http.disconnect":
                raise Disconnected
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > limit:
                err = RequestError(
                    "payload_too_large",
                    f"the body exceeds the limit of {limit} bytes (serving.max_body_bytes)",
                    "body",
                    413,
                )
                if msg.get("more_body", False):
                    await self.drain(receive, err, received=size)
                raise err
            chunks.append(chunk)
            if not msg.get("more_body", False):
                break
            if deadline is None:
                deadline = asyncio.get_running_loop().time() + self.timeout
            msg = await self._receive_by(receive, deadline)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _receive_by(self, receive, deadline: float) -> dict:
        """The next body message, or a 408 (and the connection closed) after ``deadline``."""
        try:
            return await asyncio.wait_for(receive(), max(0.0, deadline - asyncio.get_running_loop().time()))
        except TimeoutError:
            raise RequestError(
                "timeout",
                f"the body did not arrive within {self.timeout:g} s (serving.body_timeout_seconds)",
                "body",
                408,
                close=True,
            ) from None

    async def drain(self, receive, err: RequestError, declared: int | None = None, received: int = 0) -> None:
        """Read and drop the rest of the body before answering ``err``: at most DRAIN_FACTOR
        times the limit (DRAIN_MIN_BYTES at least) within ``timeout``. When that is not
        enough, ``err.close`` asks for the connection to be closed after the answer."""
        cap = max(DRAIN_MIN_BYTES, DRAIN_FACTOR * self.max_bytes)
        if declared is not None and declared > cap:
            err.close = True
            return
        deadline = asyncio.get_running_loop().time() + self.timeout
        while received <= cap:
            try:
                msg = await self._receive_by(receive, deadline)
            except RequestError:
                break
            if msg["type"] == "http.disconnect":
                raise Disconnected
            received += len(msg.get("body", b""))
            if not msg.get("more_body", False):
                return
        err.close = True


# ---------------------------------------------------------------- decoding
def decode(raw: bytes):
    """The JSON value of a body, or a 400 (empty, not JSON, nested too deep)."""
    if not raw or raw.isspace():
        raise RequestError("empty_body", "the body is empty (expected a JSON object)", "body")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise RequestError("invalid_json", f"the body is not valid JSON: {e}", "body") from None
    check_depth(body, raw)
    return body


def decode_large(raw: bytes):
    """:func:`decode` for a body above LARGE_BODY_BYTES, in pieces (:func:`_loads_large`);
    runs in a worker thread."""
    try:
        body = _loads_large(raw)
    except orjson.JSONDecodeError as e:
        raise RequestError("invalid_json", f"the body is not valid JSON: {e}", "body") from None
    if _bracket_count(raw) > MAX_JSON_DEPTH and _max_depth_bound(raw) > MAX_JSON_DEPTH:
        _raise_too_deep(body)
    return body


def check_depth(body, raw: bytes) -> None:
    """400 when the decoded ``body`` nests deeper than MAX_JSON_DEPTH (a cheap upper bound
    first: the exact walk only runs when the bytes could nest that deep)."""
    if _bracket_count(raw) > MAX_JSON_DEPTH:
        _raise_too_deep(body)


def _bracket_count(raw: bytes) -> int:
    """An upper bound of the nesting depth of a JSON text (brackets inside strings count too)."""
    return raw.count(b"[") + raw.count(b"{")


def _max_depth_bound(raw: bytes, slice_bytes: int = 1 << 20) -> int:
    """A tighter upper bound: the running count of opening minus closing brackets (strings
    included), slice by slice (no numpy call on the whole body holds the GIL for long)."""
    arr = np.frombuffer(raw, dtype=np.uint8)
    depth, top = 0, 0
    for i in range(0, len(arr), slice_bytes):
        a = arr[i : i + slice_bytes]
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
            return (fmt(steps[: min(last_key + 1, 4)]) or "body"), (path if len(path) <= 80 else path[:77] + "...")
        if type(o) is dict:
            for k, v in o.items():
                if type(v) is dict or type(v) is list:
                    stack.append((v, d + 1, entry, k))
        else:
            for i, v in enumerate(o):
                if type(v) is dict or type(v) is list:
                    stack.append((v, d + 1, entry, i))
    return None


def _raise_too_deep(body) -> None:
    if type(body) is not dict and type(body) is not list:
        return
    hit = _too_deep(body)
    if hit is not None:
        raise RequestError(
            "too_deep",
            f"the body nests containers more than {MAX_JSON_DEPTH} levels deep (at {hit[1]}); values must be scalars",
            hit[0],
        )


# The shapes a big request usually has (MLflow row lists), decoded piece by piece.
_RECORDS_HEAD = re.compile(rb'\A\s*\{\s*"(dataframe_records|inputs|instances)"\s*:\s*\[')
_RECORDS_TAIL = re.compile(rb"\]\s*\}\s*\Z")
_RECORDS_SEP = re.compile(rb"\}\s*,\s*\{")
_SPLIT_HEAD = re.compile(
    rb'\A\s*\{\s*"dataframe_split"\s*:\s*\{\s*"columns"\s*:\s*(\[[^\[\]]*\])\s*,'
    rb'\s*"data"\s*:\s*\['
)
_SPLIT_TAIL = re.compile(rb"\]\s*\}\s*\}\s*\Z")
_SPLIT_SEP = re.compile(rb"\]\s*,\s*\[")


def _tail(raw: bytes, pattern: re.Pattern, start: int) -> int | None:
    """Where ``pattern`` (anchored at the end) starts, looking at the last 64 bytes only."""
    base = max(start, len(raw) - 64)
    t = pattern.search(raw, base)
    return t.start() if t is not None else None


def _loads_pieces(middle: bytes, sep: re.Pattern, piece_bytes: int) -> list | None:
    """The values of the JSON array whose inside is ``middle``, decoded in pieces of about
    ``piece_bytes`` cut at ``sep`` (between two values), or None when that fails. A cut inside
    a string never decodes (the piece before it ends inside that string), and when every piece
    decodes, the pieces joined by commas are exactly the array's values (JSON's grammar is unambiguous)."""
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
    is decoded a piece of rows at a time, so that no single call holds the GIL for long
    (``orjson.loads`` of a whole multi-megabyte body would). Any other shape, or anything
    unexpected, is decoded in one go (which also gives the JSON error message)."""
    m = _RECORDS_HEAD.match(raw)
    if m:
        end = _tail(raw, _RECORDS_TAIL, m.end())
        if end is not None:
            rows = _loads_pieces(raw[m.end() : end], _RECORDS_SEP, piece_bytes)
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
            rows = _loads_pieces(raw[m.end() : end], _SPLIT_SEP, piece_bytes) if columns is not None else None
            if rows is not None:
                return {"dataframe_split": {"columns": columns, "data": rows}}
    return orjson.loads(raw)
