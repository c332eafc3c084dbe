"""Turning a batch DataFrame into model inputs, the same way for training, ONNX and serving.

Numeric features become float32 (NaN = missing); categorical features become strings
(integer codes and their string form are one category; missing = ``MISSING``). The
endpoint applies the identical rules to JSON requests (see ``serving/requests.py``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ml_platform.settings import ModelConfig

MISSING = "__missing__"


def category_strings(values: pd.Series) -> pd.Series:
    """Categorical values as strings: 3, 3.0 and "3" are one category; NaN / None / NA -> MISSING.
    The per-value reference; ``category_array`` is the vectorised path for the usual dtypes."""
    def one(v):
        if v is None or v is pd.NA or v is pd.NaT or (isinstance(v, float) and np.isnan(v)):
            return MISSING
        if isinstance(v, (float, np.floating)) and float(v).is_integer():
            return str(int(v))
        return str(v)

    return values.astype(object).map(one)


_EXACT_INT = 2.0 ** 53  # floats below this convert to int64 exactly


def category_array(s: pd.Series) -> np.ndarray:
    """``frames.category_strings(s)`` as an object array, vectorised for the usual dtypes."""
    if isinstance(s.dtype, pd.CategoricalDtype):  # Parquet dictionary columns
        cats = category_array(pd.Series(s.cat.categories))
        codes = s.cat.codes.to_numpy()
        return np.where(codes >= 0, cats[codes] if len(cats) else MISSING, MISSING).astype(object)
    kind = s.dtype.kind
    if kind in "iu" and not s.hasnans:
        return s.to_numpy().astype(str).astype(object)
    if kind in "iuf":
        v = s.to_numpy(np.float64, na_value=np.nan)
        out = np.full(len(v), MISSING, dtype=object)
        small = np.abs(v) < _EXACT_INT  # False for NaN and inf
        integral = small & (v == np.floor(np.where(small, v, 0)))
        out[integral] = v[integral].astype(np.int64).astype(str)
        rest = ~integral & ~np.isnan(v)
        if rest.any():  # fractions, huge values, inf: the rare path, exactly as frames does it
            out[rest] = category_strings(pd.Series(v[rest])).to_numpy()
        return out
    if kind == "O" or isinstance(s.dtype, pd.StringDtype):
        if pd.api.types.infer_dtype(s, skipna=True) in ("string", "empty"):
            return s.astype(object).where(s.notna(), MISSING).to_numpy(object)
    return category_strings(s).to_numpy(object)


def numeric_array(s: pd.Series) -> np.ndarray:
    if s.dtype.kind in "iuf":
        return s.to_numpy(np.float32, na_value=np.nan) if s.hasnans else s.to_numpy().astype(np.float32)
    return pd.to_numeric(s, errors="coerce").to_numpy(np.float32, na_value=np.nan)


def feeds_of(df: pd.DataFrame, features: dict) -> dict[str, np.ndarray]:
    """ONNX Runtime feeds ([N, 1] per feature) straight from a raw DataFrame chunk."""
    feeds = {}
    for col, spec in features.items():
        arr = numeric_array(df[col]) if spec.type == "numeric" else category_array(df[col])
        feeds[col] = arr.reshape(-1, 1)
    return feeds


def typed_frame(df: pd.DataFrame, types: dict[str, str]) -> pd.DataFrame:
    """The columns ``types`` ({name: "numeric" | "categorical"}) of ``df``, typed as above."""
    return pd.DataFrame({c: numeric_array(df[c]) if t == "numeric" else category_array(df[c])
                         for c, t in types.items()}, index=df.index)


def model_inputs(df: pd.DataFrame, cfg: ModelConfig) -> pd.DataFrame:
    """The feature columns of ``df`` typed for the pipeline (and for the ONNX graph)."""
    return typed_frame(df, {c: s.type for c, s in cfg.features.items()})


