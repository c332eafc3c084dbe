"""Request parsing and validation: JSON bodies -> ONNX Runtime feeds, no pandas.

The typing rules are those of training (``core/frames.py``) and the limits those of
batch validation (``core/schema.py``), applied to parsed JSON:

- numeric feature: a JSON number (not a bool, not a string) -> float32; ``null`` -> NaN,
  allowed only when the feature is ``nullable``; outside ``min``/``max`` -> rejected.
- categorical feature: the category rule of ``serving/values.py``, shared with batch
  validation and training: a string (stripped), a boolean (``true`` -> "true"; the strings
  "True", "TRUE"... too), or a number whose integral value is written without the fraction
  (3, 3.0 and "3" are one category); ``null`` or a blank string -> the metadata's
  ``missing_category`` (allowed only when ``nullable``); not in ``values`` -> rejected;
  an array or an object -> rejected.
- the metadata's ``id_column`` is accepted (and echoed to the live sample), never fed to
  the model; any other column is an error, and so is a missing feature column.

Every problem raises :class:`RequestError`, which the app turns into a 4xx response
``{"error": {"kind": ..., "field": ..., "message": ...}}`` naming the column (``field``)
and, in the message, the row.
"""

from __future__ import annotations

import numpy as np

from ml_platform.serving.values import InvalidValue, category, category_of_str, is_canonical

_NUM_TYPES = frozenset((int, float))
_NUM_OR_NULL = frozenset((int, float, type(None)))
_STR = frozenset((str,))
_SENTINEL = object()
_F32_OVERFLOW = 3.4028235677973366e38  # values this large round to inf in float32
SMALL = 32  # up to this many rows, columns are checked in Python and converted in one go
KNOWN_MAX = 4096  # canonical category strings remembered per feature (the fast path) ...
KNOWN_LEN = 256   # ... when they are at most this long

V2_NUMERIC_TYPES = frozenset(("FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64",
                              "UINT8", "UINT16", "UINT32", "UINT64"))
V2_INT_TYPES = frozenset(t for t in V2_NUMERIC_TYPES if "INT" in t)
V2_TYPES = V2_NUMERIC_TYPES | {"BYTES", "BOOL"}


class RequestError(Exception):
    """A client error: HTTP ``status`` with a machine-readable ``kind`` and the ``field``."""

    def __init__(self, kind: str, message: str, field: str | None = None, status: int = 400):
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.field = field
        self.status = status

    def body(self) -> dict:
        return {"error": {"kind": self.kind, "field": self.field, "message": self.message}}


def _show(v) -> str:
    s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


