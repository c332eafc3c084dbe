"""Drift monitoring for tabular batches with calibrated, batch-size-aware thresholds.

Pure numpy / pandas / scipy (no Dagster, no MLflow): the assets call it, tests call it
directly.

How it works
------------
``build_reference`` summarises the champion's training data once (a JSON-serialisable
:class:`DriftReference`):

* numeric features (and the optional model-score column): ~100 reference quantiles
  (the "fine grid") with the reference CDF at each of them, the ``bins`` PSI bin edges
  (a subset of the fine grid, open-ended outer bins), and a spread (IQR, else std);
* categorical features: category frequencies, categories compared as strings
  (``1``, ``1.0`` and ``"1"`` are the same category).

``compute_drift`` compares a batch against it:

* numeric: PSI on the reference-quantile bins (epsilon-smoothed) **and** Wasserstein-1
  divided by the reference spread. The batch CDF is only needed at the fine-grid edges,
  so one ``np.sort`` plus one ``np.searchsorted`` of ~100 edges per column does both;
  Wasserstein is the integral of ``|F_ref - F_batch|`` over the fine grid (the outer 1%
  tails are ignored, which also makes it robust to a few outliers);
* categorical: Jensen-Shannon distance (natural log) between frequency vectors.
  Categories with fewer than ``MIN_CATEGORY_ROWS`` reference rows share one "other"
  bucket; categories never seen in the reference go to an "unseen" bucket (and are
  counted) whose reference mass is the Good-Turing estimate (singletons / rows, 0 when
  every category is well covered), so the trickle of new rare values that a stable batch
  brings does not read as drift but a new category with real mass does.

Thresholds (NannyML-style, calibrated on the reference itself): the reference is split at
random (``seed``) into ``chunks`` chunks and every statistic is computed for every chunk
against the rest of the reference (leave-one-chunk-out, so a chunk behaves like an
independent batch, e.g. it can bring values the rest has not seen). Sampling noise of PSI
scales like ``v`` and that of JS / Wasserstein like ``sqrt(v)`` with
``v = 1/n_batch + 1/n_ref`` (``1/n_chunk + 1/n_rest`` for a chunk), so each chunk value is
converted to a size-free "unit" value, the unit threshold is
``max(max over chunks, mean + 3 sd) * SAFETY`` and, as a guard against an unlucky
10-chunk calibration, never below the asymptotic null quantile at ``GUARD_ALPHA``
(chi-squared for PSI/JS, a Brownian-bridge bound for Wasserstein). At comparison time the
unit threshold is scaled back to the batch's non-null row count, with a floor
(``PSI_FLOOR`` / ``JS_FLOOR`` / ``DISTANCE_FLOOR``) so that huge batches do not flag
negligible shifts.

Nulls (NaN / None / +-inf) are excluded from the statistics and reported separately as
``null_rate`` (they do not drive the verdict: null-rate limits belong to validation).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Optional, Union

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # pragma: no cover
    from ml_platform.settings import DriftConfig, FeatureSpec

__all__ = [
    "DriftReference",
    "NumericReference",
    "CategoricalReference",
    "FeatureDrift",
    "DriftResult",
    "build_reference",
    "build_reference_from_config",
    "compute_drift",
    "compute_drift_from_config",
    "drift_bar_chart_png",
    "bootstrap_metric_drop",
]

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


def _spec_type(spec: Any) -> str:
    """'numeric' / 'categorical' from a FeatureSpec, a mapping with 'type', or a str."""
    kind = getattr(spec, "type", None)
    if kind is None and isinstance(spec, Mapping):
        kind = spec.get("type")
    if kind is None and isinstance(spec, str):
        kind = spec
    if kind not in ("numeric", "categorical"):
        raise ValueError(f"feature type must be 'numeric' or 'categorical' (got {spec!r})")
    return kind


def _as_float(col: pd.Series | np.ndarray) -> np.ndarray:
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


def _finite(x: np.ndarray) -> np.ndarray:
    ok = np.isfinite(x)
    return x if ok.all() else x[ok]


def _cat_key(v: Any) -> str:
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


def _category_counts(col: pd.Series) -> tuple[dict[str, int], int]:
    """Counts per canonical category key, plus the number of null rows."""
    vc = col.value_counts(dropna=True, sort=False)
    counts: dict[str, int] = {}
    for key, c in zip(vc.index.tolist(), vc.to_numpy().tolist()):
        if c:
            k = _cat_key(key)
            counts[k] = counts.get(k, 0) + int(c)
    return counts, int(len(col) - sum(counts.values()))


def _psi(p: np.ndarray, q: np.ndarray) -> float:
    p = np.maximum(p, PSI_EPS)
    q = np.maximum(q, PSI_EPS)
    return float(np.sum((p - q) * np.log(p / q)))


def _js_distance(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon distance (sqrt of the divergence, natural log), like scipy's."""
    m = 0.5 * (p + q)
    with np.errstate(divide="ignore", invalid="ignore"):
        kp = np.where(p > 0, p * np.log(p / m), 0.0)
        kq = np.where(q > 0, q * np.log(q / m), 0.0)
    return float(math.sqrt(max(0.5 * float(kp.sum() + kq.sum()), 0.0)))


