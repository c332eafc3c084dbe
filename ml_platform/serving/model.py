"""One loaded model version: its ONNX Runtime session, request schema and output plan,
plus the infrastructure validation a version must pass before it may serve.

What the answers look like is the protocols' business (``requests.mlflow_predictions``,
``v2.py``); what a request may hold is the schema's (``requests.Schema``)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import numpy as np
import onnxruntime as ort

from ml_platform.serving import v2
from ml_platform.serving.batching import RowBatcher
from ml_platform.serving.errors import RequestError
from ml_platform.serving.requests import Schema
from ml_platform.serving.store import ModelStore
from ml_platform.settings import GateConfig

LATENCY_CALLS = 50
DEFAULT_LATENCY_BUDGET_MS = GateConfig.model_fields["latency_budget_ms"].default  # a version without its own


class RejectedModel(Exception):
    """This version failed validation; ``reason`` says why (the old version keeps serving)."""

    def __init__(self, version: int | None, reason: str):
        super().__init__(reason)
        self.version = version
        self.reason = reason


def make_session(onnx_bytes: bytes) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(onnx_bytes, so, providers=["CPUExecutionProvider"])


class LoadedModel:
    """Immutable once built: requests grab a reference and use only it, so swapping the
    slot's reference never disturbs a request in flight."""

    def __init__(self, name: str, version: int, onnx_bytes: bytes, meta: dict, pointer: dict | None = None):
        self.name = name
        self.version = version
        self.version_str = str(version)
        self.version_bytes = self.version_str.encode()
        self.headers = {"X-Model-Version": self.version_str}
        self.meta = meta
        self.pointer = pointer
        self.loaded_at = datetime.now(UTC).isoformat(timespec="seconds")
        task = meta.get("task")
        if task not in ("classification", "regression"):
            raise RejectedModel(version, f"metadata task must be classification or regression (got {task!r})")
        self.task = task
        self.classification = task == "classification"
        try:
            self.session = make_session(onnx_bytes)
        except Exception as e:  # noqa: BLE001 - any ORT failure means "not loadable"
            raise RejectedModel(version, f"ONNX Runtime cannot load v{version}: {str(e)[:300]}") from None
        inputs = {i.name: i for i in self.session.get_inputs()}
        # A model with a transform: callers send (and are validated against) its input
        # ``features``; the graph takes ``model_features``, what the version's transform returns.
        self.transform = None
        spec = meta.get("transform")
        if spec:
            # Only a model with a transform pays for pandas: the endpoint starts without it.
            from ml_platform.core import transform
            from ml_platform.settings import FeatureSpec

            try:
                self.transform = transform.load_from_source(
                    spec["source"], spec["path"], spec.get("package", ""), spec.get("file", "")
                )
                self.transform_path = spec["path"]
                self.model_features = {
                    c: FeatureSpec.model_validate(s) for c, s in (meta.get("model_features") or {}).items()
                }
            except (ValueError, KeyError, TypeError) as e:  # TransformError is a ValueError
                raise RejectedModel(version, f"transform: {e}") from None
        feats = (meta.get("model_features") if spec else meta.get("features")) or {}
        if set(inputs) != set(feats):
            raise RejectedModel(
                version, f"ONNX inputs {sorted(inputs)} do not match the metadata features {sorted(feats)}"
            )
        ranks = {}
        for name, spec in feats.items():
            want = "tensor(float)" if spec.get("type") == "numeric" else "tensor(string)"
            if inputs[name].type != want:
                raise RejectedModel(version, f"ONNX input {name!r} is {inputs[name].type}, expected {want}")
            ranks[name] = len(inputs[name].shape or [None, 1])
        try:
            self.schema = Schema(meta, ranks if self.transform is None else {})
        except (ValueError, TypeError) as e:
            raise RejectedModel(version, f"metadata: {e}") from None
        outs = self.session.get_outputs()
        if self.classification:
            classes = meta.get("classes")
            if not isinstance(classes, list) or len(classes) < 2:
                raise RejectedModel(version, "classification metadata needs 'classes' (2 or more)")
            self.classes = classes
            self.class_keys = [str(c) for c in classes]
            by_name = {o.name: o for o in outs}
            label = by_name.get("label") or next(
                (o for o in outs if o.type in ("tensor(int64)", "tensor(string)")), None
            )
            proba = by_name.get("probabilities") or next((o for o in outs if o.type == "tensor(float)"), None)
            if label is None or proba is None:
                raise RejectedModel(
                    version,
                    f"classification graph needs a label and a probabilities "
                    f"output (has {[o.name for o in outs]}); export with ZipMap off",
                )
            self.output_names = [label.name, proba.name]
            self._label_keys = {c: str(c) for c in classes}  # np.int64(1) hashes like 1
            self.label_datatype = v2.FROM_ORT.get(label.type, "BYTES")
        else:
            self.classes = None
            self.class_keys = None
            if not outs:
                raise RejectedModel(version, "the graph has no outputs")
            self.output_names = [outs[0].name]
        # The public run() re-checks input names on every call; they were checked once
        # above, so call the C++ session directly when it is there (ORT >= 1.x).
        inner = getattr(self.session, "_sess", None)
        self._run = inner.run if inner is not None and hasattr(inner, "run") else self.session.run
        self.value_buckets = meta.get("prediction_buckets")
        self.last_latency_ms: dict = {}
        self.hot: dict = {}  # protocol -> metrics.Hot, filled by the app on first use
        self.batcher = RowBatcher(self)  # single-row requests share ONNX Runtime calls
        # checked on the smoke rows by validate(); with a transform, one request's bad row must
        # not fail its neighbours' rows, so requests are not batched together
        self.batchable = self.transform is None

    def label_key(self, label) -> str:
        key = self._label_keys.get(label)
        return key if key is not None else str(label)

    # ---- inference ----
    def run(self, feeds: dict) -> list:
        if self.transform is not None:
            feeds = self._transformed(feeds)
        return self._run(self.output_names, feeds, None)

    def _transformed(self, feeds: dict) -> dict:
        """Parsed request columns -> the version's transform -> the graph's feeds. A row the
        transform cannot take is the caller's problem (422), named by its position."""
        from ml_platform.core import transform  # loaded with the model (see __init__)
        from ml_platform.core.frames import feeds_of

        df = transform.raw_frame(feeds, self.meta["features"])
        try:
            out = transform.apply(self.transform, df, self.transform_path, inputs=list(self.meta["features"]))
            return feeds_of(out, self.model_features)
        except (transform.TransformError, KeyError) as e:
            msg = (
                str(e) if isinstance(e, transform.TransformError) else f"transform {self.transform_path}: no column {e}"
            )
            field = msg.split(":", 1)[0] if msg.startswith("row ") else None
            raise RequestError("transform_failed", msg, field=field, status=422) from None

    # ---- infrastructure validation ----
    def validate(self, latency_budget_ms: float | None = None) -> None:
        """Smoke rows give finite outputs of the right shape, and a single-row call meets
        the latency budget (p99 over ``LATENCY_CALLS`` calls). Raises ``RejectedModel``."""
        v = self.version
        rows = self.meta.get("smoke_rows")
        if rows is None or rows == []:
            rows = [self.schema.synthetic_row()]
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise RejectedModel(v, "metadata smoke_rows must be a list of {feature: value} objects")
        try:
            parsed = self.schema.parse_rows(rows)
        except RequestError as e:
            raise RejectedModel(v, f"smoke_rows do not fit the schema: {e.message}") from None
        try:
            outs = self.run(parsed.feeds)
        except Exception as e:  # noqa: BLE001
            raise RejectedModel(v, f"inference failed on smoke_rows: {str(e)[:300]}") from None
        self._check_shapes(outs, parsed.n)
        self.batchable = self._rows_independent(rows, outs)
        one = self.schema.parse_rows([rows[0]])
        for _ in range(5):  # warm-up
            self.run(one.feeds)
        # An explicit budget (the operator's), else the version's own (its gate's); the best of three
        # rounds: a busy machine's scheduling stalls hit one round, a really slow model all three.
        if latency_budget_ms is None:
            latency_budget_ms = float(self.meta.get("latency_budget_ms") or DEFAULT_LATENCY_BUDGET_MS)
        rounds = []
        for _ in range(3):
            times = []
            for _ in range(LATENCY_CALLS):
                t0 = time.perf_counter()
                self.run(one.feeds)
                times.append(time.perf_counter() - t0)
            rounds.append([float(x) * 1000 for x in np.percentile(times, [50, 99])])
        p50, p99 = min(rounds, key=lambda r: r[1])
        self.last_latency_ms = {"p50": round(p50, 4), "p99": round(p99, 4)}
        if p99 > latency_budget_ms:
            raise RejectedModel(v, f"single-row latency p99 {p99:.2f} ms exceeds the budget {latency_budget_ms} ms")

    def _rows_independent(self, rows: list[dict], outs: list) -> bool:
        """Does each smoke row, scored alone, get what it got in the batch? Only then may
        concurrent single-row requests share a call (``batching.py``); otherwise they run
        one by one. With fewer than two smoke rows nothing can be compared: trust the export."""
        if len(rows) < 2:
            return True
        for i, row in enumerate(rows):
            alone = self.run(self.schema.parse_rows([row]).feeds)
            for a, b in zip(alone, outs):
                if a.shape[1:] != b.shape[1:]:
                    return False
                same = (
                    np.allclose(a[0], b[i], rtol=1e-5, atol=1e-6)
                    if a.dtype.kind in "fiub"
                    else np.array_equal(a[0], b[i])
                )
                if not same:
                    return False
        return True

    def _check_shapes(self, outs: list, n: int) -> None:
        v = self.version
        if self.classification:
            lab, proba = outs
            k = len(self.classes)
            if lab.shape != (n,) or proba.shape != (n, k):
                raise RejectedModel(
                    v,
                    f"smoke_rows: expected label [{n}] and probabilities [{n}, {k}], "
                    f"got {list(lab.shape)} and {list(proba.shape)}",
                )
            if not np.all(np.isfinite(proba)):
                raise RejectedModel(v, "smoke_rows: non-finite probabilities")
            labels = set(lab.tolist())
            if not labels <= set(self.classes):
                raise RejectedModel(
                    v,
                    f"smoke_rows: labels {sorted(map(str, labels))} are not among "
                    f"the metadata classes {self.class_keys}",
                )
        else:
            pred = outs[0]
            if pred.shape not in ((n,), (n, 1)):
                raise RejectedModel(v, f"smoke_rows: expected predictions [{n}], got {list(pred.shape)}")
            if not np.all(np.isfinite(pred)):
                raise RejectedModel(v, "smoke_rows: non-finite predictions")


def load_version(
    store: ModelStore, name: str, version: int, latency_budget_ms: float | None, pointer: dict | None = None
) -> LoadedModel:
    """Read, build and validate one version; raises ``RejectedModel`` on any failure."""
    try:
        onnx_bytes, meta = store.read(name, version)
    except (OSError, ValueError) as e:
        raise RejectedModel(version, f"cannot read v{version}: {e}") from None
    if not isinstance(meta, dict):
        raise RejectedModel(version, "metadata is not a JSON object")
    model = LoadedModel(name, version, onnx_bytes, meta, pointer)
    model.validate(latency_budget_ms)
    return model
