"""Prometheus metrics for the endpoint, hand-rolled (text exposition format 0.0.4).

Counters live in plain dicts keyed by label tuples: the app runs on one event loop per
worker process, so increments need no lock. With ``workers > 1`` every worker exposes
its own numbers (scrape each worker, or sum in Prometheus by ``instance``).

Series (all prefixed ``ml_platform_``):

- ``requests_total{model,version,protocol}``            scored requests
- ``rows_total{model,version}``                         scored rows
- ``request_errors_total{model,version,kind}``          4xx/5xx answers by error kind
- ``request_latency_seconds{model,protocol}``           histogram, in-app handling time
- ``predictions_total{model,version,class}``            classification: predicted class counts
- ``prediction_value{model,version}``                   regression: histogram of predicted values
- ``model_version{model}`` / ``model_loaded{model}``    gauges
- ``inference_batch_rows{model}``                      histogram, rows per ONNX Runtime call shared
  by concurrent single-row requests (``serving/batching.py``)
- ``model_reloads_total{model,status}``                 loaded / rejected
- ``live_sample_rows_total{model}`` / ``live_sample_dropped_rows_total{model}`` /
  ``live_sample_unwritable_rows_total{model}`` (rows that could not be encoded, skipped)
"""

from __future__ import annotations

from bisect import bisect_left

import numpy as np

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_POS = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6)
VALUE_BUCKETS = tuple(-b for b in reversed(_POS)) + (0.0,) + _POS
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def _esc(v) -> str:
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names, values) -> str:
    return ",".join(f'{n}="{_esc(v)}"' for n, v in zip(names, values))


def _fmt(x: float) -> str:
    if x == float("inf"):
        return "+Inf"
    return repr(float(x)) if isinstance(x, float) else str(x)


class _Histogram:
    __slots__ = ("bounds", "counts", "sum", "count")

    def __init__(self, bounds):
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, v: float) -> None:
        self.counts[bisect_left(self.bounds, v)] += 1  # le semantics: v <= bound
        self.sum += v
        self.count += 1

    def observe_many(self, arr: np.ndarray) -> None:
        arr = arr[np.isfinite(arr)]
        if not len(arr):
            return
        idx = np.searchsorted(self.bounds, arr, side="left")
        for i, c in zip(*np.unique(idx, return_counts=True)):
            self.counts[int(i)] += int(c)
        self.sum += float(arr.sum())
        self.count += len(arr)

    def lines(self, name: str, label_str: str) -> list[str]:
        out, cum = [], 0
        sep = "," if label_str else ""
        for b, c in zip(self.bounds, self.counts):
            cum += c
            out.append(f'{name}_bucket{{{label_str}{sep}le="{_fmt(b)}"}} {cum}')
        cum += self.counts[-1]
        out.append(f'{name}_bucket{{{label_str}{sep}le="+Inf"}} {cum}')
        out.append(f"{name}_sum{{{label_str}}} {repr(self.sum)}")
        out.append(f"{name}_count{{{label_str}}} {self.count}")
        return out


class Hot:
    """The counters of one (model, version, protocol), fetched once per model version and
    bumped in place on the hot path: no label tuples, no dict look-ups per request.
    ``classes`` (label -> count) is shared by the protocols of one (model, version) and
    ``latency`` by the versions of one (model, protocol); ``render`` merges them in."""

    __slots__ = ("key", "requests", "rows", "latency", "classes")

    def __init__(self, key: tuple, latency: _Histogram, classes: dict):
        self.key = key
        self.requests = 0
        self.rows = 0
        self.latency = latency
        self.classes = classes