def _calibrate(values: np.ndarray, noise: np.ndarray, guard: float) -> float:
    """Unit threshold from per-chunk statistics divided by their noise scale."""
    unit = values / noise
    emp = max(float(unit.max()), float(unit.mean() + 3.0 * unit.std(ddof=1)))
    return max(emp * SAFETY, guard)


def _chi2_isf(df: int) -> float:
    from scipy.special import chdtri  # scipy.special imports much faster than scipy.stats

    return float(chdtri(max(int(df), 1), GUARD_ALPHA))


def _clean(v: Any) -> Any:
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


@dataclass
class NumericReference:
    """Reference summary of one numeric column (a feature or the model score)."""

    name: str
    kind: str  # "numeric" or "score"
    rows: int  # non-null reference rows
    null_rate: float
    fine_edges: list[float]  # sorted unique reference quantiles (Wasserstein grid)
    fine_cdf: list[float]  # reference P(X < edge) at each fine edge
    psi_edges: list[float]  # subset of fine_edges; outer PSI bins are open-ended
    psi_ref: list[float]  # reference share per PSI bin (len(psi_edges) + 1)
    scale: float  # IQR, else std, else 1
    psi_unit: float  # threshold = max(PSI_FLOOR, psi_unit * (1/n + 1/rows))
    distance_unit: float  # threshold = max(DISTANCE_FLOOR, unit * sqrt(1/n + 1/rows))
    chunk_rows: list[int] = field(default_factory=list)
    chunk_psi: list[float] = field(default_factory=list)
    chunk_distance: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._edges = np.asarray(self.fine_edges, dtype=np.float64)
        self._cdf = np.asarray(self.fine_cdf, dtype=np.float64)
        self._psi_ref = np.asarray(self.psi_ref, dtype=np.float64)
        psi_edges = np.asarray(self.psi_edges, dtype=np.float64)
        # PSI bin of every fine bin (fine bin j is [edge[j-1], edge[j]); bin 0 is open).
        self._fine_to_psi = np.concatenate([[0], np.searchsorted(psi_edges, self._edges, side="right")]).astype(np.intp)
        self._widths = np.diff(self._edges)
        self._n_psi_bins = len(psi_edges) + 1

    # counts of values strictly below each fine edge -> (psi, scaled Wasserstein)
    def _stats_from_below(
        self, below: np.ndarray, n: int, ref_cdf: Optional[np.ndarray] = None, ref_psi: Optional[np.ndarray] = None
    ) -> tuple[float, float]:
        below = np.asarray(below, dtype=np.float64)
        fine_counts = np.diff(below, prepend=0.0, append=float(n))
        p = np.bincount(self._fine_to_psi, weights=fine_counts, minlength=self._n_psi_bins) / n
        psi = _psi(p, self._psi_ref if ref_psi is None else ref_psi)
        if self._widths.size:
            d = np.abs(below / n - (self._cdf if ref_cdf is None else ref_cdf))
            w = float(np.dot(0.5 * (d[1:] + d[:-1]), self._widths)) / self.scale
        else:
            w = 0.0
        return psi, w

    def stats(self, x: np.ndarray) -> tuple[float, float, int]:
        """(psi, scaled Wasserstein, non-null rows) of raw values ``x`` (NaN allowed)."""
        xs = np.sort(_finite(x))
        n = int(xs.size)
        if n == 0:
            return float("nan"), float("nan"), 0
        psi, w = self._stats_from_below(np.searchsorted(xs, self._edges, side="left"), n)
        return psi, w, n

    def thresholds(self, n: int) -> tuple[float, float]:
        v = 1.0 / max(n, 1) + 1.0 / max(self.rows, 1)
        return max(PSI_FLOOR, self.psi_unit * v), max(DISTANCE_FLOOR, self.distance_unit * math.sqrt(v))

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if not k.startswith("_")}


