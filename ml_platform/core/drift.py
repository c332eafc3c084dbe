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

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Optional, Union

import pandas as pd

if TYPE_CHECKING:  # pragma: no cover
    from ml_platform.settings import DriftConfig
from ml_platform.core import drift_stats as stats
from ml_platform.core.drift_reference import CategoricalReference, DriftReference, NumericReference
from ml_platform.core.drift_stats import (
    Verdict,
)


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
        return {k: stats.clean(v) for k, v in asdict(self).items()}

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
            "share_drifted": stats.clean(self.share_drifted),
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
                    "value": stats.clean(round(f.value, 6)) if math.isfinite(f.value) else None,
                    "threshold": stats.clean(round(f.threshold, 6)),
                    "distance": stats.clean(round(f.distance, 6))
                    if f.distance is not None and math.isfinite(f.distance)
                    else None,
                    "distance_threshold": stats.clean(round(f.distance_threshold, 6))
                    if f.distance_threshold is not None
                    else None,
                    "unseen": int(f.unseen),
                    "null_rate": stats.clean(round(f.null_rate, 6)),
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
        psi, dist, n = ref.stats(stats.as_float(col))
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
