"""The statistics drift monitoring is built from (``core/drift.py`` says how they are used):
PSI, Jensen-Shannon distance, chunk calibration, canonical category keys."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # pragma: no cover
    pass

REFERENCE_VERSION = 1
FINE_GRID = 100  # target number of fine quantile bins (Wasserstein grid)
PSI_EPS = 1e-4  # smoothing of empty PSI bins
SAFETY = 1.25  # multiplies the chunk-calibrated unit thresholds
GUARD_ALPHA = 1e-6  # per-statistic false-alarm rate of the asymptotic guard
PSI_FLOOR = 0.02
JS_FLOOR = 0.02
DISTANCE_FLOOR = 0.05
MAX_CATEGORIES = 1000  # at most this many categories get their own bucket ...
MIN_CATEGORY_ROWS = 10  # ... and only with this many reference rows; rarer ones are pooled
MAX_POOLED_NAMES = 10000  # names of pooled (rare) categories kept to tell them from unseen

Verdict = Literal["drifted", "stable", "not enough data"]


# --------------------------------------------------------------------------- helpers


def spec_type(spec: Any) -> str:
    """'numeric' / 'categorical' from a FeatureSpec, a mapping with 'type', or a str."""
    kind = getattr(spec, "type", None)
    if kind is None and isinstance(spec, Mapping):
        kind = spec.get("type")
    if kind is None and isinstance(spec, str):
        kind = spec
    if kind not in ("numeric", "categorical"):
        raise ValueError(f"feature type must be 'numeric' or 'categorical' (got {spec!r})")
    return kind


def as_float(col: pd.Series | np.ndarray) -> np.ndarray:
    """Column -> float64 ndarray with NaN for missing values (no copy when possible)."""
    if isinstance(col, pd.Series):
        try:
            return col.to_numpy(dtype=np.float64, na_value=np.nan)
        except (TypeError, ValueError):
            return pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    try:
        return np.asarray(col, dtype=np.float64)
    except (TypeError, ValueError):
        return pd.to_numeric(pd.Series(col), errors="coerce").to_numpy(dtype=np.float64)


def finite(x: np.ndarray) -> np.ndarray:
    ok = np.isfinite(x)
    return x if ok.all() else x[ok]


def cat_key(v: Any) -> str:
    """Canonical string form of a category: 3, 3.0, np.int64(3) and '3' are the same."""
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return str(int(f)) if f.is_integer() else repr(f)
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return str(v)


def category_counts(col: pd.Series) -> tuple[dict[str, int], int]:
    """Counts per canonical category key, plus the number of null rows."""
    vc = col.value_counts(dropna=True, sort=False)
    counts: dict[str, int] = {}
    for key, c in zip(vc.index.tolist(), vc.to_numpy().tolist()):
        if c:
            k = cat_key(key)
            counts[k] = counts.get(k, 0) + int(c)
    return counts, int(len(col) - sum(counts.values()))


def psi(p: np.ndarray, q: np.ndarray) -> float:
    p = np.maximum(p, PSI_EPS)
    q = np.maximum(q, PSI_EPS)
    return float(np.sum((p - q) * np.log(p / q)))


def js_distance(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon distance (sqrt of the divergence, natural log), like scipy's."""
    m = 0.5 * (p + q)
    with np.errstate(divide="ignore", invalid="ignore"):
        kp = np.where(p > 0, p * np.log(p / m), 0.0)
        kq = np.where(q > 0, q * np.log(q / m), 0.0)
    return float(math.sqrt(max(0.5 * float(kp.sum() + kq.sum()), 0.0)))


def calibrate(values: np.ndarray, noise: np.ndarray, guard: float) -> float:
    """Unit threshold from per-chunk statistics divided by their noise scale."""
    unit = values / noise
    emp = max(float(unit.max()), float(unit.mean() + 3.0 * unit.std(ddof=1)))
    return max(emp * SAFETY, guard)


def chi2_isf(df: int) -> float:
    from scipy.special import chdtri  # scipy.special imports much faster than scipy.stats

    return float(chdtri(max(int(df), 1), GUARD_ALPHA))


def clean(v: Any) -> Any:
    """JSON-friendly: numpy scalars -> python, non-finite floats -> None."""
    if isinstance(v, (np.floating, float)):
        f = float(v)
        return f if math.isfinite(f) else None
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.bool_,)):
        return bool(v)
    return v


# ------------------------------------------------------------------------- reference
