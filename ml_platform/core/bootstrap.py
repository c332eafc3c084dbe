"""Paired bootstrap of a metric difference, vectorized with numpy.

A bootstrap resample is a vector of counts (how often each row was drawn). Every gate metric
is a function of per-row terms weighted by those counts, so one (resamples x rows) count
matrix gives all resampled values at once: sums become matrix products, and ROC AUC becomes
a weighted rank statistic over the rows sorted once by score (ties count one half, as in
scikit-learn). The same counts serve both models: the interval is of the paired difference.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from ml_platform.core.metric_kinds import HIGHER_IS_BETTER

# One block of the count matrix holds at most this many cells (int32: 8 MB).
BLOCK_CELLS = 2_000_000

WeightedMetric = Callable[[np.ndarray], np.ndarray]  # counts (n, B) -> metric (B,), NaN where undefined


def resample_counts(n: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Count matrices (n, block), int32, one column per resample (``resamples`` columns in all),
    each column summing to n. Rows first: gathering rows (sorted by score) then copies whole
    contiguous rows. Deterministic for (n, resamples, seed)."""
    rng = np.random.default_rng(seed)
    block = max(1, min(resamples, BLOCK_CELLS // max(n, 1)))
    done = 0
    while done < resamples:
        b = min(block, resamples - done)
        flat = rng.integers(0, n, size=(b, n)) * b + np.arange(b)[:, None]
        yield np.bincount(flat.ravel(), minlength=n * b).reshape(n, b).astype(np.int32)
        done += b


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _dot(terms: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Per resample, the count-weighted sum of per-row ``terms`` (n,) or (n, k)."""
    return terms.T.astype(np.float64) @ w if terms.ndim > 1 else terms.astype(np.float64) @ w


def _binary_auc(pos: np.ndarray, score: np.ndarray) -> WeightedMetric:
    """Weighted ROC AUC: P(score of a positive > score of a negative), ties one half.

    The negatives sorted by score once; per resample, the cumulative negative count, read at
    each positive's place among them (below it, and below-or-equal for the ties). Integer
    counts: exact."""
    neg_order = np.flatnonzero(~pos)[np.argsort(score[~pos], kind="mergesort")]
    neg_sorted = score[neg_order]
    pos_idx = np.flatnonzero(pos)
    lo = np.searchsorted(neg_sorted, score[pos_idx], side="left")  # negatives strictly below
    hi = np.searchsorted(neg_sorted, score[pos_idx], side="right")  # ... or equal
    ties = bool((hi != lo).any())

    def f(w: np.ndarray) -> np.ndarray:
        cum = np.zeros((len(neg_order) + 1, w.shape[1]), dtype=np.int64 if len(pos) > 2**20 else w.dtype)
        np.cumsum(w[neg_order], axis=0, out=cum[1:])
        wp = w[pos_idx]
        twice_below = 2 * cum[lo] if not ties else cum[lo] + cum[hi]  # ties count one half
        num = np.einsum("ij,ij->j", wp, twice_below, dtype=np.float64) / 2
        return _ratio(num, wp.sum(axis=0, dtype=np.float64) * cum[-1])

    return f


def _f1(pred_pos: np.ndarray, true_pos: np.ndarray) -> Callable[[np.ndarray], tuple]:
    terms = np.stack([pred_pos & true_pos, pred_pos & ~true_pos, ~pred_pos & true_pos], axis=1)

    def f(w: np.ndarray):
        tp, fp, fn = _dot(terms, w)
        den = 2 * tp + fp + fn
        return np.where(den > 0, 2 * tp / np.where(den > 0, den, 1.0), 0.0), den

    return f


def weighted_metric(name: str, task: str, y, outputs, classes=None) -> WeightedMetric:
    """``name`` as a function of resample counts, equal to ``training.classification_metrics`` /
    ``regression_metrics`` on the resampled rows (a column of ones gives the plain value)."""
    y = np.asarray(y)
    out = np.asarray(outputs, dtype=np.float64)
    n = len(y)
    if task == "regression":
        yf = y.astype(np.float64)
        err = out - yf
        if name == "rmse":
            return lambda w: np.sqrt(_dot(err**2, w) / n)
        if name == "mae":
            return lambda w: _dot(np.abs(err), w) / n
        if name == "r2":

            def r2(w):
                swy, swy2 = _dot(yf, w), _dot(yf**2, w)
                sst = swy2 - swy**2 / n
                return 1.0 - _ratio(_dot(err**2, w), np.where(sst > 1e-12 * np.maximum(swy2, 1.0), sst, 0.0))

            return r2
        raise ValueError(f"unknown regression metric {name!r}")

    classes = np.asarray(classes)
    onehot = y[:, None] == classes[None, :]  # (n, k): the row's true class
    known = onehot.any(axis=1)
    pred = out.argmax(axis=1)
    if name == "accuracy":
        correct = classes[pred] == y
        return lambda w: _dot(correct, w) / n
    if name == "log_loss":
        p_true = np.where(known, out[np.arange(n), onehot.argmax(axis=1)], 0.0)
        loss = -np.log(np.clip(p_true, 1e-7, 1.0))
        return lambda w: _dot(loss, w) / n
    if len(classes) == 2:
        pos = y == classes[1]
        both = lambda w: (_dot(pos, w) > 0) & (_dot(~pos, w) > 0)  # noqa: E731 - AUC, F1 need both
        if name == "roc_auc":
            auc = _binary_auc(pos, out[:, 1])
            return lambda w: np.where(both(w), auc(w), np.nan)
        if name == "f1":
            f1 = _f1(pred == 1, pos)
            return lambda w: np.where(both(w), f1(w)[0], np.nan)
    elif name == "roc_auc":  # one-vs-rest, macro: every class must be present
        aucs = [_binary_auc(onehot[:, j], out[:, j]) for j in range(len(classes))]

        def ovr(w):
            vals = np.stack([a(w) for a in aucs], axis=1)
            undefined = np.isnan(vals).any(axis=1) | (_dot(~known, w) > 0)
            return np.where(undefined, np.nan, np.nan_to_num(vals).mean(axis=1))

        return ovr
    elif name == "f1":  # macro over the classes present in the truth or the predictions
        per = [_f1(pred == j, onehot[:, j]) for j in range(len(classes))]

        def macro(w):
            vals, dens = zip(*(f(w) for f in per))
            v, present = np.stack(vals, axis=1), np.stack(dens, axis=1) > 0
            return _ratio((v * present).sum(axis=1), present.sum(axis=1).astype(np.float64))

        return macro
    raise ValueError(f"unknown classification metric {name!r}")


@dataclass(frozen=True)
class PairedInterval:
    """(candidate - champion) of a metric on the same rows, sign-adjusted: ``delta`` > 0 means
    the candidate is better (higher ROC AUC, lower RMSE). The interval is the percentile
    bootstrap interval of that difference at ``confidence``."""

    metric: str
    rows: int
    candidate: float
    champion: float
    delta: float
    ci_low: float
    ci_high: float
    confidence: float
    resamples: int  # resamples where both values were defined
    seed: int


def paired_bootstrap(
    metric: str,
    task: str,
    y,
    candidate_outputs,
    champion_outputs,
    *,
    candidate_classes=None,
    champion_classes=None,
    resamples: int = 1000,
    confidence: float = 0.9,
    seed: int = 0,
) -> PairedInterval:
    """The paired bootstrap interval of (candidate - champion) on the same ``y``. Both models are
    evaluated on the same resampled rows. Resamples where either value is undefined (ROC AUC on a
    single class) are dropped; with none left the interval is NaN."""
    y = np.asarray(y)
    n = len(y)
    if n == 0 or len(candidate_outputs) != n or len(champion_outputs) != n:
        raise ValueError("y and both outputs must be non-empty and of equal length")
    cand = weighted_metric(metric, task, y, candidate_outputs, candidate_classes)
    champ = weighted_metric(metric, task, y, champion_outputs, champion_classes)
    sign = 1.0 if HIGHER_IS_BETTER[metric] else -1.0
    ones = np.ones((n, 1), dtype=np.int32)
    c0, h0 = float(cand(ones)[0]), float(champ(ones)[0])
    deltas = np.concatenate([sign * (cand(w) - champ(w)) for w in resample_counts(n, resamples, seed)])
    deltas = deltas[np.isfinite(deltas)]
    a = (1.0 - confidence) / 2
    lo, hi = np.quantile(deltas, [a, 1 - a]) if deltas.size else (np.nan, np.nan)
    return PairedInterval(metric, n, c0, h0, sign * (c0 - h0), float(lo), float(hi), confidence, int(deltas.size), seed)
