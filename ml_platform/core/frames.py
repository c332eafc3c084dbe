"""Turning a batch DataFrame into model inputs, the same way for training, ONNX and serving.

The per-value rule is ``ml_platform.core.values`` (standard library only, shared with
the endpoint): numeric features become float32 (NaN = missing); categorical features
become strings (3, 3.0 and "3" are one category, booleans are "true" / "false", strings
are stripped; missing = ``MISSING``). This module applies it column-wise: vectorised for
the usual dtypes, once per distinct value for text columns, value by value otherwise.

Two flavours per kind:

- ``numeric_column`` / ``category_column`` (batch validation): the typed values plus the
  positions of invalid cells grouped by reason, so those rows can be quarantined;
- ``numeric_array`` / ``category_array`` (features for a model): invalid cells are missing
  (NaN / ``MISSING``), as for raw files scored without validation.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from pandas.api.types import infer_dtype

from ml_platform.core.values import F32_OVERFLOW, MISSING, InvalidValue, category, number
from ml_platform.settings import ModelConfig

__all__ = [
    "MISSING",
    "category_strings",
    "category_column",
    "category_array",
    "numeric_column",
    "numeric_array",
    "feeds_of",
    "typed_frame",
    "model_inputs",
]

Problems = dict  # reason -> positions (np.ndarray of int) of the cells it applies to

# object columns whose distinct values can be typed once each: pandas hashes True == 1 == 1.0,
# so columns mixing booleans with numbers (inferred "mixed-integer" / "mixed") go value by value
_BY_DISTINCT = frozenset(("string", "boolean", "integer", "floating", "mixed-integer-float", "decimal", "empty"))


def _group(bad: dict[int, str]) -> Problems:
    out: dict[str, list[int]] = {}
    for i, why in bad.items():
        out.setdefault(why, []).append(i)
    return {why: np.asarray(pos, dtype=np.int64) for why, pos in out.items()}


# --------------------------------------------------------------------------- categories
def _category_values(values) -> tuple[np.ndarray, dict[int, str]]:
    """``values.category`` over a sequence -> (object array, None = missing; invalid positions)."""
    out = np.empty(len(values), dtype=object)
    bad = {}
    for i, v in enumerate(values):
        try:
            out[i] = category(v)
        except InvalidValue as e:
            out[i] = None
            bad[i] = str(e)
    return out, bad


def _taken(canon: np.ndarray, codes: np.ndarray, fill) -> np.ndarray:
    """``canon[codes]`` with ``fill`` where the code is -1 (missing): one take."""
    ext = np.empty(len(canon) + 1, dtype=object)
    ext[:-1] = canon
    ext[-1] = fill
    return ext[codes]


def _categories(s: pd.Series, fill) -> tuple[np.ndarray, Problems]:
    """Categories of a column, ``fill`` where missing or invalid; invalid cells by reason.
    Each distinct value is typed once (pd.factorize), except in columns mixing booleans with
    numbers, which pandas would hash as equal (True == 1)."""
    if isinstance(s.dtype, pd.CategoricalDtype):  # Parquet dictionary columns
        canon, bad = _category_values(s.cat.categories.tolist())
        codes = s.cat.codes.to_numpy()
    else:
        kind = s.dtype.kind
        if kind == "b":  # numpy bool, or pandas "boolean" with NA
            codes = np.where(s.isna().to_numpy(), -1, s.to_numpy(dtype=bool, na_value=False).astype(np.int64))
            canon, bad = np.array(["false", "true"], dtype=object), {}
        elif (
            kind in "iuf"
            or (kind == "O" or isinstance(s.dtype, pd.StringDtype))
            and infer_dtype(s, skipna=True) in _BY_DISTINCT
        ):
            codes, uniques = pd.factorize(s, use_na_sentinel=True)
            canon, bad = _category_values(uniques.tolist() if len(uniques) else [])
        else:  # mixed objects (booleans with numbers, lists, timestamps ...): value by value
            out, bad = _category_values(s.to_numpy(dtype=object))
            if bad or fill is not None:
                out[pd.isna(out)] = fill
            return out, _group(bad)
    for j in bad:
        canon[j] = fill
    canon = np.where(pd.isna(canon), fill, canon) if fill is not None else canon
    out = _taken(canon, codes, fill)
    problems = {
        why: np.flatnonzero(np.isin(codes, [j for j, w in bad.items() if w == why])) for why in set(bad.values())
    }
    return out, problems


def category_column(s: pd.Series) -> tuple[np.ndarray, Problems]:
    """Categories of a column: (object array of strings, ``None`` where missing or invalid;
    invalid cells grouped by reason)."""
    return _categories(s, None)


def category_array(s: pd.Series) -> np.ndarray:
    """Categories of a column as an object array; missing and invalid cells -> ``MISSING``."""
    return _categories(s, MISSING)[0]


def category_strings(values: pd.Series) -> pd.Series:
    """``category_array`` as a Series on the same index, value by value (the reference)."""
    out, _ = _category_values(values.to_numpy(dtype=object))
    out[pd.isna(out)] = MISSING
    return pd.Series(out, index=values.index, dtype=object)


# --------------------------------------------------------------------------- numbers
def _number_values(values, text: bool, float32: bool) -> tuple[np.ndarray, dict[int, str]]:
    out = np.full(len(values), np.nan)
    bad = {}
    for i, v in enumerate(values):
        try:
            f = number(v, text=text, float32=float32)
        except InvalidValue as e:
            bad[i] = str(e)
            continue
        out[i] = np.nan if f is None else f
    return out, bad


def numeric_column(s: pd.Series, *, float32: bool = True) -> tuple[np.ndarray, Problems]:
    """Numbers of a column: (float64 array, NaN where missing or invalid; invalid cells
    grouped by reason). Booleans, timestamps, lists, inf and (with ``float32``) values that
    overflow a float32 are invalid; text is parsed."""
    n = len(s)
    kind = s.dtype.kind
    if kind == "b":
        return np.full(n, np.nan), {"a boolean is not a number": np.flatnonzero(s.notna().to_numpy())}
    if kind in "mM":
        return np.full(n, np.nan), {"a timestamp is not a number": np.flatnonzero(s.notna().to_numpy())}
    problems: Problems = {}
    if kind in "iuf":
        v = s.to_numpy(np.float64, na_value=np.nan).copy()
    else:
        v = None
        if kind == "O" or isinstance(s.dtype, pd.StringDtype):
            if infer_dtype(s, skipna=True) in _BY_DISTINCT - {"boolean"}:
                try:
                    v = pd.to_numeric(s, errors="coerce").to_numpy(np.float64, na_value=np.nan).copy()
                except (TypeError, ValueError, OverflowError):
                    v = None
        if v is None:  # mixed objects: value by value
            v, bad = _number_values(s.to_numpy(dtype=object), True, float32)
            return v, _group(bad)
        # cells the fast parser gave up on: blank (missing) or garbage, value by value
        unparsed = np.flatnonzero(np.isnan(v) & s.notna().to_numpy())
        if len(unparsed):
            vals, bad = _number_values(s.to_numpy(dtype=object)[unparsed].tolist(), True, float32)
            v[unparsed] = vals
            problems = {why: unparsed[pos] for why, pos in _group(bad).items()}
    with np.errstate(invalid="ignore"):
        inf = np.isinf(v)
        big = (np.abs(v) >= F32_OVERFLOW) & ~inf if float32 else np.zeros(n, dtype=bool)
    for mask, why in ((inf, "not a finite number"), (big, "too large for a float32")):
        if mask.any():
            pos = np.flatnonzero(mask)
            problems[why] = np.union1d(problems.get(why, np.empty(0, np.int64)), pos)
            v[pos] = np.nan
    return v, problems


def numeric_array(s: pd.Series) -> np.ndarray:
    """Numbers of a column as float32; missing and invalid cells -> NaN."""
    if s.dtype.kind in "iuf":  # the usual case: one conversion, then inf = overflow or inf
        with np.errstate(over="ignore"):
            out = s.to_numpy(np.float32, na_value=np.nan) if s.hasnans else s.to_numpy().astype(np.float32)
        inf = np.isinf(out)
        if inf.any():
            out[inf] = np.nan  # out is a fresh array (astype / to_numpy with a dtype copy)
        return out
    v, _ = numeric_column(s)
    return v.astype(np.float32)


# --------------------------------------------------------------------------- frames
def feeds_of(df: pd.DataFrame, features: dict) -> dict[str, np.ndarray]:
    """ONNX Runtime feeds ([N, 1] per feature) straight from a raw DataFrame chunk."""
    feeds = {}
    for col, spec in features.items():
        arr = numeric_array(df[col]) if spec.type == "numeric" else category_array(df[col])
        feeds[col] = arr.reshape(-1, 1)
    return feeds


def typed_frame(df: pd.DataFrame, types: dict[str, str]) -> pd.DataFrame:
    """The columns ``types`` ({name: "numeric" | "categorical"}) of ``df``, typed as above."""
    return pd.DataFrame(
        {c: numeric_array(df[c]) if t == "numeric" else category_array(df[c]) for c, t in types.items()}, index=df.index
    )


def model_inputs(df: pd.DataFrame, cfg: ModelConfig) -> pd.DataFrame:
    """The feature columns of ``df`` typed for the pipeline (and for the ONNX graph)."""
    return typed_frame(df, {c: s.type for c, s in cfg.features.items()})


def json_records(df: pd.DataFrame) -> list[dict]:
    """``df``'s rows as JSON-ready ``{column: value}`` dicts (NaN -> None). Not
    ``to_json(orient="records")``: its encoder cuts a column name at a NUL character, so a model
    whose feature is named ``a\\x00b`` got smoke rows keyed ``a`` and the endpoint never loaded it."""
    split = json.loads(df.to_json(orient="split", index=False))
    return [dict(zip(split["columns"], row)) for row in split["data"]]
