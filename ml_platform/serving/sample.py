"""Live sample of scored rows, for drift monitoring and performance tracking.

The request path only appends one tuple per request to a bounded buffer (no I/O, no
per-row work); when the buffer holds ``max_rows`` rows, new requests are dropped and
counted. A background task calls :meth:`LiveSampler.flush` every few seconds, which
writes, per model, ``<sample_dir>/<model>/live-<UTC timestamp>-<pid>.jsonl`` (written to
a hidden temporary name and renamed, so readers never see a partial file).

One JSON object per row: the feature columns (numeric as float or null, categorical as
the category string the model saw), the id column when the request sent it, and
``_ts`` (ISO 8601 UTC), ``_version`` (model version), ``_prediction`` (class label or
value) and, for classification, ``_probabilities`` ({class: p}). Read it with
``pandas.read_json(path, lines=True)``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import deque
from datetime import datetime, timezone
from pathlib import Path

from ml_platform.serving.store import atomic_write

log = logging.getLogger("ml_platform.serving")


class LiveSampler:
    def __init__(self, sample_dir: Path, max_rows: int = 10_000):
        self.dir = Path(sample_dir)
        self.max_rows = max_rows
        self.buf: deque = deque()
        self.rows = 0
        self.dropped: dict[str, int] = {}

    def add(self, model, parsed, outs) -> bool:
        """Hot path: O(1), never blocks. Returns False when the request was dropped."""
        n = parsed.n
        if self.rows + n > self.max_rows:
            self.dropped[model.name] = self.dropped.get(model.name, 0) + n
            return False
        self.buf.append((time.time(), model, parsed, outs))
        self.rows += n
        return True

    def take(self) -> tuple[list, dict]:
        items = list(self.buf)
        self.buf.clear()
        self.rows = 0
        dropped, self.dropped = self.dropped, {}
        return items, dropped

    @staticmethod
    def _rows(ts: float, model, parsed, outs):
        iso = datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds")
        cols = {}
        for k, arr in parsed.columns.items():
            vals = arr.tolist()
            if arr.dtype.kind == "f":  # NaN (missing) -> null
                vals = [None if x != x else x for x in vals]
            cols[k] = vals
        idc = model.schema.id_column
        if model.classification:
            preds = outs[0].tolist()
            probas = [dict(zip(model.class_keys, p)) for p in outs[1].tolist()]
        else:
            preds = outs[0].reshape(-1).tolist()
            probas = None
        names = list(cols)
        for i in range(parsed.n):
            row = {k: cols[k][i] for k in names}
            if idc and parsed.ids is not None:
                row[idc] = parsed.ids[i]
            row["_ts"] = iso
            row["_version"] = model.version
            row["_prediction"] = preds[i]
            if probas is not None:
                row["_probabilities"] = probas[i]
            yield row

    def write(self, items: list) -> dict[str, int]:
        """Blocking (run it in a thread): one JSONL file per model. -> rows per model."""
        per_model: dict[str, list[str]] = {}
        for ts, model, parsed, outs in items:
            lines = per_model.setdefault(model.name, [])
            for row in self._rows(ts, model, parsed, outs):
                lines.append(json.dumps(row, default=str))
        written = {}
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        for name, lines in per_model.items():
            path = self.dir / name / f"live-{stamp}-{os.getpid()}.jsonl"
            try:
                atomic_write(path, ("\n".join(lines) + "\n").encode())
                written[name] = len(lines)
            except OSError as e:
                log.warning("live sample for %s not written to %s: %s", name, path, e)
        return written
