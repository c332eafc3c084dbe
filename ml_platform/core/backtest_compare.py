"""Comparing choices on the backtest's origins (core/backtest.py): means, intervals, the leader.

Two choices are compared on the origins both were scored on (a regime that began recently has
only the newest), so every comparison is paired: the same rows, the same bootstrap resamples.
An interval resamples rows within each origin (stratified) and averages the origins' metrics, so
a batch of 700 rows and a holdout of 280 count as one origin each, as in the mean.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ml_platform.core import bootstrap, training
from ml_platform.core.backtest import Origin
from ml_platform.settings import ModelConfig


@dataclass(frozen=True)
class Comparison:
    """(a - b) on their common origins, sign-adjusted (> 0: a is better), with its interval."""

    delta: float
    low: float
    high: float
    origins: tuple[str, ...]


def common(origins: list[Origin], *idx: int) -> list[Origin]:
    return [o for o in origins if all(np.isfinite(o.value(i)) for i in idx)]


def mean(origins: list[Origin], i: int, among: list[Origin] | None = None) -> float:
    """Choice ``i``'s mean metric over ``among`` (default: every origin it was scored on)."""
    vals = [o.value(i) for o in (among if among is not None else common(origins, i))]
    return float(np.mean(vals)) if vals else float("nan")


def _draws(o: Origin, idx: list[int], cfg: ModelConfig, seed: int) -> dict[int, np.ndarray]:
    """Per choice, its metric on ``cfg.gate.resamples`` row resamples of origin ``o`` (the same
    resamples for every choice: paired)."""
    fns = {i: bootstrap.weighted_metric(cfg.gate_metric, cfg.task, o.y, o.outputs[i], o.classes[i]) for i in idx}
    out: dict[int, list] = {i: [] for i in idx}
    for w in bootstrap.resample_counts(len(o.y), cfg.gate.resamples, seed):
        for i, f in fns.items():
            out[i].append(f(w))
    return {i: np.concatenate(v) for i, v in out.items()}


def _percentiles(values: np.ndarray, confidence: float) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if not values.size:
        return float("nan"), float("nan")
    a = (1.0 - confidence) / 2
    lo, hi = np.quantile(values, [a, 1 - a])
    return float(lo), float(hi)


def interval(origins: list[Origin], i: int, cfg: ModelConfig) -> tuple[float, float]:
    """The bootstrap interval (``gate.confidence``) of choice ``i``'s mean over its origins."""
    scored = common(origins, i)
    if not scored:
        return float("nan"), float("nan")
    draws = [_draws(o, [i], cfg, cfg.training.seed + k)[i] for k, o in enumerate(scored)]
    return _percentiles(np.mean(draws, axis=0), cfg.gate.confidence)


def compare(origins: list[Origin], a: int, b: int, cfg: ModelConfig) -> Comparison | None:
    """(a - b) on the origins both were scored on; None when there is none."""
    both = common(origins, a, b)
    if not both:
        return None
    sign = 1.0 if training.HIGHER_IS_BETTER[cfg.gate_metric] else -1.0
    delta = sign * (mean(origins, a, both) - mean(origins, b, both))
    draws = [_draws(o, [a, b], cfg, cfg.training.seed + k) for k, o in enumerate(both)]
    diff = sign * (np.mean([d[a] for d in draws], axis=0) - np.mean([d[b] for d in draws], axis=0))
    lo, hi = _percentiles(diff, cfg.gate.confidence)
    return Comparison(float(delta), lo, hi, tuple(o.batch for o in both))


def leader(origins: list[Origin], candidates: list[int], cfg: ModelConfig) -> int | None:
    """The best mean among the choices scored on the most origins (the first of equals: the wider
    window, the first estimator); then each choice scored on fewer (a regime that began recently)
    takes the lead when its mean beats the leader's by more than ``gate.max_regression`` on the
    origins both were scored on: less evidence needs a clear lead, as a changed concept gives
    (Agrawal, the demo: 0.05-0.2+), while a narrow window's small lead on the newest rows alone is
    mostly that month's noise (issue 22). None: no choice was scored anywhere."""
    sign = 1.0 if training.HIGHER_IS_BETTER[cfg.gate_metric] else -1.0
    lead, most = None, 0
    for i in sorted(candidates, key=lambda i: -len(common(origins, i))):  # stable: config order within
        n = len(common(origins, i))
        if not n:
            continue
        if lead is None:
            lead, most = i, n
            continue
        both = common(origins, i, lead)
        if both and sign * (mean(origins, i, both) - mean(origins, lead, both)) > (
            0 if n == most else cfg.gate.max_regression
        ):
            lead = i
    return lead


def differing(origins: list[Origin], a: int, b: int) -> list[Origin]:
    """The origins both were scored on where their fits differ: where two rules picked the same
    batches (``newest`` and ``all`` early in a stream) the difference is exactly 0, no evidence."""
    return [o for o in common(origins, a, b) if o.fits.get(a, ("a",)) != o.fits.get(b, ("b",))]


def prefer_widest(
    origins: list[Origin], candidates: list[int], rows: dict[int, int], cfg: ModelConfig
) -> tuple[int | None, Comparison | None]:
    """The widest window (the most training rows; among its estimators and settings the best
    mean) unless a narrower choice beats it on at least 2 origins where their fits differ
    (``training.backtest_batches: 1``: the holdout alone) by a clear margin: a mean lead above
    ``gate.max_regression`` (a changed concept: Agrawal) or a paired interval of the difference
    above 0 (a gradual drift: Hyperplane). A regime that began with input drift, scored on the
    holdout alone, needs the lead above ``gate.max_regression`` there (the demo's sudden change).
    The evidence is several batches of rows, not one small holdout: on issue 22's housing stream
    every narrow window that led on the holdout alone served the next month worse, and none led
    where 2+ batches differed. Of several such choices, the largest lead. Returns the choice and,
    when a narrower one won, its comparison."""
    scored = [i for i in candidates if common(origins, i)]
    if not scored:
        return None, None
    widest = max(rows[i] for i in scored)
    base = leader(origins, [i for i in scored if rows[i] == widest], cfg)
    need = min(2, cfg.training.backtest_batches)
    best, best_c = base, None
    for i in scored:
        if rows[i] >= widest:
            continue
        both = differing(origins, i, base)
        # scored on fewer origins: a regime that began with input drift (not scored before it began)
        recent = len(common(origins, i)) < len(common(origins, base))
        if not both or len(both) < (1 if recent else need):
            continue
        c = compare(both, i, base, cfg)
        clear = c.delta > cfg.gate.max_regression or (not recent and c.low > 0)
        if clear and (best_c is None or c.delta > best_c.delta):
            best, best_c = i, c
    return best, best_c
