"""Live sample of scored rows, for drift monitoring and performance tracking.

The request path only appends one tuple per request to a bounded buffer (no I/O, no
per-row work). Two bounds keep it cheap at any traffic: a per-second row budget
(``rows_per_second``, per worker: sampling every request at full load would cost
throughput and tail latency, and write gigabytes a day) and the buffer size
``max_rows``. Requests over either bound are skipped and counted. On disk, each model's
directory is capped at ``max_bytes`` (the oldest files are deleted).

A background task empties the buffer every few seconds: it encodes the rows on
the event loop in small slices (so no request waits more than a fraction of a
millisecond, where a writer thread would hold the GIL for whole switch intervals) and
writes, per model, in a thread, ``<sample_dir>/<model>/live-<UTC timestamp>-<pid>.jsonl`` (written to
a hidden temporary name and renamed, so readers never see a partial file).

One JSON object per row: the feature columns (numeric as float or null, categorical as
the category string the model saw), the id column when the request sent it, and
``_ts`` (ISO 8601 UTC), ``_version`` (model version), ``_prediction`` (class label or
value) and, for classification, ``_probabilities`` ({class: p}). The ``live_drift`` asset
reads it back (``core/live.py``); by hand, ``pandas.read_json(path, lines=True, dtype=False)``
keeps category strings such as "3" as strings.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from datetime import UTC, datetime
from pathlib import Path

import orjson

from ml_platform.names import COL_PREDICTION, COL_PROBABILITIES, COL_TS, COL_VERSION
from ml_platform.serving.store import atomic_write

log = logging.getLogger("ml_platform.serving")
_dumps = orjson.dumps
_OPTS = orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS
SLICE = 32  # requests encoded per event-loop slice


class LiveSampler:
    def __init__(
        self,
        sample_dir: Path,
        max_rows: int = 10_000,
        rows_per_second: float | None = None,
        max_bytes: int | None = None,
    ):
        self.dir = Path(sample_dir)
        self.max_rows = max_rows
        self.max_bytes = max_bytes  # per model directory: the oldest files go first
        self.rate = rows_per_second  # None: no budget, only the buffer bound
        self.budget = float("inf") if rows_per_second is None else rows_per_second
        self.window_end = 0.0
        self.buf: deque = deque()
        self.rows = 0
        self.dropped: dict[str, int] = {}
        self.unwritable: dict[str, int] = {}  # rows that could not be encoded (skipped, counted)

    def add(self, model, parsed, outs) -> bool:
        """Hot path: O(1), never blocks. Returns False when the request was skipped."""
        n = parsed.n
        now = time.time()
        if self.rate is not None and now >= self.window_end:  # a new one-second window
            self.window_end = now + 1.0
            self.budget = self.rate
        if self.budget <= 0 or self.rows + n > self.max_rows:
            self.dropped[model.name] = self.dropped.get(model.name, 0) + n
            return False
        self.budget -= n  # a request is taken whole; the next window starts afresh
        self.buf.append((now, model, parsed, outs))
        self.rows += n
        return True

    def add_many(self, model, items: list) -> bool:
        """``add`` for one request scored in chunks (``items``: [(parsed, outs)]): taken or
        skipped whole, like a request in one piece."""
        n = sum(parsed.n for parsed, _ in items)
        now = time.time()
        if self.rate is not None and now >= self.window_end:
            self.window_end = now + 1.0
            self.budget = self.rate
        if self.budget <= 0 or self.rows + n > self.max_rows:
            self.dropped[model.name] = self.dropped.get(model.name, 0) + n
            return False
        self.budget -= n
        for parsed, outs in items:
            self.buf.append((now, model, parsed, outs))
        self.rows += n
        return True

    def take(self) -> tuple[list, dict]:
        items = list(self.buf)
        self.buf.clear()
        self.rows = 0
        dropped, self.dropped = self.dropped, {}
        return items, dropped

    def encode(self, items: list, out: dict[str, list[bytes]]) -> None:
        """Append the JSONL lines of ``items`` to ``out[model]`` (CPU only, no I/O). Each row
        is encoded on its own: one that cannot be (whatever a request smuggled in) is
        skipped and counted in ``unwritable``, the others are written."""
        last_ms, iso = None, ""
        for ts, model, parsed, outs in items:
            ms = int(ts * 1000)
            if ms != last_ms:
                last_ms = ms
                iso = datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")
            lines = out.setdefault(model.name, [])
            try:
                cols = [(k, v.tolist()) for k, v in parsed.columns.items()]  # NaN -> null (orjson)
                idc = model.schema.id_column
                ids = parsed.ids if idc else None
                if model.classification:
                    preds = outs[0].tolist()
                    keys = model.class_keys
                    probas = outs[1].tolist()
                else:
                    preds = outs[0].reshape(-1).tolist()
                    probas = None
            except Exception:  # noqa: BLE001 - a request the sample cannot take
                log.warning(
                    "live sample: a request of %s (%s rows) could not be encoded",
                    model.name,
                    getattr(parsed, "n", "?"),
                    exc_info=True,
                )
                self._unwritable(model.name, getattr(parsed, "n", 1))
                continue
            version = model.version
            for i in range(parsed.n):
                row = {k: v[i] for k, v in cols}
                if ids is not None:
                    row[idc] = ids[i]
                row[COL_TS] = iso
                row[COL_VERSION] = version
                row[COL_PREDICTION] = preds[i]
                if probas is not None:
                    row[COL_PROBABILITIES] = dict(zip(keys, probas[i]))
                try:
                    lines.append(_dumps(row, default=str, option=_OPTS))
                except (TypeError, ValueError):  # orjson.JSONEncodeError is a TypeError
                    self._unwritable(model.name, 1)

    def _unwritable(self, name: str, n: int) -> None:
        self.unwritable[name] = self.unwritable.get(name, 0) + n

    def take_unwritable(self) -> dict[str, int]:
        out, self.unwritable = self.unwritable, {}
        return out

    def write_lines(self, per_model: dict[str, list[bytes]]) -> dict[str, int]:
        """Blocking file I/O (run it in a thread): one JSONL file per model."""
        written = {}
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        for name, lines in per_model.items():
            if not lines:
                continue
            path = self.dir / name / f"live-{stamp}-{os.getpid()}.jsonl"
            try:
                atomic_write(path, b"".join(lines))
                written[name] = len(lines)
            except OSError as e:
                log.warning("live sample for %s not written to %s: %s", name, path, e)
            if self.max_bytes is not None:
                self.trim(self.dir / name)
        return written

    def trim(self, model_dir: Path) -> int:
        """Delete the oldest sample files until ``model_dir`` holds at most ``max_bytes``
        (the newest file always stays). Returns the number of files deleted. Workers share
        the directory, so a file another worker deleted first is simply skipped."""
        files = []
        for p in model_dir.glob("live-*.jsonl"):
            try:
                files.append((p.name, p.stat().st_size, p))
            except FileNotFoundError:
                continue
        files.sort()  # names sort by time
        total, deleted = sum(size for _, size, _ in files), 0
        for _, size, p in files[:-1]:
            if total <= self.max_bytes:
                break
            try:
                p.unlink()
                deleted += 1
            except FileNotFoundError:
                pass
            total -= size
        return deleted

    async def flush(self, count) -> dict[str, int]:
        """Empty the buffer to disk: encode on the event loop, SLICE requests at a time, and
        write in a thread. ``count(model, rows, dropped, unwritable=0)`` is told what happened
        (``Metrics.sampled``). -> rows written per model."""
        items, dropped = self.take()
        for m, d in dropped.items():
            count(m, 0, d)
        if not items:
            return {}
        lines: dict[str, list[bytes]] = {}
        for i in range(0, len(items), SLICE):
            self.encode(items[i : i + SLICE], lines)
            await asyncio.sleep(0)  # let requests in between slices
        for m, bad in self.take_unwritable().items():
            count(m, 0, 0, bad)
            log.warning("live sample: %d row(s) of %s could not be encoded and were skipped", bad, m)
        written = await asyncio.to_thread(self.write_lines, lines)
        for m, r in written.items():
            count(m, r, 0)
        return written

    async def flush_forever(self, count, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await self.flush(count)
            except Exception:  # noqa: BLE001
                log.exception("live sample flush failed")

    def write(self, items: list) -> dict[str, int]:
        """Encode and write in one go (shutdown, tests)."""
        out: dict[str, list[bytes]] = {}
        self.encode(items, out)
        return self.write_lines(out)
