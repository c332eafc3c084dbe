"""Rolling-origin backtest: how each candidate choice would have served batches it had not seen.

A choice is a window rule (all / newest N / regime) x an estimator (x a search setting). For each
of the last ``training.backtest_batches`` batches b (the origins), the rule is applied to the
batches before b, fitted and scored on b's training rows; the newest origin is the holdout: the
candidate itself (fitted on every training row of its window) scored on the holdout rows, as
before. So a choice is judged on several batches of rows, not on one small holdout, and a narrow
window that leads on the newest month but serves the next one badly shows it on the earlier
months; before a regime began, its rule is the newest as many batches (``window_at``). One fit
per distinct (batches, estimator) serves every choice whose rule gives those batches at that
origin (``all`` and ``regime`` often coincide). No holdout row is ever trained on, and holdout
rows are scored only at the holdout origin.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ml_platform.core import compute, training
from ml_platform.core.frames import model_inputs
from ml_platform.names import COL_BATCH
from ml_platform.settings import EstimatorConfig, ModelConfig

BATCH = COL_BATCH  # as core/selection.py: the row's batch
HOLDOUT_ORIGIN = "holdout"  # the name of the newest origin in tables


def window_at(
    kind: str, before: list[str], cfg: ModelConfig, regime: str | None, regime_batches: int = 0
) -> tuple[str, ...]:
    """The batches a window rule picks when the newest batch known is ``before[-1]``: ``all`` of
    them, the ``newest`` N, or those since the ``regime`` start; before the regime began, the
    newest ``regime_batches`` (its length at the retrain): would forgetting the older batches have
    paid then? A regime judged on the holdout alone often led on the newest month's label shift
    and served the next month 0.1 below all the data (issue 22's housing stream)."""
    if kind == "all":
        return tuple(before)
    if kind == "newest":
        return tuple(before[-cfg.training.newest_batches :])
    if kind == "regime":
        if regime in before:
            return tuple(before[before.index(regime) :])
        return tuple(before[-regime_batches:]) if regime_batches > 0 else ()
    raise ValueError(f"unknown window kind {kind!r}")


def origin_batches(order: list[str], k: int) -> list[str]:
    """The batches scored by refits on the batches before them: the newest ``k - 1`` but the
    newest (the holdout origin), each with at least one batch before it; oldest first."""
    return [b for b in order[-k:-1] if order.index(b) > 0] if k > 1 else []


@dataclass
class Origin:
    """One scored batch: its rows' labels, and per choice (trial index) its outputs and metric
    (NaN: not scored here, e.g. an empty window, or the metric undefined), and which fit scored it
    (two choices whose rules picked the same batches here share one: no evidence between them)."""

    batch: str
    y: np.ndarray
    outputs: dict[int, np.ndarray] = field(default_factory=dict)
    fits: dict[int, tuple] = field(default_factory=dict)
    classes: dict[int, object] = field(default_factory=dict)
    values: dict[int, float] = field(default_factory=dict)

    def value(self, i: int) -> float:
        return self.values.get(i, float("nan"))


def _value(cfg: ModelConfig, y: np.ndarray, out: np.ndarray, classes) -> float:
    try:
        return float(training.metric_function(cfg.gate_metric, cfg.task, classes)(y, out))
    except ValueError:  # undefined on this batch (a single class)
        return float("nan")


def _outputs(pipe, x: pd.DataFrame, task: str) -> np.ndarray:
    return compute.outputs(pipe, x, task)


def _key(batches: tuple[str, ...], est: EstimatorConfig) -> tuple:
    return batches, est.name, repr(sorted(est.params.items()))


class Backtest:
    """The origins of one retrain and the fits behind them, reused across choices."""

    def __init__(
        self,
        train: pd.DataFrame,
        holdout: pd.DataFrame,
        order: list[str],
        cfg: ModelConfig,
        regime,
        regime_drifted: bool = False,
    ):
        self.train, self.cfg, self.regime, self.order = train, cfg, regime, order
        # a regime that began with drift in the inputs is a new population: the batches before it
        # cannot show what forgetting costs there, so it is not scored before it began
        self.regime_batches = len(order) - order.index(regime) if regime in order and not regime_drifted else 0
        k = cfg.training.backtest_batches
        self.origins = [
            Origin(b, training.target_values(train[train[BATCH] == b], cfg))
            for b in origin_batches(order, k)
            if (train[BATCH] == b).any()
        ]
        self._x = {o.batch: model_inputs(train[train[BATCH] == o.batch], self.cfg) for o in self.origins}
        self.holdout = Origin(HOLDOUT_ORIGIN, training.target_values(holdout, cfg))
        self._xh = model_inputs(holdout, cfg)
        self._fits: dict[tuple, tuple[object, dict]] = {}  # key -> (pipe or None, outputs per origin)
        self.fits = 0  # distinct fits made
        self.fit_seconds = 0.0

    @property
    def all_origins(self) -> list[Origin]:
        return [*self.origins, self.holdout]

    def score(self, i: int, kind: str, est: EstimatorConfig, pipe) -> float:
        """Score choice ``i`` (window rule ``kind``, estimator ``est``; ``pipe``: its fit on every
        training row of its window, None when skipped) on every origin. Returns the seconds spent
        fitting for it (fits another choice already made cost nothing)."""
        seconds = 0.0
        for o in self.origins:
            before = self.order[: self.order.index(o.batch)]
            batches = window_at(kind, before, self.cfg, self.regime, self.regime_batches)
            key = _key(batches, est)
            if key not in self._fits:
                t0 = time.perf_counter()
                self._fits[key] = (self._fit(batches, est), {})
                spent = time.perf_counter() - t0
                seconds += spent
                self.fit_seconds += spent
            fitted, cached = self._fits[key]
            if fitted is None:
                continue
            if o.batch not in cached:
                cached[o.batch] = _outputs(fitted, self._x[o.batch], self.cfg.task)
            self._put(o, i, cached[o.batch], getattr(fitted, "classes_", None))
            o.fits[i] = key
        if pipe is not None:
            self._put(self.holdout, i, _outputs(pipe, self._xh, self.cfg.task), getattr(pipe, "classes_", None))
            self.holdout.fits[i] = (HOLDOUT_ORIGIN, i)  # every candidate is its own fit
        return seconds

    def _fit(self, batches: tuple[str, ...], est: EstimatorConfig):
        rows = self.train[self.train[BATCH].isin(batches)]
        if rows.empty or (self.cfg.task == "classification" and rows[self.cfg.target].nunique() < 2):
            return None
        self.fits += 1
        return training.fit(rows, self.cfg.model_copy(update={"estimator": est}))

    def _put(self, o: Origin, i: int, out: np.ndarray, classes) -> None:
        o.outputs[i], o.classes[i] = out, classes
        o.values[i] = _value(self.cfg, o.y, out, classes)
