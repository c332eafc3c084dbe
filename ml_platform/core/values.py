"""How one value becomes a model input: the single typing rule of the platform.

Batch validation and training (``core/frames.py``, over pandas columns) and the endpoint
(``serving/requests.py``, over parsed JSON) both call these functions, so a value is typed
the same way whichever door it comes in by. Standard library only: the endpoint imports
this module and must not pull in pandas, numpy or sklearn.

Categorical features (and class labels)
    - a string, stripped of surrounding white space; a blank string is missing;
    - a boolean (Python / numpy ``bool``, Parquet ``bool``, JSON ``true``) is the category
      ``"true"`` / ``"false"``, and so are the strings ``True``, ``TRUE``, ``false``... (any case);
    - an integer, or a float with an integral value, is its decimal integer: 3, 3.0 and "3"
      are one category; other floats are ``str(value)``;
    - ``None`` / NaN / ``pd.NA`` / ``NaT`` are missing;
    - a list, a mapping (Parquet list / struct cells, JSON arrays and objects) or undecodable
      bytes is invalid.

Numeric features
    - an integer or a float whose magnitude fits a float32 (no inf), NaN / ``None`` missing;
    - text (CSV cells, only where ``text=True``) is parsed as a decimal number; blank = missing;
    - a boolean, a timestamp, a list or a mapping is invalid, and so is a number that
      rounds to inf in float32 (|x| >= 3.4028235677973366e38).
"""

from __future__ import annotations

import datetime
import decimal
import math
import numbers

MISSING = "__missing__"  # the category of a missing value, as the model sees it
F32_OVERFLOW = 3.4028235677973366e38  # a float64 this large (or larger) becomes inf in float32

# Every spelling of true / false but the canonical lower-case one.
_BOOL_SPELLINGS = {"true": "true", "false": "false"}
_ODD_BOOLS = frozenset(
    "".join(c.upper() if mask >> i & 1 else c for i, c in enumerate(word))
    for word in _BOOL_SPELLINGS
    for mask in range(1, 1 << len(word))
)
_CONTAINERS = (list, tuple, dict, set, frozenset)


class InvalidValue(ValueError):
    """A value that cannot be typed for its feature; ``str(e)`` says why in a few words
    (``"a boolean is not a number"``), without the value itself."""


def kind(v) -> str:
    """A short, JSON-flavoured name for a value's type, for messages."""
    if v is None:
        return "null"
    if _is_bool(v):
        return "boolean"
    if isinstance(v, numbers.Number):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, (list, tuple, set, frozenset)) or type(v).__name__ == "ndarray":
        return "list"
    if isinstance(v, dict):
        return "mapping"
    if _is_timestamp(v):
        return "timestamp"
    return type(v).__name__


def _is_bool(v) -> bool:
    t = type(v)
    return t is bool or (t.__name__ in ("bool_", "bool") and t.__module__ == "numpy")  # numpy 1 / 2


def _is_timestamp(v) -> bool:
    # pandas Timestamp / Timedelta subclass datetime / timedelta
    return isinstance(v, (datetime.date, datetime.time, datetime.timedelta)) or type(v).__name__ in (
        "Timestamp",
        "Timedelta",
        "datetime64",
        "timedelta64",
    )


def _is_missing_marker(v) -> bool:
    return type(v).__name__ in ("NAType", "NaTType")


def is_canonical(s: str) -> bool:
    """True when the string is already its own category (the endpoint's fast path)."""
    return bool(s) and not s[0].isspace() and not s[-1].isspace() and s not in _ODD_BOOLS


def category_of_str(s: str) -> str | None:
    """:func:`category` for a ``str``: stripped; true/false in any case folded; blank -> None."""
    if is_canonical(s):
        return s
    s = s.strip()
    if not s:
        return None
    return _BOOL_SPELLINGS.get(s.lower(), s) if len(s) in (4, 5) else s