@dataclass
class CategoricalReference:
    """Reference summary of one categorical feature."""

    name: str
    rows: int  # non-null reference rows
    null_rate: float
    categories: list[str]  # canonical string keys with their own bucket, most frequent first
    ref_share: list[float]  # len(categories) + 2: ..., pooled rare ("other"), unseen
    js_unit: float  # threshold = max(JS_FLOOR, js_unit * sqrt(1/n + 1/rows))
    pooled: list[str] = field(default_factory=list)  # rare reference categories ("other")
    chunk_rows: list[int] = field(default_factory=list)
    chunk_js: list[float] = field(default_factory=list)
    kind: str = "categorical"

    def __post_init__(self) -> None:
        k = len(self.categories)
        self._index = {c: i for i, c in enumerate(self.categories)}
        self._index.update({c: k for c in self.pooled})
        self._q = np.asarray(self.ref_share, dtype=np.float64)

    def stats(self, col: pd.Series) -> tuple[float, int, int]:
        """(JS distance, unseen rows, non-null rows) of a raw batch column."""
        counts, _ = _category_counts(col)
        unseen_bucket = len(self.categories) + 1
        vec = np.zeros(unseen_bucket + 1, dtype=np.float64)
        index = self._index
        for key, c in counts.items():
            vec[index.get(key, unseen_bucket)] += c
        unseen = int(vec[unseen_bucket])
        n = int(vec.sum())
        if n == 0:
            return float("nan"), 0, 0
        return _js_distance(vec / n, self._q), unseen, n

    def threshold(self, n: int) -> float:
        v = 1.0 / max(n, 1) + 1.0 / max(self.rows, 1)
        return max(JS_FLOOR, self.js_unit * math.sqrt(v))

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if not k.startswith("_")}


