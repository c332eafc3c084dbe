"""The drift reference: a JSON-serialisable summary of the champion's training data (see ``core/drift.py``)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Optional, Union

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # pragma: no cover
    from ml_platform.settings import DriftConfig, FeatureSpec
from ml_platform.core import drift_stats as stats
from ml_platform.core.drift_stats import (
    DISTANCE_FLOOR,
    FINE_GRID,
    GUARD_ALPHA,
    JS_FLOOR,
    MAX_CATEGORIES,
    MAX_POOLED_NAMES,
    MIN_CATEGORY_ROWS,
    PSI_FLOOR,
    REFERENCE_VERSION,
)


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
        psi = stats.psi(p, self._psi_ref if ref_psi is None else ref_psi)
        if self._widths.size:
            d = np.abs(below / n - (self._cdf if ref_cdf is None else ref_cdf))
            w = float(np.dot(0.5 * (d[1:] + d[:-1]), self._widths)) / self.scale
        else:
            w = 0.0
        return psi, w

    def stats(self, x: np.ndarray) -> tuple[float, float, int]:
        """(psi, scaled Wasserstein, non-null rows) of raw values ``x`` (NaN allowed)."""
        xs = np.sort(stats.finite(x))
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
        counts, _ = stats.category_counts(col)
        unseen_bucket = len(self.categories) + 1
        vec = np.zeros(unseen_bucket + 1, dtype=np.float64)
        index = self._index
        for key, c in counts.items():
            vec[index.get(key, unseen_bucket)] += c
        unseen = int(vec[unseen_bucket])
        n = int(vec.sum())
        if n == 0:
            return float("nan"), 0, 0
        return stats.js_distance(vec / n, self._q), unseen, n

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
    psi_guard = stats.chi2_isf(k_eff - 1)
    # sqrt(n) * W1 -> integral |B(F(x))| dx (Brownian bridge B): mean sqrt(2/pi) J and sd
    # at most sqrt(1 - 2/pi) J with J = integral sqrt(F (1 - F)) dx.
    from scipy.special import ndtri

    cdf = below / n
    s = np.sqrt(np.clip(cdf * (1.0 - cdf), 0.0, None))
    j_int = float(np.dot(0.5 * (s[1:] + s[:-1]), np.diff(fine))) / scale if fine.size > 1 else 0.0
    dist_guard = (math.sqrt(2 / math.pi) + -float(ndtri(GUARD_ALPHA)) * math.sqrt(1 - 2 / math.pi)) * j_int

    ref.psi_unit = stats.calibrate(psi_c, noise, psi_guard)
    ref.distance_unit = stats.calibrate(dist_c, np.sqrt(noise), dist_guard)
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
    keys = [stats.cat_key(u) for u in uniques.tolist()] if len(uniques) else []
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
        js_c[i] = stats.js_distance(p, q_rest)
    noise = np.sqrt(1.0 / np.maximum(rows_c, 1) + 1.0 / np.maximum(n - rows_c, 1))
    k_eff = int(np.count_nonzero(q > 0))
    js_guard = math.sqrt(stats.chi2_isf(k_eff - 1) / 8.0)  # JSD ~ chi2_{k-1} / (8 n_eff)
    ref.js_unit = stats.calibrate(js_c, noise, js_guard)
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
        if stats.spec_type(spec) == "numeric":
            refs[name] = _numeric_reference(name, "numeric", stats.as_float(df[name]), ids, chunks, bins)
        else:
            refs[name] = _categorical_reference(name, df[name], ids, chunks)
    score = None
    if score_column is not None:
        score = _numeric_reference(score_column, "score", stats.as_float(df[score_column]), ids, chunks, bins)
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
