"""Cross-request batching: single-row requests that arrive in the same event-loop turn
share one ONNX Runtime call.

An ONNX Runtime call has a fixed cost far above the cost of one more row, so under
concurrent load, connections sending one row each would pay that cost once per request.
Here the first single-row request of a loop turn schedules
a flush with ``call_soon`` and waits on a future; every single-row request parsed before
the flush runs joins it. The flush stacks the validated rows (``Schema.stack``), runs
the session once and hands each request its own row of the outputs. Nothing waits for a
timer, only for the next loop turn.

When the server says how many requests are in flight (``IN_FLIGHT`` in the ASGI scope:
uvicorn's set of request tasks, put there by ``serving/protocol.py``) and this request
is the only one, the app runs it at once instead: with no neighbour to share a call
with, waiting for the next loop turn would only add latency.

A batch that fails is re-run row by row, so a failure lands only on the request that
caused it. Rows are independent in every model the platform exports (trees, linear
models, preprocessing), so a row's answer does not depend on its batch-mates.
"""

from __future__ import annotations

import asyncio

IN_FLIGHT = "ml_platform.in_flight"  # ASGI scope key: a sized collection of requests in flight
MAX_BATCH_ROWS = 256  # rows per ONNX Runtime call (a bigger backlog runs as several calls)


class RowBatcher:
    """One per loaded model version (its session, its schema)."""

    __slots__ = ("model", "observe", "_pending", "_loop")

    def __init__(self, model, observe=None):
        self.model = model
        self.observe = observe  # called with the rows of each ONNX Runtime call (metrics)
        self._pending: list = []
        self._loop: asyncio.AbstractEventLoop | None = None

    def submit(self, parsed) -> asyncio.Future:
        """-> a future of the model's outputs for this one-row request (a list of arrays
        with a leading dimension of 1, as ``LoadedModel.run`` returns)."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        fut = loop.create_future()
        if not self._pending:
            loop.call_soon(self.flush)
        self._pending.append((parsed, fut))
        return fut

    def flush(self) -> None:
        batch, self._pending = self._pending, []
        for i in range(0, len(batch), MAX_BATCH_ROWS):
            self._run(batch[i : i + MAX_BATCH_ROWS])

    def _run(self, batch: list) -> None:
        model = self.model
        if self.observe is not None:
            self.observe(len(batch))
        try:
            outs = model.run(model.schema.stack([p for p, _ in batch]))
        except Exception:  # noqa: BLE001 - find the row that fails, answer the others
            for parsed, fut in batch:
                if fut.done():
                    continue
                try:
                    fut.set_result(model.run(parsed.feeds))
                except Exception as e:  # noqa: BLE001 - the request's own failure
                    fut.set_exception(e)
            return
        for i, (_, fut) in enumerate(batch):
            if not fut.done():  # a cancelled request (client gone) needs no answer
                fut.set_result([o[i : i + 1] for o in outs])