def category(v) -> str | None:
    """The category string of one value, ``None`` when it is missing.

    Raises :class:`InvalidValue` for lists, mappings and undecodable bytes."""
    t = type(v)
    if t is str:
        return category_of_str(v)
    if t is int:
        return str(v)
    if v is None:
        return None
    if t is float:
        if v != v:
            return None
        return str(int(v)) if v.is_integer() else str(v)
    if t is bool or _is_bool(v):
        return "true" if v else "false"
    if isinstance(v, numbers.Integral):
        return str(int(v))
    if isinstance(v, numbers.Real):
        f = float(v)
        if f != f:
            return None
        return str(int(f)) if f.is_integer() else str(v)
    if isinstance(v, str):  # str subclasses (numpy.str_)
        return category_of_str(str(v))
    if isinstance(v, decimal.Decimal):
        if v.is_nan():
            return None
        return str(int(v)) if v.is_finite() and v == v.to_integral_value() else str(v)
    if isinstance(v, (bytes, bytearray)):
        try:
            return category_of_str(bytes(v).decode("utf-8"))
        except UnicodeDecodeError:
            raise InvalidValue("bytes that are not UTF-8 text are not a category") from None
    if _is_missing_marker(v):
        return None
    if isinstance(v, _CONTAINERS) or type(v).__name__ == "ndarray":
        raise InvalidValue(f"a {kind(v)} is not a category (expected a string, a boolean or an integer code)")
    return category_of_str(str(v))  # timestamps and other scalars: their text


def number(v, *, text: bool = False, float32: bool = True) -> float | None:
    """The float value of one numeric cell, ``None`` when it is missing.

    ``text``: also parse strings (CSV cells); JSON strings are refused by the endpoint.
    Raises :class:`InvalidValue` for booleans, timestamps, containers, inf and (``float32``,
    i.e. for features) values that do not fit a float32."""
    t = type(v)
    if t is float or t is int:
        f = float(v) if t is float else _int_to_float(v, float32)
    elif v is None:
        return None
    elif t is bool or _is_bool(v):
        raise InvalidValue("a boolean is not a number")
    elif isinstance(v, numbers.Integral):
        f = _int_to_float(int(v), float32)
    elif isinstance(v, numbers.Real):
        f = float(v)
    elif isinstance(v, decimal.Decimal):
        f = float(v)
    elif isinstance(v, str) and text:
        s = v.strip()
        if not s:
            return None
        if "_" in s:  # float() reads "1_000"; a CSV parser would not
            raise InvalidValue("not a number")
        try:
            f = float(s)
        except ValueError:
            raise InvalidValue("not a number") from None
    elif _is_missing_marker(v):
        return None
    elif isinstance(v, str):
        raise InvalidValue("a string is not a number")
    elif _is_timestamp(v):
        raise InvalidValue("a timestamp is not a number")
    else:
        raise InvalidValue(f"a {kind(v)} is not a number")
    if f != f:
        return None
    if math.isinf(f):
        raise InvalidValue("not a finite number")
    if float32 and not -F32_OVERFLOW < f < F32_OVERFLOW:
        raise InvalidValue("too large for a float32")
    return f


def _int_to_float(i: int, float32: bool) -> float:
    try:
        return float(i)
    except OverflowError:
        raise InvalidValue("too large for a float32" if float32 else "too large for a float") from None


# Labels of a 0/1 target written as words: one rule on every path (validation maps them, so
# training, metrics, the champion's performance, the concept check and the gate all see 0/1).
BINARY_LABELS = {"yes": "1", "true": "1", "y": "1", "t": "1", "no": "0", "false": "0", "n": "0", "f": "0"}


def binary_label(cat: str | None) -> str | None:
    """The 0/1 class of a word label (yes/true/y/t -> "1", no/false/n/f -> "0", any case);
    any other category unchanged. Only for a target whose classes are 0 and 1."""
    return cat if cat is None else BINARY_LABELS.get(cat.lower(), cat)
