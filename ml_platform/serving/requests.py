"""A model's request schema and the MLflow scoring protocol: JSON bodies -> ONNX Runtime
feeds (no pandas), and model outputs -> MLflow ``predictions``.

The MLflow formats are ``dataframe_split`` ({"columns", "data"}), ``dataframe_records``
(one object per row) and ``inputs`` / ``instances`` (records, or columnar {column: [...]}).
Each becomes one column of values per feature, checked by the feature's typing rules
(``features.py``); the Open Inference Protocol reaches the same columns through ``v2.py``.
The metadata's ``id_column`` is accepted (and echoed to the live sample), never fed to
the model; any other column is an error, and so is a missing feature column.

Every problem raises :class:`~ml_platform.serving.errors.RequestError` naming the column
(``field``) and, in the message, the row.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ml_platform.names import column_name
from ml_platform.serving.errors import RequestError
from ml_platform.serving.features import SMALL, Feature, json_type, shown

if TYPE_CHECKING:
    from ml_platform.serving.model import LoadedModel

__all__ = ["MAX_ID_CHARS", "MLFLOW_KEYS", "Parsed", "RequestError", "Schema", "mlflow_predictions"]

_SENTINEL = object()
# the MLflow scoring protocol's body keys (exactly one per request); all but
# dataframe_split hold rows (or, for inputs/instances, {column: [values]})
MLFLOW_KEYS = ("dataframe_split", "dataframe_records", "inputs", "instances")
MAX_ID_CHARS = 256  # an id column value: a string up to this long, a number or null
_ID_TYPES = frozenset((str, int, float, type(None)))


class Parsed:
    """A validated request: ``n`` rows, the ONNX feeds, the raw id column if sent, and
    (for the live sample) the converted feature columns as 1-D arrays (``columns``, built
    from the feeds on first use, i.e. off the request path).

    A single-row request keeps its validated values as ``row`` = (numeric values,
    category strings) and builds ``feeds`` only when asked: the endpoint stacks the rows
    of concurrent single-row requests into one ONNX Runtime call (``Schema.stack``)."""

    __slots__ = ("n", "ids", "row", "_feeds", "_columns", "_schema")

    def __init__(
        self,
        n: int,
        feeds: dict | None,
        columns: dict | None = None,
        ids: list | None = None,
        row: tuple | None = None,
        schema: Schema | None = None,
    ):
        self.n = n
        self.ids = ids
        self.row = row
        self._feeds = feeds
        self._columns = columns
        self._schema = schema

    @property
    def feeds(self) -> dict:
        f = self._feeds
        if f is None:
            f = self._feeds = self._schema._views(self.row[0], self.row[1], 1)
        return f

    @property
    def columns(self) -> dict:
        if self._columns is None:
            self._columns = {k: v.reshape(-1) for k, v in self.feeds.items()}
        return self._columns


class Schema:
    """Per-model request schema, precomputed once at load from the serving metadata.

    ``input_ranks`` maps ONNX input name -> rank (2 for ``[None, 1]``, 1 for ``[None]``)."""

    def __init__(self, meta: dict, input_ranks: dict | None = None):
        feats = meta.get("features")
        if not isinstance(feats, dict) or not feats:
            raise ValueError("metadata has no 'features'")
        self.missing = meta.get("missing_category") or "__missing__"
        self.id_column = meta.get("id_column")
        ranks = input_ranks or {}
        self.features = [Feature(c, s, self.missing, ranks.get(c, 2) == 2) for c, s in feats.items()]
        self.names = [f.name for f in self.features]
        self.name_set = frozenset(self.names)
        self.allowed = self.name_set | ({self.id_column} if self.id_column else frozenset())
        self.by_name = {f.name: f for f in self.features}
        self._split_plans: dict[tuple, tuple] = {}
        self._nf = len(self.features)
        plan, counts = [], [0, 0]
        for f in self.features:  # ONNX input -> (numeric?, index among its kind, rank 2?)
            plan.append((f.name, f.numeric, counts[f.numeric], f.rank2))
            counts[f.numeric] += 1
        self._plan = tuple(plan)

    # ---- helpers ----
    def from_columns(self, cols: dict, n: int, ids, where: str = "row") -> Parsed:
        """Validated feature columns ({name: values}) of ``n`` rows -> a Parsed request."""
        if n > SMALL:
            feeds, conv = {}, {}
            for f in self.features:
                arr = f.convert(cols[f.name], where)
                conv[f.name] = arr
                feeds[f.name] = arr.reshape(-1, 1) if f.rank2 else arr
            return Parsed(n, feeds, conv, list(ids) if ids is not None else None)
        nums, cats = [], []
        one = n == 1  # keep a single row's values as scalars (see Parsed.row)
        for f in self.features:
            values = cols[f.name]
            if f.numeric:
                f.check_small(values, where)
                nums.append(values[0] if one else values)
            else:
                s = f.strings(values, where)
                cats.append(s[0] if one else s)
        return self._assemble(nums, cats, n, list(ids) if ids is not None else None)

    def _assemble(self, nums: list, cats: list, n: int, ids) -> Parsed:
        """Validated values -> a Parsed request. ``nums``/``cats`` hold a scalar (n = 1) or a
        sequence per column; one row stays as values until its feeds are needed."""
        if n == 1:
            return Parsed(1, None, None, ids, (nums, cats), self)
        return Parsed(n, self._views(nums, cats, n), None, ids)

    def _views(self, nums, cats, n: int) -> dict:
        return views(self._plan, nums, cats, n)

    def stack(self, requests: list[Parsed]) -> dict:
        """The feeds of several single-row requests as one batch, rows in request order."""
        nums = list(zip(*[p.row[0] for p in requests]))
        cats = list(zip(*[p.row[1] for p in requests]))
        return self._views(nums, cats, len(requests))

    def parse_one(self, rec: dict, key: str = "dataframe_records") -> Parsed:
        """The single-row ``dataframe_records`` request: validate the row's values feature
        by feature (same errors, same order as ``parse_records``) straight into the feeds."""
        get = rec.get
        vals = [get(n, _SENTINEL) for n in self.names]
        if _SENTINEL in vals:
            if (spelled := self.respelled(rec)) is not None:
                return self.parse_one(spelled, key)
            self._missing(self.names[vals.index(_SENTINEL)], 0)
        if len(rec) != self._nf:
            for k in rec:
                if k not in self.allowed:
                    if (spelled := self.respelled(rec)) is not None:
                        return self.parse_one(spelled, key)
                    self._unknown(k)
        nums, cats = [], []
        for f, v in zip(self.features, vals):  # conversion after the column checks, as parse_records
            t = type(v)
            if f.numeric:
                if (t is float or t is int) and f.lo_ok <= v <= f.hi_ok:
                    nums.append(v)
                else:
                    nums.append(f.one(v))
            elif t is str and (v in f.known or f.known_str(v)):
                cats.append(v)
            else:
                cats.append(f.one(v))
        idc = self.id_column
        return self._assemble(nums, cats, 1, [get(idc)] if idc else None)

    @staticmethod
    def respelled(rec: dict) -> dict | None:
        """``rec`` with its column names in the config's spelling (Unicode NFC, ``column_name``),
        or None when they are spelled so already. Asked only when a name did not match, so the
        usual request pays nothing for it."""
        names = [column_name(k) for k in rec]
        if all(a is b for a, b in zip(names, rec)):
            return None
        if len(set(names)) < len(names):
            twice = next(n for n in names if names.count(n) > 1)
            raise RequestError("bad_request", f"column {twice!r} appears twice (as spelled after Unicode NFC)", twice)
        return dict(zip(names, rec.values()))

    def _unknown(self, col, field_prefix: str = ""):
        if not isinstance(col, str):
            raise RequestError(
                "bad_request",
                f"{field_prefix}column names must be strings, got {json_type(col)} {shown(col)}",
                field_prefix.rstrip(": ") or None,
            )
        raise RequestError(
            "unknown_column",
            f"unknown column {col!r}: the model takes "
            f"{self.names}" + (f" (and id column {self.id_column!r})" if self.id_column else ""),
            col,
        )

    def _missing(self, col: str, row: int | None = None):
        where = f"row {row}: " if row is not None else ""
        raise RequestError("missing_column", f"{where}missing column {col!r} (the model takes {self.names})", col)

    # ---- MLflow scoring protocol ----
    def parse_mlflow(self, body) -> Parsed:
        if not isinstance(body, dict):
            raise RequestError(
                "bad_request",
                "the body must be a JSON object with one of "
                "'dataframe_split', 'dataframe_records' or 'inputs', got "
                f"{json_type(body)}",
                None,
            )
        keys = [k for k in MLFLOW_KEYS if k in body]
        if len(keys) != 1:
            which = "none" if not keys else " and ".join(keys)
            raise RequestError(
                "bad_request",
                f"the body needs exactly one of 'dataframe_split', 'dataframe_records' or 'inputs' (got {which})",
                keys[1] if len(keys) > 1 else None,
            )
        key = keys[0]
        extra = [k for k in body if k != key]
        if extra:
            raise RequestError(
                "bad_request",
                f"unsupported key {extra[0]!r} (only {key!r} is read; this endpoint takes no params)",
                extra[0],
            )
        payload = body[key]
        if key == "dataframe_split":
            return self.parse_split(payload)
        if isinstance(payload, dict) and key != "dataframe_records":
            return self.parse_columnar(payload, key)
        return self.parse_records(payload, key)

    def parse_split(self, split) -> Parsed:
        if not isinstance(split, dict):
            raise RequestError(
                "bad_request",
                '\'dataframe_split\' must be an object {"columns": [...], "data": [[...], ...]}',
                "dataframe_split",
            )
        for k in split:
            if k not in ("columns", "data", "index"):
                raise RequestError(
                    "bad_request",
                    f"'dataframe_split' has an unsupported key {k!r} "
                    "(expected 'columns', 'data' and optionally 'index')",
                    f"dataframe_split.{k}",
                )
        cols = split.get("columns")
        data = split.get("data")
        if not isinstance(cols, list):
            raise RequestError(
                "bad_request",
                f"'dataframe_split.columns' must be a list of column names, got {json_type(cols)}",
                "dataframe_split.columns",
            )
        if not isinstance(data, list):
            raise RequestError(
                "bad_request",
                f"'dataframe_split.data' must be a list of rows, got {json_type(data)}",
                "dataframe_split.data",
            )
        try:
            plan = self._split_plans.get(tuple(cols))
        except TypeError:  # unhashable garbage among the column names
            plan = None
        if plan is None:
            plan = self._split_plan(cols)
        if not data:
            raise RequestError("empty", "'dataframe_split.data' has no rows", "dataframe_split.data")
        ncol = len(cols)
        for i, row in enumerate(data):
            if type(row) is not list or len(row) != ncol:
                what = (
                    f"has {len(row)} values, expected {ncol} (one per column)"
                    if type(row) is list
                    else f"is {json_type(row)}, expected a list of {ncol} values"
                )
                raise RequestError("bad_request", f"row {i} {what}", f"dataframe_split.data[{i}]")
        if "index" in split and not isinstance(split["index"], list):
            raise RequestError("bad_request", "'dataframe_split.index' must be a list", "dataframe_split.index")
        idx, id_idx = plan
        if len(data) == 1:
            row = data[0]
            cols_map = {f: (row[j],) for f, j in zip(self.names, idx)}
            ids = (row[id_idx],) if id_idx is not None else None
        else:
            transposed = list(zip(*data))
            cols_map = {f: transposed[j] for f, j in zip(self.names, idx)}
            ids = transposed[id_idx] if id_idx is not None else None
        return self.from_columns(cols_map, len(data), ids)

    def _split_plan(self, cols: list) -> tuple:
        """Validate a ``columns`` list once -> (column index per feature, id index); cached."""
        allowed = self.allowed
        seen = {}
        for j, c in enumerate(cols):
            if type(c) is not str:
                self._unknown(c, "dataframe_split.columns: ")
            c = column_name(c)  # planned once per columns list: free for the requests after it
            if c not in allowed:
                self._unknown(c)
            if c in seen:
                raise RequestError("bad_request", f"column {c!r} appears twice", c)
            seen[c] = j
        for f in self.names:
            if f not in seen:
                self._missing(f)
        plan = ([seen[f] for f in self.names], seen.get(self.id_column) if self.id_column else None)
        if len(self._split_plans) < 256:
            self._split_plans[tuple(cols)] = plan
        return plan

    def parse_records(self, recs, key: str = "dataframe_records") -> Parsed:
        if not isinstance(recs, list):
            raise RequestError(
                "bad_request", f"'{key}' must be a list of objects (one per row), got {json_type(recs)}", key
            )
        if not recs:
            raise RequestError("empty", f"'{key}' has no rows", key)
        if len(recs) == 1 and type(recs[0]) is dict:
            return self.parse_one(recs[0], key)
        names = self.names
        nf = len(names)
        lists = [[] for _ in names]
        allowed = self.allowed
        for i, r in enumerate(recs):
            if type(r) is not dict:
                raise RequestError(
                    "bad_request", f"row {i} is {json_type(r)}, expected an object {{column: value}}", f"{key}[{i}]"
                )
            vals = [r.get(f, _SENTINEL) for f in names]
            if _SENTINEL in vals or len(r) != nf and not r.keys() <= allowed:
                if (spelled := self.respelled(r)) is not None:
                    r = recs[i] = spelled  # the id column is read from recs below
                    vals = [r.get(f, _SENTINEL) for f in names]
                if _SENTINEL in vals:
                    self._missing(names[vals.index(_SENTINEL)], i)
                for k in r:
                    if k not in allowed:
                        self._unknown(k)
            for lst, v in zip(lists, vals):
                lst.append(v)
        idc = self.id_column
        ids = [r.get(idc) for r in recs] if idc else None
        return self.from_columns(dict(zip(names, lists)), len(recs), ids)

    def parse_columnar(self, cols: dict, key: str = "inputs") -> Parsed:
        """``{"inputs": {"col": [v, ...], ...}}`` (MLflow's columnar ``inputs``)."""
        cols = self.respelled(cols) or cols
        for c in cols:
            if c not in self.allowed:
                self._unknown(c)
        for f in self.names:
            if f not in cols:
                self._missing(f)
        n = None
        for c, v in cols.items():
            if not isinstance(v, list):
                raise RequestError("bad_request", f"'{key}.{c}' must be a list of values, got {json_type(v)}", c)
            if n is None:
                n = len(v)
            elif len(v) != n:
                raise RequestError("bad_request", f"column {c!r} has {len(v)} values, others have {n}", c)
        if not n:
            raise RequestError("empty", f"'{key}' has no rows", key)
        return self.from_columns(cols, n, cols.get(self.id_column) if self.id_column else None)

    # ---- smoke rows (infra validation) ----
    def parse_rows(self, rows: list[dict]) -> Parsed:
        return self.parse_records(rows, "smoke_rows")

    def synthetic_row(self) -> dict:
        row = {}
        for f in self.features:
            if f.numeric:
                row[f.name] = float(f.lo) if f.lo is not None else (float(f.hi) if f.hi is not None else 0.0)
            else:
                row[f.name] = sorted(f.allowed)[0] if f.allowed else ("x" if not f.nullable else None)
        return row

    # ---- the id column ----
    def check_ids(self, ids) -> None:
        """An id column value is echoed to the live sample: a string (at most MAX_ID_CHARS),
        a number or null; anything else is a 400 naming the id column."""
        types = set(map(type, ids))
        if types <= _ID_TYPES:
            if str not in types or max(len(v) for v in ids if type(v) is str) <= MAX_ID_CHARS:
                return
        column = self.id_column
        for i, v in enumerate(ids):
            t = type(v)
            if t not in _ID_TYPES:
                raise RequestError(
                    "wrong_type",
                    f"row {i}: id column {column!r} must be a string, a number or null, got {json_type(v)}",
                    column,
                )
            if t is str and len(v) > MAX_ID_CHARS:
                raise RequestError(
                    "out_of_schema",
                    f"row {i}: id column {column!r} value has {len(v)} characters, at most {MAX_ID_CHARS} are accepted",
                    column,
                )


def mlflow_predictions(model: LoadedModel, outs: list) -> list:
    """The MLflow ``predictions`` of a model's outputs: {label, probabilities} per row
    (classification) or the predicted values (regression)."""
    if model.classification:
        keys = model.class_keys
        return [
            {"label": lab, "probabilities": dict(zip(keys, p))} for lab, p in zip(outs[0].tolist(), outs[1].tolist())
        ]
    return outs[0].reshape(-1).tolist()


def views(plan: tuple, nums, cats, n: int) -> dict:
    """One numpy array per kind (numeric / categorical, all columns at once) and one view of it
    per ONNX input, instead of an array (and a reshape) per input. ``plan``: ``Schema._plan``
    (the shadow scorer gets it with the rows, see ``shadow_scorer.py``)."""
    feeds = {}
    if nums:
        a = np.array(nums, dtype=np.float32)  # None -> NaN
        num2, num3 = a.reshape(len(nums), n), a.reshape(len(nums), n, 1)
    if cats:
        c = np.array(cats, dtype=object)
        cat2, cat3 = c.reshape(len(cats), n), c.reshape(len(cats), n, 1)
    for name, numeric, j, rank2 in plan:
        if numeric:
            feeds[name] = num3[j] if rank2 else num2[j]
        else:
            feeds[name] = cat3[j] if rank2 else cat2[j]
    return feeds
