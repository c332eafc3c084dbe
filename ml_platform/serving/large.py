"""The large-request path: a body above ``body.LARGE_BODY_BYTES`` is decoded, validated,
scored and encoded in a worker thread, so single-row requests keep their latency.

The work runs ``CONCURRENCY`` requests at a time, in chunks of ``CHUNK_ROWS`` rows
(JSON decoded in pieces, ``body.decode_large``): no single step holds the GIL for more
than a few milliseconds (ONNX Runtime releases it), and the server lowers the
interpreter's switch interval to ``SWITCH_INTERVAL`` (``app.ServingState.lifespan``) so
the event loop gets the GIL back quickly between steps. The answer and its errors are
exactly those of the same request scored in one piece (errors name the row of the whole
request). Only the accounting (metrics, live sample) runs on the event loop.
"""

from __future__ import annotations

import asyncio
import re
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import orjson

from ml_platform.serving import v2
from ml_platform.serving.body import decode_large
from ml_platform.serving.errors import RequestError
from ml_platform.serving.metrics import Metrics
from ml_platform.serving.model import LoadedModel
from ml_platform.serving.requests import MLFLOW_KEYS, mlflow_predictions
from ml_platform.serving.sample import LiveSampler

CONCURRENCY = 1  # large requests worked on at once (per worker process)
CHUNK_ROWS = 1024
SWITCH_INTERVAL = 0.0005  # s; CPython's default (5 ms) would let a large request's thread
#                           hold the GIL that long each time the event loop wants it
_perf = time.perf_counter
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


def _chunks(body, protocol: str):
    """-> [(first row, request body of those rows)]: an MLflow row list longer than
    CHUNK_ROWS in pieces of CHUNK_ROWS rows, anything else whole."""
    if protocol == "mlflow" and type(body) is dict and len(body) == 1:
        key, payload = next(iter(body.items()))
        if key in MLFLOW_KEYS and key != "dataframe_split" and type(payload) is list:
            rows = payload
            wrap = lambda part: {key: part}  # noqa: E731
        elif key == "dataframe_split" and type(payload) is dict and type(payload.get("data")) is list:
            rows = payload["data"]
            wrap = lambda part: {key: {**payload, "data": part}}  # noqa: E731
        else:
            rows = None
        if rows is not None and len(rows) > CHUNK_ROWS:
            return [(i, wrap(rows[i : i + CHUNK_ROWS])) for i in range(0, len(rows), CHUNK_ROWS)]
    return [(0, body)]


class LargeRequests:
    """Scores large bodies in a worker thread; its pool is created on first use."""

    def __init__(self, metrics: Metrics, sampler: LiveSampler | None):
        self.metrics = metrics
        self.sampler = sampler
        self._sem: asyncio.Semaphore | None = None
        self._pool: ThreadPoolExecutor | None = None

    async def score(self, model: LoadedModel, hot, protocol: str, raw: bytes, t0: float, sample: bool = True):
        """-> (200, response body, X-Model-Version, False), as ``ServingState.score``; a
        client error is raised (RequestError)."""
        if self._sem is None:
            self._sem = asyncio.Semaphore(CONCURRENCY)
            self._pool = ThreadPoolExecutor(CONCURRENCY, thread_name_prefix="ml_platform-large")
        async with self._sem:
            out, n, samples, classes, values = await asyncio.get_running_loop().run_in_executor(
                self._pool, self._work, model, protocol, raw
            )
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

    def _work(self, model: LoadedModel, protocol: str, raw: bytes):
        """In the worker thread: decode, validate, score and encode, CHUNK_ROWS rows at a
        time. -> (response body, rows, live-sample items, class counts, regression values)."""
        body = decode_large(raw)
        schema = model.schema
        samples, classes, values, parts, n = [], {}, [], [], 0
        for offset, part in _chunks(body, protocol):
            try:
                if protocol == "mlflow":
                    parsed = schema.parse_mlflow(part)
                else:
                    parsed, wanted, rid = v2.parse_request(schema, part)
                    v2.check_outputs(model, wanted)
                if parsed.ids is not None:
                    schema.check_ids(parsed.ids)
            except RequestError as e:
                raise _shifted(e, offset) from None
            outs = model.run(parsed.feeds)
            if protocol == "mlflow":
                parts.append(orjson.dumps(mlflow_predictions(model, outs))[1:-1])
            else:
                parts.append(orjson.dumps(v2.response(model, outs, parsed.n, wanted, rid)))
            if model.classification:
                Metrics.predicted_classes(classes, outs[0])
            else:
                values.append(outs[0].reshape(-1))
            if self.sampler is not None:
                samples.append((parsed, outs))
            n += parsed.n
        out = b'{"predictions":[' + b",".join(p for p in parts if p) + b"]}" if protocol == "mlflow" else parts[0]
        return out, n, samples, classes, (np.concatenate(values) if values else None)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = self._sem = None