def _jtype(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    return type(v).__name__


class Parsed:
    """A validated request: ``n`` rows, the ONNX feeds, the raw id column if sent, and
    (for the live sample) the converted feature columns as 1-D arrays (``columns``, built
    from the feeds on first use, i.e. off the request path).

    A single-row request keeps its validated values as ``row`` = (numeric values,
    category strings) and builds ``feeds`` only when asked: the endpoint stacks the rows
    of concurrent single-row requests into one ONNX Runtime call (``Schema.stack``)."""

    __slots__ = ("n", "ids", "row", "_feeds", "_columns", "_schema")

    def __init__(self, n: int, feeds: dict | None, columns: dict | None = None, ids: list | None = None,
                 row: tuple | None = None, schema: "Schema | None" = None):
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


class _Feature:
    __slots__ = ("name", "numeric", "nullable", "lo", "hi", "allowed", "known", "missing", "rank2", "lo_ok",
                 "hi_ok")

    def __init__(self, name: str, spec: dict, missing: str, rank2: bool = True):
        self.name = name
        self.numeric = spec.get("type") == "numeric"
        self.nullable = bool(spec.get("nullable", True))
        self.lo = spec.get("min")
        self.hi = spec.get("max")
        vals = spec.get("values")
        self.allowed = frozenset(c for c in map(category, vals) if c is not None) if vals else None
        # strings that go in the feed as they are: the allowed values, or (no values list) the
        # canonical strings seen so far (see known_str)
        self.known = self.allowed if self.allowed is not None else set()
        self.missing = missing
        self.rank2 = rank2
        # a number within [lo_ok, hi_ok] passes the bounds and float32 checks (NaN never does)
        f32 = np.nextafter(np.float64(_F32_OVERFLOW), 0.0).item()
        self.lo_ok = -f32 if self.lo is None else max(-f32, self.lo)
        self.hi_ok = f32 if self.hi is None else min(f32, self.hi)

    # ---- conversion of one column (a list/tuple of JSON values) ----
    def convert(self, values, where: str = "row") -> np.ndarray:
        return self._numeric(values, where) if self.numeric else self._categorical(values, where)

    def _numeric(self, values, where: str) -> np.ndarray:
        if len(values) <= SMALL:  # small requests: one plain Python pass beats numpy's overheads
            self.check_small(values, where)
            return np.array(values, dtype=np.float32)  # None -> NaN
        return self._numeric_large(values, where)

    def one(self, v, where: str = "row"):
        """Validate one value (row 0 of a single-row request) -> what goes in the feed:
        the number (None for null) or the category string. Same errors as ``convert``."""
        if self.numeric:
            self.check_small((v,), where)  # one rule set (and one set of messages) for both paths
            return v
        if type(v) is str and self.known_str(v):
            return v
        return self.strings((v,), where)[0]

    def check_small(self, values, where: str) -> None:
        """The per-value checks of a numeric column of <= SMALL values (no conversion)."""
        lo, hi = self.lo, self.hi
        for i, v in enumerate(values):
            t = type(v)
            if t is float or t is int:
                if (lo is not None and v < lo) or (hi is not None and v > hi):
                    raise RequestError("out_of_schema", f"{where} {i}: column {self.name!r} value "
                                       f"{_show(v)} is outside [{lo}, {hi}]", self.name)
                if v >= _F32_OVERFLOW or v <= -_F32_OVERFLOW:
                    raise RequestError("out_of_schema", f"{where} {i}: column {self.name!r} value "
                                       f"{_show(v)} does not fit a float32", self.name)
            elif v is None:
                if not self.nullable:
                    raise RequestError("null_not_allowed", f"{where} {i}: column {self.name!r} is "
                                       "not nullable, got null", self.name)
            else:
                raise RequestError("wrong_type", f"{where} {i}: column {self.name!r} expects a "
                                   f"number, got {_jtype(v)} {_show(v)}", self.name)

    def _numeric_large(self, values, where: str) -> np.ndarray:
        types = set(map(type, values))
        if not types <= _NUM_TYPES:
            if not types <= _NUM_OR_NULL:
                for i, v in enumerate(values):
                    if type(v) not in _NUM_OR_NULL:
                        raise RequestError(
                            "wrong_type", f"{where} {i}: column {self.name!r} expects a number, got "
                            f"{_jtype(v)} {_show(v)}", self.name)
            if not self.nullable:
                i = next(i for i, v in enumerate(values) if v is None)
                raise RequestError("null_not_allowed", f"{where} {i}: column {self.name!r} is not "
                                   "nullable, got null", self.name)
        try:
            arr = np.array(values, dtype=np.float64)  # None -> NaN
        except (OverflowError, ValueError):
            raise RequestError("out_of_schema", f"column {self.name!r} holds a number too large "
                               "for a float", self.name) from None
        with np.errstate(over="ignore"):
            out = arr.astype(np.float32)
        if self.lo is not None or self.hi is not None:
            bad = np.zeros(len(arr), dtype=bool)
            if self.lo is not None:
                bad |= arr < self.lo
            if self.hi is not None:
                bad |= arr > self.hi
            if bad.any():
                i = int(np.argmax(bad))
                raise RequestError("out_of_schema", f"{where} {i}: column {self.name!r} value "
                                   f"{_show(values[i])} is outside [{self.lo}, {self.hi}]", self.name)
        if np.isinf(out).any():
            i = int(np.argmax(np.isinf(out)))
            raise RequestError("out_of_schema", f"{where} {i}: column {self.name!r} value "
                               f"{_show(values[i])} does not fit a float32", self.name)
        return out

    def _categorical(self, values, where: str) -> np.ndarray:
        return np.array(self.strings(values, where), dtype=object)

    def known_str(self, v: str) -> bool:
        """True when the string ``v`` is its own category and allowed: it goes in the feed as is.
        Strings seen canonical are remembered (up to KNOWN_MAX per feature), so the usual
        request costs one set lookup per categorical value."""
        known = self.known
        if v in known:
            return True
        if self.allowed is not None or not is_canonical(v):
            return False
        if len(known) < KNOWN_MAX and len(v) <= KNOWN_LEN:  # bounded: at most ~1 MB per feature
            known.add(v)
        return True

    def strings(self, values, where: str):
        """Validate a categorical column -> the category strings (a list or ``values``)."""
        if (len(values) == 1 and type(values[0]) is str) or set(map(type, values)) <= _STR:
            if len(values) == 1:
                if self.known_str(values[0]):
                    return values
            elif self.known.issuperset(values) or all(map(self.known_str, set(values))):
                return values
            strs = [category_of_str(v) for v in values]  # white space, TRUE / False, blanks
        else:
            strs = []
            append = strs.append
            for i, v in enumerate(values):
                t = type(v)
                if t is str:
                    append(category_of_str(v))
                elif t is int:
                    append(str(v))
                else:
                    try:
                        append(category(v))
                    except InvalidValue:
                        raise RequestError(
                            "wrong_type", f"{where} {i}: column {self.name!r} expects a string, a boolean "
                            f"or an integer code, got {_jtype(v)} {_show(v)}", self.name) from None
        if None in strs:  # null, or a blank string
            i = strs.index(None)
            if not self.nullable:
                raise RequestError("null_not_allowed", f"{where} {i}: column {self.name!r} is not "
                                   f"nullable, got {'null' if values[i] is None else 'a blank string'}",
                                   self.name)
            missing = {i for i, s in enumerate(strs) if s is None}
            strs = [self.missing if s is None else s for s in strs]
        else:
            missing = ()
        if self.allowed is not None:
            for i, s in enumerate(strs):
                if s not in self.allowed and i not in missing:
                    raise RequestError(
                        "out_of_schema", f"{where} {i}: column {self.name!r} value {_show(values[i])} "
                        f"is not one of {sorted(self.allowed)}", self.name)
        return strs


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
        self.features = [_Feature(c, s, self.missing, ranks.get(c, 2) == 2) for c, s in feats.items()]
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
    def _feeds(self, cols: dict, n: int, ids, where: str = "row") -> Parsed:
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
        """One numpy array per kind (numeric / categorical, all columns at once) and one
        view of it per ONNX input, instead of an array (and a reshape) per input."""
        feeds = {}
        if nums:
            a = np.array(nums, dtype=np.float32)  # None -> NaN
            num2, num3 = a.reshape(len(nums), n), a.reshape(len(nums), n, 1)
        if cats:
            c = np.array(cats, dtype=object)
            cat2, cat3 = c.reshape(len(cats), n), c.reshape(len(cats), n, 1)
        for name, numeric, j, rank2 in self._plan:
            if numeric:
                feeds[name] = num3[j] if rank2 else num2[j]
            else:
                feeds[name] = cat3[j] if rank2 else cat2[j]
        return feeds

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
            self._missing(self.names[vals.index(_SENTINEL)], 0)
        if len(rec) != self._nf:
            for k in rec:
                if k not in self.allowed:
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

    def _unknown(self, col, field_prefix: str = ""):
        if not isinstance(col, str):
            raise RequestError("bad_request", f"{field_prefix}column names must be strings, got "
                               f"{_jtype(col)} {_show(col)}", field_prefix.rstrip(": ") or None)
        raise RequestError("unknown_column", f"unknown column {col!r}: the model takes "
                           f"{self.names}" + (f" (and id column {self.id_column!r})" if self.id_column else ""),
                           col)

    def _missing(self, col: str, row: int | None = None):
        where = f"row {row}: " if row is not None else ""
        raise RequestError("missing_column", f"{where}missing column {col!r} (the model takes {self.names})", col)

    # ---- MLflow scoring protocol ----
    def parse_mlflow(self, body) -> Parsed:
        if not isinstance(body, dict):
            raise RequestError("bad_request", "the body must be a JSON object with one of "
                               "'dataframe_split', 'dataframe_records' or 'inputs', got "
                               f"{_jtype(body)}", None)
        keys = [k for k in ("dataframe_split", "dataframe_records", "inputs", "instances") if k in body]
        if len(keys) != 1:
            which = "none" if not keys else " and ".join(keys)
            raise RequestError("bad_request", "the body needs exactly one of 'dataframe_split', "
                               f"'dataframe_records' or 'inputs' (got {which})", keys[1] if len(keys) > 1 else None)
        key = keys[0]
        extra = [k for k in body if k != key]
        if extra:
            raise RequestError("bad_request", f"unsupported key {extra[0]!r} (only {key!r} is read; "
                               "this endpoint takes no params)", extra[0])
        payload = body[key]
        if key == "dataframe_split":
            return self.parse_split(payload)
        if isinstance(payload, dict) and key != "dataframe_records":
            return self.parse_columnar(payload, key)
        return self.parse_records(payload, key)

    def parse_split(self, split) -> Parsed:
        if not isinstance(split, dict):
            raise RequestError("bad_request", "'dataframe_split' must be an object "
                               '{"columns": [...], "data": [[...], ...]}', "dataframe_split")
        for k in split:
            if k not in ("columns", "data", "index"):
                raise RequestError("bad_request", f"'dataframe_split' has an unsupported key {k!r} "
                                   "(expected 'columns', 'data' and optionally 'index')", f"dataframe_split.{k}")
        cols = split.get("columns")
        data = split.get("data")
        if not isinstance(cols, list):
            raise RequestError("bad_request", "'dataframe_split.columns' must be a list of column "
                               f"names, got {_jtype(cols)}", "dataframe_split.columns")
        if not isinstance(data, list):
            raise RequestError("bad_request", "'dataframe_split.data' must be a list of rows, got "
                               f"{_jtype(data)}", "dataframe_split.data")
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
                what = (f"has {len(row)} values, expected {ncol} (one per column)"
                        if type(row) is list else f"is {_jtype(row)}, expected a list of {ncol} values")
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
        return self._feeds(cols_map, len(data), ids)

    def _split_plan(self, cols: list) -> tuple:
        """Validate a ``columns`` list once -> (column index per feature, id index); cached."""
        allowed = self.allowed
        seen = {}
        for j, c in enumerate(cols):
            if type(c) is not str:
                self._unknown(c, "dataframe_split.columns: ")
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
            raise RequestError("bad_request", f"'{key}' must be a list of objects (one per row), got "
                               f"{_jtype(recs)}", key)
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
                raise RequestError("bad_request", f"row {i} is {_jtype(r)}, expected an object "
                                   "{column: value}", f"{key}[{i}]")
            for f, lst in zip(names, lists):
                v = r.get(f, _SENTINEL)
                if v is _SENTINEL:
                    self._missing(f, i)
                lst.append(v)
            if len(r) != nf:
                for k in r:
                    if k not in allowed:
                        self._unknown(k)
        idc = self.id_column
        ids = [r.get(idc) for r in recs] if idc else None
        return self._feeds(dict(zip(names, lists)), len(recs), ids)

    def parse_columnar(self, cols: dict, key: str = "inputs") -> Parsed:
        """``{"inputs": {"col": [v, ...], ...}}`` (MLflow's columnar ``inputs``)."""
        for c in cols:
            if c not in self.allowed:
                self._unknown(c)
        for f in self.names:
            if f not in cols:
                self._missing(f)
        n = None
        for c, v in cols.items():
            if not isinstance(v, list):
                raise RequestError("bad_request", f"'{key}.{c}' must be a list of values, got {_jtype(v)}", c)
            if n is None:
                n = len(v)
            elif len(v) != n:
                raise RequestError("bad_request", f"column {c!r} has {len(v)} values, others have {n}", c)
        if not n:
            raise RequestError("empty", f"'{key}' has no rows", key)
        return self._feeds(cols, n, cols.get(self.id_column) if self.id_column else None)

    # ---- Open Inference Protocol (KServe V2) ----
    def parse_v2(self, body) -> tuple[Parsed, list | None, object]:
        """-> (parsed, requested output names or None, request id or None)."""
        if not isinstance(body, dict):
            raise RequestError("bad_request", "the body must be a JSON object {\"inputs\": [...]}, "
                               f"got {_jtype(body)}", None)
        for k in body:
            if k not in ("id", "inputs", "outputs", "parameters"):
                raise RequestError("bad_request", f"unsupported key {k!r} (expected 'inputs' and "
                                   "optionally 'id', 'outputs', 'parameters')", k)
        inputs = body.get("inputs")
        if not isinstance(inputs, list):
            raise RequestError("bad_request", f"'inputs' must be a list of tensors, got {_jtype(inputs)}", "inputs")
        if not inputs:
            raise RequestError("empty", "'inputs' is empty", "inputs")
        rid = body.get("id")
        if rid is not None and not isinstance(rid, str):
            raise RequestError("bad_request", "'id' must be a string", "id")
        params = body.get("parameters")
        if params is not None and not isinstance(params, dict):
            raise RequestError("bad_request", "'parameters' must be an object", "parameters")
        outputs = body.get("outputs")
        wanted = None
        if outputs is not None:
            if not isinstance(outputs, list):
                raise RequestError("bad_request", "'outputs' must be a list of {\"name\": ...}", "outputs")
            wanted = []
            for j, o in enumerate(outputs):
                if not isinstance(o, dict) or not isinstance(o.get("name"), str):
                    raise RequestError("bad_request", f"outputs[{j}] must be an object with a string "
                                       "'name'", f"outputs[{j}]")
                wanted.append(o["name"])
        cols, n = {}, None
        for j, t in enumerate(inputs):
            if not isinstance(t, dict):
                raise RequestError("bad_request", f"inputs[{j}] must be a tensor object "
                                   "{name, shape, datatype, data}", f"inputs[{j}]")
            name = t.get("name")
            if not isinstance(name, str):
                raise RequestError("bad_request", f"inputs[{j}].name must be a string", f"inputs[{j}].name")
            if name not in self.allowed:
                self._unknown(name)
            if name in cols:
                raise RequestError("bad_request", f"input {name!r} appears twice", name)
            for k in t:
                if k not in ("name", "shape", "datatype", "data", "parameters"):
                    raise RequestError("bad_request", f"input {name!r}: unsupported key {k!r}", name)
            shape = t.get("shape")
            if (not isinstance(shape, list) or not 1 <= len(shape) <= 2
                    or any(type(s) is not int or s < 0 for s in shape)
                    or (len(shape) == 2 and shape[1] != 1)):
                raise RequestError("bad_request", f"input {name!r}: shape must be [N] or [N, 1] with "
                                   f"N >= 0, got {_show(shape)}", name)
            dtype = t.get("datatype")
            if type(dtype) is not str or dtype not in V2_TYPES:  # not hashable, not a type name
                raise RequestError("bad_request", f"input {name!r}: datatype must be one of "
                                   f"{sorted(V2_TYPES)}, got {_jtype(dtype)} {_show(dtype)}",
                                   f"inputs[{j}].datatype")
            data = t.get("data")
            if not isinstance(data, list):
                raise RequestError("bad_request", f"input {name!r}: data must be a list, got {_jtype(data)}", name)
            if data and type(data[0]) is list:  # nested [[v], [v], ...]
                flat = []
                for i, sub in enumerate(data):
                    if type(sub) is not list or len(sub) != 1:
                        raise RequestError("bad_request", f"input {name!r}: element {i} must be "
                                           "[value] in nested data", name)
                    flat.append(sub[0])
                data = flat
            rows = shape[0]
            if len(data) != rows:
                raise RequestError("bad_request", f"input {name!r}: shape {shape} needs {rows} values, "
                                   f"data has {len(data)}", name)
            if n is None:
                n = rows
            elif rows != n:
                raise RequestError("bad_request", f"input {name!r} has {rows} rows, other inputs have {n}", name)
            feat = self.by_name.get(name)
            if feat is not None:
                self._check_v2_dtype(feat, dtype, data)
            cols[name] = data
        for f in self.names:
            if f not in cols:
                self._missing(f)
        if not n:
            raise RequestError("empty", "the inputs have no rows (N = 0)", "inputs")
        ids = cols.get(self.id_column) if self.id_column else None
        return self._feeds(cols, n, ids, where="element"), wanted, rid

    @staticmethod
    def _check_v2_dtype(feat: _Feature, dtype: str, data: list) -> None:
        if dtype == "BOOL":
            # One typing rule with batches: a boolean is a category ("true"/"false"), never a number.
            if feat.numeric:
                raise RequestError("wrong_type", f"input {feat.name!r} is numeric: use FP32, FP64 or INT64, "
                                   "not BOOL", feat.name)
            for i, v in enumerate(data):
                if v is not None and type(v) is not bool:  # null: the nullability rule decides
                    raise RequestError("wrong_type", f"element {i}: input {feat.name!r} has datatype BOOL "
                                       f"but holds a {_jtype(v)}", feat.name)
            return
        if feat.numeric and dtype == "BYTES":
            raise RequestError("wrong_type", f"input {feat.name!r} is numeric: use FP32, FP64 or INT64, "
                               "not BYTES", feat.name)
        if not feat.numeric and dtype != "BYTES":
            # integer codes are fine as numbers; everything else is caught on conversion
            for i, v in enumerate(data):
                if type(v) is str:
                    raise RequestError("wrong_type", f"element {i}: input {feat.name!r} has datatype "
                                       f"{dtype} but holds a string", feat.name)
        if dtype in V2_INT_TYPES:
            for i, v in enumerate(data):
                if type(v) is float and not v.is_integer():
                    raise RequestError("wrong_type", f"element {i}: input {feat.name!r} has datatype "
                                       f"{dtype} but holds {v!r}", feat.name)

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