class Metrics:
    def __init__(self):
        self._hot: dict[tuple, Hot] = {}
        self._hot_classes: dict[tuple, dict] = {}
        self.errors: dict[tuple, int] = {}
        self.latency: dict[tuple, _Histogram] = {}
        self.values: dict[tuple, _Histogram] = {}
        self.batches: dict[str, _Histogram] = {}
        self.reloads: dict[tuple, int] = {}
        self.sample_rows: dict[str, int] = {}
        self.sample_dropped: dict[str, int] = {}
        self.sample_unwritable: dict[str, int] = {}
        self.gauges = None  # callable -> {model: (version|None, loaded)}

    # ---- hot path ----
    def hot(self, model: str, version: str, protocol: str) -> Hot:
        """The in-place counters of (model, version, protocol); the caller caches them."""
        k = (model, version, protocol)
        h = self._hot.get(k)
        if h is None:
            lat = self.latency.get((model, protocol))
            if lat is None:
                lat = self.latency[(model, protocol)] = _Histogram(LATENCY_BUCKETS)
            h = self._hot[k] = Hot(k, lat, self._hot_classes.setdefault((model, version), {}))
        return h

    def _merged(self) -> tuple[dict, dict, dict]:
        """requests, rows and classes as label tuples, from the ``Hot`` counters."""
        req, rows, cls = {}, {}, {}
        for (m, v, p), h in list(self._hot.items()):
            if h.requests:
                req[(m, v, p)] = h.requests
                rows[(m, v)] = rows.get((m, v), 0) + h.rows
        for (m, v), d in list(self._hot_classes.items()):
            for label, c in list(d.items()):
                cls[(m, v, label)] = c
        return req, rows, cls

    def error(self, model: str, version: str, kind: str) -> None:
        k = (model, version, kind)
        self.errors[k] = self.errors.get(k, 0) + 1

    @staticmethod
    def predicted_classes(classes: dict, labels) -> None:
        """Count a multi-row answer's labels into ``Hot.classes`` (label string -> count)."""
        vals, counts = np.unique(np.asarray(labels, dtype=object).astype(str), return_counts=True)
        for v, c in zip(vals.tolist(), counts.tolist()):
            classes[v] = classes.get(v, 0) + c

    def predicted_values(self, model: str, version: str, values: np.ndarray, bounds=None) -> None:
        h = self.values.get((model, version))
        if h is None:
            h = self.values[(model, version)] = _Histogram(tuple(bounds or VALUE_BUCKETS))
        if len(values) == 1:
            v = float(values[0])
            if v == v and abs(v) != float("inf"):
                h.observe(v)
        else:
            h.observe_many(np.asarray(values, dtype=np.float64))

    def batch_rows(self, model: str):
        """-> the ``observe`` of the model's rows-per-call histogram (for ``RowBatcher``)."""
        h = self.batches.get(model)
        if h is None:
            h = self.batches[model] = _Histogram(BATCH_BUCKETS)
        return h.observe

    # ---- rare ----
    def reload(self, model: str, status: str) -> None:
        k = (model, status)
        self.reloads[k] = self.reloads.get(k, 0) + 1

    def sampled(self, model: str, rows: int, dropped: int, unwritable: int = 0) -> None:
        if rows:
            self.sample_rows[model] = self.sample_rows.get(model, 0) + rows
        if dropped:
            self.sample_dropped[model] = self.sample_dropped.get(model, 0) + dropped
        if unwritable:
            self.sample_unwritable[model] = self.sample_unwritable.get(model, 0) + unwritable

    def render(self) -> str:
        p = "ml_platform_"
        out: list[str] = []

        def counter(name, help_, names, data):
            out.append(f"# HELP {p}{name} {help_}")
            out.append(f"# TYPE {p}{name} counter")
            for k, v in sorted(data.items()):
                out.append(f"{p}{name}{{{_labels(names, k)}}} {v}")

        requests, rows, classes = self._merged()
        counter("requests_total", "Scored requests.", ("model", "version", "protocol"), requests)
        counter("rows_total", "Scored rows.", ("model", "version"), rows)
        counter(
            "request_errors_total",
            "Requests answered with an error, by kind.",
            ("model", "version", "kind"),
            self.errors,
        )
        out.append(f"# HELP {p}request_latency_seconds Time spent handling a scoring request in the app.")
        out.append(f"# TYPE {p}request_latency_seconds histogram")
        for k, h in sorted(self.latency.items()):
            out.extend(h.lines(p + "request_latency_seconds", _labels(("model", "protocol"), k)))
        counter("predictions_total", "Predicted classes (classification).", ("model", "version", "class"), classes)
        out.append(f"# HELP {p}prediction_value Predicted values (regression).")
        out.append(f"# TYPE {p}prediction_value histogram")
        for k, h in sorted(self.values.items()):
            out.extend(h.lines(p + "prediction_value", _labels(("model", "version"), k)))
        out.append(
            f"# HELP {p}inference_batch_rows Rows per ONNX Runtime call shared by concurrent "
            "single-row requests (a request alone, or with several rows, runs its own call)."
        )
        out.append(f"# TYPE {p}inference_batch_rows histogram")
        for m, h in sorted(self.batches.items()):
            out.extend(h.lines(p + "inference_batch_rows", _labels(("model",), (m,))))
        counter("model_reloads_total", "Model loads by outcome.", ("model", "status"), self.reloads)
        counter(
            "live_sample_rows_total",
            "Rows written to the live sample.",
            ("model",),
            {(k,): v for k, v in self.sample_rows.items()},
        )
        counter(
            "live_sample_dropped_rows_total",
            "Rows not sampled (over the per-second budget or the buffer was full).",
            ("model",),
            {(k,): v for k, v in self.sample_dropped.items()},
        )
        counter(
            "live_sample_unwritable_rows_total",
            "Sampled rows that could not be encoded as JSON (skipped; the others are written).",
            ("model",),
            {(k,): v for k, v in self.sample_unwritable.items()},
        )
        if self.gauges is not None:
            state = self.gauges()
            out.append(f"# HELP {p}model_version Version serving now (0 = none).")
            out.append(f"# TYPE {p}model_version gauge")
            for m, (v, _) in sorted(state.items()):
                out.append(f'{p}model_version{{model="{_esc(m)}"}} {v or 0}')
            out.append(f"# HELP {p}model_loaded 1 when a champion is loaded.")
            out.append(f"# TYPE {p}model_loaded gauge")
            for m, (_, loaded) in sorted(state.items()):
                out.append(f'{p}model_loaded{{model="{_esc(m)}"}} {int(loaded)}')
        return "\n".join(out) + "\n"
