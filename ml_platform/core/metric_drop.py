"""Is a metric drop on a batch real? A bootstrap interval on the champion's own holdout."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    pass


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
    weighted: Callable[[np.ndarray], np.ndarray] | None = None,
) -> dict:
    """Bootstrap CI of ``metric`` on a labelled batch vs the champion's holdout ``baseline``.

    Returns ``value`` (metric on the whole batch), ``ci_low``/``ci_high`` (percentile CI at
    level 1 - alpha), ``drop`` (baseline - value, sign-adjusted: positive = worse) and
    ``significant`` (the whole CI is on the worse side of the baseline). Resamples where the
    metric fails (e.g. a single class for ROC AUC) are skipped. The resample indices are
    drawn as one matrix (in blocks bounding memory to ~4M indices). ``weighted``: the same metric
    as a function of resample counts (``bootstrap.weighted_metric``), all resamples of a block in
    one call instead of one ``metric`` call each.
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
        if weighted is not None:  # counts (n, b): how often resample j drew row i
            flat = (idx * b + np.arange(b)[:, None]).ravel()
            boots[done : done + b] = weighted(np.bincount(flat, minlength=n * b).reshape(n, b).astype(np.int32))
            done += b
            continue
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