@dataclass
class DriftReference:
    """Everything ``compute_drift`` needs, built once from the champion's training data."""

    rows: int
    chunks: int
    chunk_size: int
    bins: int
    seed: int
    features: dict[str, Union[NumericReference, CategoricalReference]]
    score_column: Optional[str] = None
    score: Optional[NumericReference] = None
    version: int = REFERENCE_VERSION

    def to_dict(self) -> dict:
        return {
            "version": self.version,
            "rows": self.rows,
            "chunks": self.chunks,
            "chunk_size": self.chunk_size,
            "bins": self.bins,
            "seed": self.seed,
            "score_column": self.score_column,
            "features": {name: ref.to_dict() for name, ref in self.features.items()},
            "score": self.score.to_dict() if self.score is not None else None,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DriftReference:
        if int(d.get("version", REFERENCE_VERSION)) != REFERENCE_VERSION:
            raise ValueError(f"unsupported drift reference version {d.get('version')!r}")

        def _one(fd: Mapping[str, Any]):
            fd = dict(fd)
            if fd.get("kind") == "categorical":
                return CategoricalReference(**fd)
            return NumericReference(**fd)

        return cls(
            rows=int(d["rows"]),
            chunks=int(d["chunks"]),
            chunk_size=int(d["chunk_size"]),
            bins=int(d["bins"]),
            seed=int(d["seed"]),
            features={name: _one(fd) for name, fd in d["features"].items()},
            score_column=d.get("score_column"),
            score=_one(d["score"]) if d.get("score") else None,
            version=int(d.get("version", REFERENCE_VERSION)),
        )


def _chunk_ids(n_rows: int, chunks: int, seed: int) -> np.ndarray:
    """Random, equal-sized chunk label per reference row."""
    perm = np.random.default_rng(seed).permutation(n_rows)
    ids = np.empty(n_rows, dtype=np.intp)
    ids[perm] = np.arange(n_rows, dtype=np.intp) * chunks // max(n_rows, 1)
    return ids


def _numeric_reference(
    name: str, kind: str, x: np.ndarray, chunk_ids: np.ndarray, chunks: int, bins: int
) -> NumericReference:
    ok = np.isfinite(x)
    xv = x[ok]
    n = int(xv.size)
    null_rate = float(1.0 - n / max(x.size, 1))
    if n < 2 * chunks:
        raise ValueError(
            f"drift reference: column {name!r} has only {n} non-null rows "
            f"(need at least {2 * chunks} for {chunks} calibration chunks)"
        )
    m = max(1, math.ceil(FINE_GRID / bins))
    g = bins * m
    q_fine = np.quantile(xv, np.arange(1, g, dtype=np.float64) / g)
    fine = np.unique(q_fine)
    psi_edges = np.unique(q_fine[m - 1 :: m])  # exactly a subset of the fine edges
    if fine.size == 1:  # (nearly) constant column: bins below / at / above the value
        fine = psi_edges = np.array([fine[0], np.nextafter(fine[0], np.inf)])
    q25, q75 = np.quantile(xv, [0.25, 0.75])
    scale = float(q75 - q25)
    if not scale > 0:
        scale = float(np.std(xv))
    if not scale > 0:
        scale = 1.0

    xs_sorted = np.sort(xv)
    below = np.searchsorted(xs_sorted, fine, side="left")
    fine_counts = np.diff(below, prepend=0, append=n)
    fine_to_psi = np.concatenate([[0], np.searchsorted(psi_edges, fine, side="right")])
    psi_ref = np.bincount(fine_to_psi, weights=fine_counts, minlength=len(psi_edges) + 1) / n
    ref = NumericReference(
        name=name,
        kind=kind,
        rows=n,
        null_rate=null_rate,
        fine_edges=fine.tolist(),
        fine_cdf=(below / n).tolist(),
        psi_edges=psi_edges.tolist(),
        psi_ref=psi_ref.tolist(),
        scale=scale,
        psi_unit=0.0,
        distance_unit=0.0,
    )

    # --- calibration: every chunk against the full reference
    cid = chunk_ids[ok]
    fine_bin = np.searchsorted(fine, xv, side="right")  # fine bin per row
    nb = len(fine) + 1
    per_chunk = np.bincount(cid * nb + fine_bin, minlength=chunks * nb).reshape(chunks, nb)
    rows_c = per_chunk.sum(axis=1)
    below_c = np.cumsum(per_chunk, axis=1)[:, :-1]
    psi_c = np.empty(chunks)
    dist_c = np.empty(chunks)
    for i in range(chunks):
        # leave-one-chunk-out: the chunk against the rest of the reference, so that it
        # behaves like an independent batch (sees categories/values the rest lacks)
        rest = n - int(rows_c[i])
        rest_cdf = (below - below_c[i]) / rest
        rest_psi = np.bincount(fine_to_psi, weights=fine_counts - per_chunk[i], minlength=len(psi_edges) + 1) / rest
        psi_c[i], dist_c[i] = ref._stats_from_below(below_c[i], int(rows_c[i]), rest_cdf, rest_psi)
    noise = 1.0 / np.maximum(rows_c, 1) + 1.0 / np.maximum(n - rows_c, 1)

    k_eff = int(np.count_nonzero(psi_ref > 0))
    psi_guard = _chi2_isf(k_eff - 1)
    # sqrt(n) * W1 -> integral |B(F(x))| dx (Brownian bridge B): mean sqrt(2/pi) J and sd
    # at most sqrt(1 - 2/pi) J with J = integral sqrt(F (1 - F)) dx.
    from scipy.special import ndtri

    cdf = below / n
    s = np.sqrt(np.clip(cdf * (1.0 - cdf), 0.0, None))
    j_int = float(np.dot(0.5 * (s[1:] + s[:-1]), np.diff(fine))) / scale if fine.size > 1 else 0.0
    dist_guard = (math.sqrt(2 / math.pi) + -float(ndtri(GUARD_ALPHA)) * math.sqrt(1 - 2 / math.pi)) * j_int

    ref.psi_unit = _calibrate(psi_c, noise, psi_guard)
    ref.distance_unit = _calibrate(dist_c, np.sqrt(noise), dist_guard)
    ref.chunk_rows = rows_c.astype(int).tolist()
    ref.chunk_psi = psi_c.tolist()
    ref.chunk_distance = dist_c.tolist()
    return ref


def _category_shares(own: np.ndarray, other: float, singletons: int, total: int) -> np.ndarray:
    """Bucket shares [own..., other, unseen]; "unseen" gets the Good-Turing missing mass
    (reference singletons / rows), so a stable batch's share of never-seen categories
    (inevitable with many rare categories) does not read as drift."""
    total = max(int(total), 1)
    m0 = min(singletons / total, 1.0)
    q = np.empty(len(own) + 2, dtype=np.float64)
    q[:-2] = own
    q[-2] = other
    q[:-1] *= (1.0 - m0) / total
    q[-1] = m0
    return q


def _categorical_reference(name: str, col: pd.Series, chunk_ids: np.ndarray, chunks: int) -> CategoricalReference:
    codes, uniques = pd.factorize(col, use_na_sentinel=True)
    keys = [_cat_key(u) for u in uniques.tolist()] if len(uniques) else []
    # canonical key per unique value (several raw values may share one key: 1 and "1")
    key_index: dict[str, int] = {}
    unique_to_key = np.empty(len(keys), dtype=np.intp)
    for i, k in enumerate(keys):
        unique_to_key[i] = key_index.setdefault(k, len(key_index))
    ok = codes >= 0
    n = int(ok.sum())
    if n < 2 * chunks:
        raise ValueError(
            f"drift reference: column {name!r} has only {n} non-null rows "
            f"(need at least {2 * chunks} for {chunks} calibration chunks)"
        )
    row_key = unique_to_key[codes[ok]]
    n_keys = len(key_index)
    key_counts = np.bincount(row_key, minlength=n_keys)
    key_names = list(key_index)
    order = np.argsort(-key_counts, kind="stable")
    own = order[:MAX_CATEGORIES]
    own = own[key_counts[own] >= MIN_CATEGORY_ROWS]
    kept = len(own)
    pooled = order[kept:][:MAX_POOLED_NAMES]
    is_own = np.zeros(n_keys, dtype=bool)
    is_own[own] = True
    # buckets: own categories (most frequent first), pooled rare ones ("other"), unseen
    q = _category_shares(
        key_counts[own].astype(np.float64), float(key_counts[~is_own].sum()), int(np.count_nonzero(key_counts == 1)), n
    )
    ref = CategoricalReference(
        name=name,
        rows=n,
        null_rate=float(1.0 - n / max(len(col), 1)),
        categories=[key_names[i] for i in own],
        ref_share=q.tolist(),
        js_unit=0.0,
        pooled=[key_names[i] for i in pooled],
    )
    # --- calibration, leave-one-chunk-out: the chunk against the rest of the reference,
    # categories absent from the rest counting as unseen, like for a real batch
    cid = chunk_ids[ok]
    rows_c = np.bincount(cid, minlength=chunks)
    js_c = np.empty(chunks)
    for i in range(chunks):
        kc = np.bincount(row_key[cid == i], minlength=n_keys)
        rest = key_counts - kc
        seen = rest > 0
        p = np.empty(kept + 2, dtype=np.float64)
        p[:kept] = kc[own]
        p[kept] = kc[~is_own & seen].sum()
        p[kept + 1] = kc[~is_own & ~seen].sum()
        p /= max(int(rows_c[i]), 1)
        q_rest = _category_shares(
            rest[own].astype(np.float64),
            float(rest[~is_own].sum()),
            int(np.count_nonzero(rest == 1)),
            n - int(rows_c[i]),
        )
        js_c[i] = _js_distance(p, q_rest)
    noise = np.sqrt(1.0 / np.maximum(rows_c, 1) + 1.0 / np.maximum(n - rows_c, 1))
    k_eff = int(np.count_nonzero(q > 0))
    js_guard = math.sqrt(_chi2_isf(k_eff - 1) / 8.0)  # JSD ~ chi2_{k-1} / (8 n_eff)
    ref.js_unit = _calibrate(js_c, noise, js_guard)
    ref.chunk_rows = rows_c.astype(int).tolist()
    ref.chunk_js = js_c.tolist()
    return ref


def build_reference(
    df: pd.DataFrame,
    features: Mapping[str, FeatureSpec],
    *,
    chunks: int = 10,
    bins: int = 10,
    score_column: Optional[str] = None,
    seed: int = 0,
) -> DriftReference:
    """Summarise ``df`` (the champion's training data) and calibrate drift thresholds.

    ``features`` maps column -> FeatureSpec (or anything with ``type``). ``chunks``
    random reference chunks calibrate the thresholds; ``bins`` is the number of PSI bins.
    """
    if chunks < 3:
        raise ValueError("chunks must be >= 3")
    if bins < 2:
        raise ValueError("bins must be >= 2")
    missing = [c for c in features if c not in df.columns]
    if score_column is not None and score_column not in df.columns:
        missing.append(score_column)
    if missing:
        raise ValueError(f"drift reference: columns missing from the reference data: {missing}")
    n_rows = len(df)
    ids = _chunk_ids(n_rows, chunks, seed)
    refs: dict[str, Union[NumericReference, CategoricalReference]] = {}
    for name, spec in features.items():
        if _spec_type(spec) == "numeric":
            refs[name] = _numeric_reference(name, "numeric", _as_float(df[name]), ids, chunks, bins)
        else:
            refs[name] = _categorical_reference(name, df[name], ids, chunks)
    score = None
    if score_column is not None:
        score = _numeric_reference(score_column, "score", _as_float(df[score_column]), ids, chunks, bins)
    return DriftReference(
        rows=n_rows,
        chunks=chunks,
        chunk_size=n_rows // chunks,
        bins=bins,
        seed=seed,
        features=refs,
        score_column=score_column,
        score=score,
    )


def build_reference_from_config(
    df: pd.DataFrame,
    features: Mapping[str, FeatureSpec],
    config: DriftConfig,
    *,
    score_column: Optional[str] = None,
    seed: int = 0,
) -> DriftReference:
    """``build_reference`` with ``chunks``/``bins`` taken from a ``DriftConfig``."""
    return build_reference(
        df, features, chunks=config.chunks, bins=config.psi_bins, score_column=score_column, seed=seed
    )


# ---------------------------------------------------------------------------- result


@dataclass
class FeatureDrift:
    feature: str
    kind: str  # "numeric" / "categorical" / "score"
    statistic: str  # "psi" / "jensen_shannon"
    value: float
    threshold: float
    distance: Optional[float]  # Wasserstein-1 / reference spread (numeric only)
    distance_threshold: Optional[float]
    unseen: int  # rows with categories absent from the reference
    drifted: bool
    rows: int = 0  # non-null batch rows the statistics are based on
    null_rate: float = 0.0  # batch null share (reported, not part of the verdict)
    reference_null_rate: float = 0.0

    def to_dict(self) -> dict:
        return {k: _clean(v) for k, v in asdict(self).items()}

    def threshold_ratio(self) -> tuple[float, str]:
        """(statistic / threshold, "PSI" | "W1" | "JS"): 1.0 is the threshold; numeric features
        take the larger of the PSI and distance ratios (either one drifts the feature)."""
        r = self.value / self.threshold if self.threshold and math.isfinite(self.value) else 0.0
        tag = "JS" if self.statistic == "jensen_shannon" else "PSI"
        if self.distance is not None and self.distance_threshold and math.isfinite(self.distance):
            rd = self.distance / self.distance_threshold
            if rd > r:
                r, tag = rd, "W1"
        return r, tag


@dataclass
class DriftResult:
    verdict: Verdict
    rows: int
    share_drifted: float
    features: list[FeatureDrift]
    score: Optional[FeatureDrift] = None
    min_rows: int = 0
    drifted_share: float = 0.0

    @property
    def drifted_features(self) -> list[str]:
        return [f.feature for f in self.features if f.drifted]

    def to_dict(self) -> dict:
        return {
            "verdict": self.verdict,
            "rows": self.rows,
            "share_drifted": _clean(self.share_drifted),
            "drifted_features": self.drifted_features,
            "min_rows": self.min_rows,
            "drifted_share": self.drifted_share,
            "features": [f.to_dict() for f in self.features],
            "score": self.score.to_dict() if self.score is not None else None,
        }

    def table_rows(self) -> list[dict]:
        """One flat dict per feature (and the score last), for a metadata table."""
        out = []
        for f in self.features + ([self.score] if self.score is not None else []):
            out.append(
                {
                    "feature": f.feature,
                    "kind": f.kind,
                    "statistic": f.statistic,
                    "value": _clean(round(f.value, 6)) if math.isfinite(f.value) else None,
                    "threshold": _clean(round(f.threshold, 6)),
                    "distance": _clean(round(f.distance, 6))
                    if f.distance is not None and math.isfinite(f.distance)
                    else None,
                    "distance_threshold": _clean(round(f.distance_threshold, 6))
                    if f.distance_threshold is not None
                    else None,
                    "unseen": int(f.unseen),
                    "null_rate": _clean(round(f.null_rate, 6)),
                    "drifted": bool(f.drifted),
                }
            )
        return out


def _feature_drift(
    ref: Union[NumericReference, CategoricalReference], col: Optional[pd.Series], n_rows: int
) -> FeatureDrift:
    if isinstance(ref, CategoricalReference):
        if col is None:
            js, unseen, n = float("nan"), 0, 0
        else:
            js, unseen, n = ref.stats(col)
        thr = ref.threshold(n)
        return FeatureDrift(
            feature=ref.name,
            kind="categorical",
            statistic="jensen_shannon",
            value=js,
            threshold=thr,
            distance=None,
            distance_threshold=None,
            unseen=unseen,
            drifted=bool(n > 0 and js > thr),
            rows=n,
            null_rate=float(1.0 - n / n_rows) if n_rows else 0.0,
            reference_null_rate=ref.null_rate,
        )
    if col is None:
        psi, dist, n = float("nan"), float("nan"), 0
    else:
        psi, dist, n = ref.stats(_as_float(col))
    psi_thr, dist_thr = ref.thresholds(n)
    drifted = bool(n > 0 and (psi > psi_thr or dist > dist_thr))
    return FeatureDrift(
        feature=ref.name,
        kind=ref.kind,
        statistic="psi",
        value=psi,
        threshold=psi_thr,
        distance=dist,
        distance_threshold=dist_thr,
        unseen=0,
        drifted=drifted,
        rows=n,
        null_rate=float(1.0 - n / n_rows) if n_rows else 0.0,
        reference_null_rate=ref.null_rate,
    )


def compute_drift(
    reference: DriftReference, batch: pd.DataFrame, *, min_rows: int = 200, drifted_share: float = 0.3
) -> DriftResult:
    """Compare ``batch`` with the reference.

    Verdict: "not enough data" when ``len(batch) < min_rows`` (no statistics computed);
    "drifted" when the share of drifted features (among those with any non-null value) is
    at least ``drifted_share``; else "stable". A column missing from the batch is reported
    with NaN statistics and does not count. The score column (if the reference has one
    and the batch carries it) is reported in ``score`` and does not count either.
    """
    rows = int(len(batch))
    if rows < min_rows:
        return DriftResult("not enough data", rows, 0.0, [], None, min_rows, drifted_share)
    feats = [
        _feature_drift(ref, batch[name] if name in batch.columns else None, rows)
        for name, ref in reference.features.items()
    ]
    evaluated = [f for f in feats if f.rows > 0]
    share = (sum(f.drifted for f in evaluated) / len(evaluated)) if evaluated else 0.0
    score = None
    if reference.score is not None and reference.score_column in batch.columns:
        score = _feature_drift(reference.score, batch[reference.score_column], rows)
    verdict: Verdict = "drifted" if evaluated and share >= drifted_share else "stable"
    return DriftResult(verdict, rows, float(share), feats, score, min_rows, drifted_share)


def compute_drift_from_config(reference: DriftReference, batch: pd.DataFrame, config: DriftConfig) -> DriftResult:
    return compute_drift(reference, batch, min_rows=config.min_rows, drifted_share=config.drifted_share)


# ----------------------------------------------------------------------------- chart


def drift_bar_chart_png(result: DriftResult) -> bytes:
    """Horizontal bars of statistic / threshold per feature (1.0 = threshold), drifted in
    red; numeric features use the larger of the PSI and distance ratios. PNG bytes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    items = list(result.features) + ([result.score] if result.score is not None else [])
    labels, ratios, colors = [], [], []
    for f in items:
        r, tag = f.threshold_ratio()
        labels.append(f"{'model score' if f.kind == 'score' else f.feature} ({tag})")
        ratios.append(r)
        colors.append("#d62728" if f.drifted else ("#7f7f7f" if f.kind == "score" else "#1f77b4"))
    height = max(2.0, 0.32 * len(items) + 1.2)
    fig = Figure(figsize=(7.0, height), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    y = np.arange(len(items))
    if items:
        ax.barh(y, ratios, color=colors)
        ax.set_yticks(y, labels, fontsize=8)
        ax.invert_yaxis()
    ax.axvline(1.0, color="black", linestyle="--", linewidth=1, label="threshold")
    ax.set_xlabel("statistic / threshold")
    ax.set_title(
        f"Drift: {result.verdict} ({result.share_drifted:.0%} of features drifted, {result.rows} rows)", fontsize=9
    )
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


# ------------------------------------------------------------------ performance drop


def bootstrap_metric_drop(
    y_true,
    y_score,
    *,
    metric: Callable[[np.ndarray, np.ndarray], float],
    baseline: float,
    higher_is_better: bool = True,
    n_boot: int = 200,
    alpha: float = 0.05,
    seed: int = 0,
) -> dict:
    """Bootstrap CI of ``metric`` on a labelled batch vs the champion's holdout ``baseline``.

    Returns ``value`` (metric on the whole batch), ``ci_low``/``ci_high`` (percentile CI at
    level 1 - alpha), ``drop`` (baseline - value, sign-adjusted: positive = worse) and
    ``significant`` (the whole CI is on the worse side of the baseline). Resamples where the
    metric fails (e.g. a single class for ROC AUC) are skipped. The resample indices are
    drawn as one matrix (in blocks bounding memory to ~4M indices).
    """
    yt = np.asarray(y_true)
    ys = np.asarray(y_score)
    n = int(len(yt))
    if n == 0 or len(ys) != n:
        raise ValueError("y_true and y_score must be non-empty and of equal length")
    value = float(metric(yt, ys))
    rng = np.random.default_rng(seed)
    block = max(1, min(n_boot, 4_000_000 // n))
    boots = np.empty(n_boot, dtype=np.float64)
    done = 0
    while done < n_boot:
        b = min(block, n_boot - done)
        idx = rng.integers(0, n, size=(b, n))
        yt_b, ys_b = yt[idx], ys[idx]
        for i in range(b):
            try:
                boots[done + i] = float(metric(yt_b[i], ys_b[i]))
            except (ValueError, ZeroDivisionError):
                boots[done + i] = np.nan
        done += b
    boots = boots[np.isfinite(boots)]
    if boots.size:
        lo, hi = np.quantile(boots, [alpha / 2, 1 - alpha / 2])
    else:
        lo = hi = float("nan")
    lo, hi = float(lo), float(hi)
    drop = (baseline - value) if higher_is_better else (value - baseline)
    if higher_is_better:
        significant = bool(boots.size and hi < baseline)
    else:
        significant = bool(boots.size and lo > baseline)
    return {
        "value": value,
        "ci_low": lo,
        "ci_high": hi,
        "drop": float(drop),
        "significant": significant,
        "baseline": float(baseline),
        "rows": n,
        "n_boot": int(boots.size),
    }
