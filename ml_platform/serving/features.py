"""The typing rules of one feature column, applied to parsed JSON values (no pandas).

They are those of training (``core/frames.py``) and the limits those of batch validation
(``core/schema.py``), so a row the endpoint accepts is a row a batch would accept:

- numeric feature: a JSON number (not a bool, not a string) -> float32; ``null`` -> NaN,
  allowed only when the feature is ``nullable``; outside ``min``/``max`` -> rejected.
- categorical feature: the category rule of ``core/values.py``, shared with batch
  validation and training: a string (stripped), a boolean (``true`` -> "true"; the strings
  "True", "TRUE"... too), or a number whose integral value is written without the fraction
  (3, 3.0 and "3" are one category); ``null`` or a blank string -> the metadata's
  ``missing_category`` (allowed only when ``nullable``); not in ``values`` -> rejected;
  an array or an object -> rejected.

Every problem raises :class:`~ml_platform.serving.errors.RequestError` naming the column
(``field``) and, in the message, the row. ``requests.py`` (the MLflow formats) and
``v2.py`` (Open Inference Protocol tensors) bring the columns here.
"""

from __future__ import annotations

import numpy as np

from ml_platform.core.values import InvalidValue, category, category_of_str, is_canonical
from ml_platform.serving.errors import RequestError

_NUM_TYPES = frozenset((int, float))
_NUM_OR_NULL = frozenset((int, float, type(None)))
_STR = frozenset((str,))
_F32_OVERFLOW = 3.4028235677973366e38  # values this large round to inf in float32
SMALL = 32  # up to this many rows, columns are checked in Python and converted in one go
KNOWN_MAX = 4096  # canonical category strings remembered per feature (the fast path) ...
KNOWN_LEN = 256  # ... when they are at most this long


def shown(v) -> str:
    s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


def json_type(v) -> str:
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


class Feature:
    """One feature column of a model's request schema: its type, nullability, bounds and
    allowed categories, and the conversion of JSON values to what its ONNX input takes."""

    __slots__ = ("name", "numeric", "nullable", "lo", "hi", "allowed", "known", "missing", "rank2", "lo_ok", "hi_ok")

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
                    raise RequestError(
                        "out_of_schema",
                        f"{where} {i}: column {self.name!r} value {shown(v)} is outside [{lo}, {hi}]",
                        self.name,
                    )
                if v >= _F32_OVERFLOW or v <= -_F32_OVERFLOW:
                    raise RequestError(
                        "out_of_schema",
                        f"{where} {i}: column {self.name!r} value {shown(v)} does not fit a float32",
                        self.name,
                    )
            elif v is None:
                if not self.nullable:
                    raise RequestError(
                        "null_not_allowed", f"{where} {i}: column {self.name!r} is not nullable, got null", self.name
                    )
            else:
                raise RequestError(
                    "wrong_type",
                    f"{where} {i}: column {self.name!r} expects a number, got {json_type(v)} {shown(v)}",
                    self.name,
                )

    def _numeric_large(self, values, where: str) -> np.ndarray:
        types = set(map(type, values))
        if not types <= _NUM_TYPES:
            if not types <= _NUM_OR_NULL:
                for i, v in enumerate(values):
                    if type(v) not in _NUM_OR_NULL:
                        raise RequestError(
                            "wrong_type",
                            f"{where} {i}: column {self.name!r} expects a number, got {json_type(v)} {shown(v)}",
                            self.name,
                        )
            if not self.nullable:
                i = next(i for i, v in enumerate(values) if v is None)
                raise RequestError(
                    "null_not_allowed", f"{where} {i}: column {self.name!r} is not nullable, got null", self.name
                )
        try:
            arr = np.array(values, dtype=np.float64)  # None -> NaN
        except (OverflowError, ValueError):
            raise RequestError(
                "out_of_schema", f"column {self.name!r} holds a number too large for a float", self.name
            ) from None
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
                raise RequestError(
                    "out_of_schema",
                    f"{where} {i}: column {self.name!r} value {shown(values[i])} is outside [{self.lo}, {self.hi}]",
                    self.name,
                )
        if np.isinf(out).any():
            i = int(np.argmax(np.isinf(out)))
            raise RequestError(
                "out_of_schema",
                f"{where} {i}: column {self.name!r} value {shown(values[i])} does not fit a float32",
                self.name,
            )
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
                            "wrong_type",
                            f"{where} {i}: column {self.name!r} expects a string, a boolean "
                            f"or an integer code, got {json_type(v)} {shown(v)}",
                            self.name,
                        ) from None
        if None in strs:  # null, or a blank string
            i = strs.index(None)
            if not self.nullable:
                raise RequestError(
                    "null_not_allowed",
                    f"{where} {i}: column {self.name!r} is not "
                    f"nullable, got {'null' if values[i] is None else 'a blank string'}",
                    self.name,
                )
            missing = {i for i, s in enumerate(strs) if s is None}
            strs = [self.missing if s is None else s for s in strs]
        else:
            missing = ()
        if self.allowed is not None:
            for i, s in enumerate(strs):
                if s not in self.allowed and i not in missing:
                    raise RequestError(
                        "out_of_schema",
                        f"{where} {i}: column {self.name!r} value {shown(values[i])} "
                        f"is not one of {sorted(self.allowed)}",
                        self.name,
                    )
        return strs
