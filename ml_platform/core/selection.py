"""Candidate selection: which models a retrain fits and which one it registers.

A retrain fits training windows (all data, the newest N batches, the new regime after a
shift) times the configured estimators, plus an optional small parameter search, and judges
every candidate by a rolling-origin backtest (core/backtest.py): refitted on the batches before
each of the last ``training.backtest_batches`` batches and scored on it, the newest being the
holdout of the newest rows that none of them trained on. The widest window becomes the version
unless a narrower choice beats it clearly on several of those batches
(core/backtest_compare.py). Pure over the catalog records and the training set, so whoever
launches the retrain (sensor, schedule, a UI click, the CLI) gets the same choice: nothing here
reads run tags.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from ml_platform.core import backtest_compare as bc
from ml_platform.core import training
from ml_platform.core.backtest import HOLDOUT_ORIGIN as HOLDOUT_ORIGIN
from ml_platform.core.backtest import Backtest
from ml_platform.core.batch_record import BatchRecord
from ml_platform.names import COL_BATCH, COL_HOLDOUT, COL_ROW
from ml_platform.settings import EstimatorConfig, ModelConfig

BATCH = COL_BATCH  # training-set column: the row's batch (partition key)
ROW = COL_ROW  # its position in the batch's validated parquet: (_batch, _row) identifies a row
HOLDOUT = COL_HOLDOUT  # True for a holdout row: no candidate trains on it

# The parameter search draws from these (keys the user fixed in `params` are left alone).
SEARCH_SPACE = {
    "hist_gradient_boosting": {
        "learning_rate": [0.03, 0.05, 0.1, 0.2],
        "max_leaf_nodes": [7, 15, 31, 63],
        "l2_regularization": [0.0, 0.1, 1.0, 10.0],
        "max_iter": [100, 200, 300],
        "min_samples_leaf": [10, 20, 50],
    },
    "random_forest": {
        "n_estimators": [100, 200],
        "max_depth": [None, 8, 16],
        "min_samples_leaf": [1, 5, 20],
        "max_features": ["sqrt", 0.5, 1.0],
    },
    "logistic_regression": {"C": [0.01, 0.1, 1.0, 10.0, 100.0]},
    "ridge": {"alpha": [0.01, 0.1, 1.0, 10.0, 100.0]},
}


@dataclass(frozen=True)
class Window:
    kind: str  # all | newest | regime
    label: str  # what the UI and MLflow show, e.g. "regime since batch-0004 (1 batch)"
    batches: tuple[str, ...]


@dataclass
class Trial:
    """One fitted candidate and its figures on the shared holdout."""

    window: Window
    estimator: EstimatorConfig
    metrics: dict[str, float]
    train_rows: int
    fit_seconds: float
    search: bool = False
    pipe: Pipeline | None = field(default=None, repr=False)
    skipped: str | None = None  # why it was not fitted (e.g. a single class)
    backtest: dict[str, float] = field(default_factory=dict)  # origin batch (or "holdout") -> metric
    backtest_mean: float = float("nan")
    backtest_interval: tuple[float, float] = (float("nan"), float("nan"))
    backtest_seconds: float = 0.0  # the refits on earlier batches this choice was first to need

    @property
    def name(self) -> str:
        params = ", ".join(f"{k}={v}" for k, v in sorted(self.estimator.params.items()))
        return f"{self.window.label} · {self.estimator.label}" + (f" ({params})" if params else "")


@dataclass
class Selection:
    trials: list[Trial]
    best: int  # index of the winner in trials
    metric: str
    holdout_rows: int
    regime_start: str | None
    top: int | None = None  # the backtest's best when ``best`` is a wider tied one
    note: str = ""  # why ``best`` is not the backtest's best
    origins: tuple[str, ...] = ()  # the backtest's scored batches, oldest first ("holdout" last)
    backtest_fits: int = 0  # distinct refits on earlier batches (shared across choices)
    backtest_seconds: float = 0.0

    @property
    def winner(self) -> Trial:
        return self.trials[self.best]


def regime_start(records: list[BatchRecord], upto: str | None = None) -> str | None:
    """First batch of the trailing run of shifted validated batches (arrival order), or None when
    the newest validated batch is not shifted. Read from the verdicts in the catalog, so a UI
    click after drift finds the regime the sensor's retrain found. ``upto``: the newest batch
    of the training set; later records are not looked at (the choice follows the data)."""
    keys = [r.partition for r in records]
    if upto in keys:
        records = records[: keys.index(upto) + 1]
    start = None
    newest = next((r for r in reversed(records) if r.is_validated), None)
    if newest is not None and newest.retrained and newest.decision.regime_start:
        return newest.decision.regime_start  # the policy's own answer (e.g. a drop pooled over batches)
    for rec in reversed(records):
        if not rec.is_validated:
            continue
        if not rec.shifted():
            break
        start = rec.partition
    return start


def regime_drifted(records: list[BatchRecord], regime: str | None) -> bool:
    """Did the regime begin with drift in the inputs (its first batch's drift verdict)? Then the
    older batches are another population, and the backtest does not score the regime before it
    began; a regime begun by a drop or a concept change alone (a month's label shift looks like
    that: issue 22) must show on the earlier batches that forgetting them pays."""
    rec = next((r for r in records if r.partition == regime), None)
    return bool(rec is not None and rec.drifted)


def holdout_pool(batch_rows: list[tuple[str, int]], cfg: ModelConfig) -> list[str]:
    """The newest batches the holdout is drawn from: one, and more (newest first) until
    ``holdout_fraction`` of their rows reaches ``training.min_holdout_rows``."""
    t = cfg.training
    pool, rows = [], 0
    for batch, n in reversed(batch_rows):
        pool.append(batch)
        rows += n
        if rows * t.holdout_fraction >= t.min_holdout_rows:
            break
    return pool


def mark_holdout(df: pd.DataFrame, cfg: ModelConfig) -> np.ndarray:
    """The ``_holdout`` column of a training set (rows in arrival order, with ``_batch``): within
    the holdout pool (the newest batches), ``training.holdout_mask`` (newest rows by timestamp,
    else a stable hash). Older batches are never holdout."""
    order = list(dict.fromkeys(df[BATCH]))
    sizes = df[BATCH].value_counts()
    pool = set(holdout_pool([(b, int(sizes[b])) for b in order], cfg))
    in_pool = df[BATCH].isin(pool).to_numpy()
    mask = np.zeros(len(df), dtype=bool)
    mask[in_pool] = training.holdout_mask(df[in_pool], cfg)
    return mask


def candidate_windows(
    batches: list[str], train_rows: dict[str, int], cfg: ModelConfig, regime: str | None
) -> list[Window]:
    """The configured windows over ``batches`` (arrival order), without duplicates (two windows
    holding the same batches are fitted once) or empty ones. ``train_rows``: trainable (non-
    holdout) rows per batch. The regime window needs ``training.min_regime_rows`` of them."""
    t = cfg.training
    out: list[Window] = []

    def add(kind: str, label: str, chosen: list[str]) -> None:
        if sum(train_rows.get(b, 0) for b in chosen) == 0:
            return
        if any(w.batches == tuple(chosen) for w in out):
            return
        out.append(Window(kind, label, tuple(chosen)))

    for kind in t.windows:
        if kind == "all":
            add("all", f"all {len(batches)} batch{'es' if len(batches) > 1 else ''}", batches)
        elif kind == "newest":
            chosen = batches[-t.newest_batches :]
            add("newest", f"newest {len(chosen)} batch{'es' if len(chosen) > 1 else ''}", chosen)
        elif kind == "regime" and regime in batches and t.drift_window == "regime":
            chosen = batches[batches.index(regime) :]
            if sum(train_rows.get(b, 0) for b in chosen) >= t.min_regime_rows:
                add("regime", f"regime since {regime} ({len(chosen)} batch{'es' if len(chosen) > 1 else ''})", chosen)
    return out


def _fit(
    train: pd.DataFrame,
    holdout: pd.DataFrame,
    cfg: ModelConfig,
    window: Window,
    est: EstimatorConfig,
    search: bool = False,
) -> Trial:
    rows = train[train[BATCH].isin(window.batches)]
    if cfg.task == "classification" and rows[cfg.target].nunique() < 2:
        return Trial(window, est, {}, len(rows), 0.0, search, skipped="a single class in this window")
    c = cfg.model_copy(update={"estimator": est})
    t0 = time.perf_counter()
    pipe = training.fit(rows, c)
    seconds = time.perf_counter() - t0
    return Trial(window, est, training.evaluate(pipe, holdout, c), len(rows), seconds, search, pipe)


def search_settings(est: EstimatorConfig, budget: int, seed: int) -> list[EstimatorConfig]:
    """``budget`` distinct parameter settings around ``est`` (its own params kept), seeded."""
    space = {k: v for k, v in SEARCH_SPACE.get(est.name, {}).items() if k not in est.params}
    if not space or budget <= 0:
        return []
    rng = np.random.default_rng(seed)
    seen = {repr(sorted(est.params.items()))}
    out: list[EstimatorConfig] = []
    for _ in range(budget * 20):  # the grid may be smaller than the budget
        if len(out) >= budget:
            break
        params = {**est.params, **{k: vals[rng.integers(len(vals))] for k, vals in space.items()}}
        params = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in params.items()}
        ident = repr(sorted(params.items()))
        if ident not in seen:
            seen.add(ident)
            out.append(EstimatorConfig(name=est.name, params=params))
    return out


def select(
    train: pd.DataFrame,
    holdout: pd.DataFrame,
    cfg: ModelConfig,
    windows: list[Window],
    regime: str | None = None,
    log=None,
    regime_drifted: bool = False,
) -> Selection:
    """Fit every window x estimator on ``train`` (rows with ``_batch``), then ``search_budget``
    parameter settings on the best one's window; backtest each (``core.backtest``) and pick the
    best mean by the gate metric (ties: the earlier, i.e. the wider window and the first
    estimator); with ``training.prefer_more_data`` the widest window unless a narrower one beats
    it clearly over several batches (``_choose``). Raises ValueError when no candidate could be fitted."""
    if holdout.empty:
        raise ValueError("the holdout is empty: nothing to judge the candidates on")
    if HOLDOUT in train and train[HOLDOUT].any():
        raise ValueError("training rows include holdout rows")
    metric = cfg.gate_metric
    order = list(dict.fromkeys(train[BATCH]))
    order += [b for b in dict.fromkeys(holdout[BATCH]) if b not in order] if BATCH in holdout else []
    bt = Backtest(train, holdout, order, cfg, regime, regime_drifted)
    trials: list[Trial] = []

    def add(window: Window, est: EstimatorConfig, search: bool) -> None:
        t = _fit(train, holdout, cfg, window, est, search)
        if not t.skipped:
            t.backtest_seconds = bt.score(len(trials), window.kind, est, t.pipe)
            t.backtest = {o.batch: o.value(len(trials)) for o in bt.all_origins if np.isfinite(o.value(len(trials)))}
        trials.append(t)
        if log:
            log(f"{'search' if search else 'candidate'} {t.name}: {_figure(t, metric)}")

    for window in windows:
        for est in cfg.estimator_list:
            add(window, est, False)
    fitted = [i for i, t in enumerate(trials) if not t.skipped]
    if not fitted:
        reasons = "; ".join(f"{t.window.label}: {t.skipped}" for t in trials) or "no training window"
        raise ValueError(f"no candidate could be fitted ({reasons})")
    first, _ = _choose(trials, fitted, bt.all_origins, cfg)
    first_trial = trials[first if first is not None else fitted[0]]
    for est in search_settings(first_trial.estimator, cfg.training.search_budget, cfg.training.seed):
        add(first_trial.window, est, True)
    fitted = [i for i, t in enumerate(trials) if not t.skipped]
    origins = bt.all_origins
    for i in fitted:
        t = trials[i]
        t.backtest_mean = bc.mean(origins, i)
        t.backtest_interval = bc.interval(origins, i, cfg)
    sel = Selection(
        trials,
        fitted[0],
        metric,
        len(holdout),
        regime,
        origins=tuple(o.batch for o in origins),
        backtest_fits=bt.fits,
        backtest_seconds=bt.fit_seconds,
    )
    top = bc.leader(origins, fitted, cfg)
    if top is None:  # the metric is undefined on every origin for all: the first fitted one
        return sel
    sel.top = top
    sel.best, sel.note = _choose(trials, fitted, origins, cfg)
    return sel


def _choose(trials: list[Trial], fitted: list[int], origins, cfg: ModelConfig) -> tuple[int | None, str]:
    """With ``training.prefer_more_data`` (default) the widest window unless a narrower choice
    beats it clearly over several batches (``backtest_compare.prefer_widest``), with the note
    saying which and why; else the best mean (``backtest_compare.leader``)."""
    top = bc.leader(origins, fitted, cfg)
    if not cfg.training.prefer_more_data or top is None:
        return top, ""
    best, c = bc.prefer_widest(origins, fitted, {i: trials[i].train_rows for i in fitted}, cfg)
    if best is None:
        return top, ""
    g, m = cfg.gate, cfg.gate_metric
    if c is not None:
        wide = max(fitted, key=lambda i: trials[i].train_rows)
        why = f"a lead above gate.max_regression {g.max_regression}" if c.delta > g.max_regression else "shown better"
        return best, (
            f"{trials[best].name} ({trials[best].train_rows} rows) preferred to the widest window "
            f"{trials[wide].window.label} ({trials[wide].train_rows} rows): {m} {c.delta:+.4f}, "
            f"{g.confidence:.0%} CI [{c.low:+.4f}, {c.high:+.4f}] over {', '.join(c.origins)}, the batches where "
            f"their fits differ: {why} (training.prefer_more_data)"
        )
    if best == top:
        return best, ""
    c = bc.compare(bc.differing(origins, top, best), top, best, cfg)
    lead = (
        f"{m} {c.delta:+.4f}, {g.confidence:.0%} CI [{c.low:+.4f}, {c.high:+.4f}] over {', '.join(c.origins)}"
        if c is not None
        else "no batch where their fits differ"
    )
    return best, (
        f"{trials[best].name} ({trials[best].train_rows} rows) kept over the backtest's best "
        f"{trials[top].name} ({trials[top].train_rows} rows): its lead ({lead}) is neither above "
        f"gate.max_regression {g.max_regression} nor shown (an interval above 0) on "
        f"{min(2, cfg.training.backtest_batches)}+ batches where their fits differ (training.prefer_more_data)"
    )


def _figure(t: Trial, metric: str) -> str:
    if t.skipped:
        return f"skipped ({t.skipped})"
    v = t.metrics.get(metric)
    return (
        f"{metric} {v:.4f} on the holdout (trained on {t.train_rows} rows in {t.fit_seconds:.1f} s); backtest "
        + ", ".join(f"{b} {x:.4f}" for b, x in t.backtest.items())
        if v is not None
        else f"{metric} undefined on the holdout"
    )


def table(sel: Selection) -> pd.DataFrame:
    """One row per candidate, for the UI's comparison table."""
    rows = []
    for i, t in enumerate(sel.trials):
        v = t.metrics.get(sel.metric)
        rows.append(
            {
                "winner": i == sel.best,
                "window": t.window.label,
                "estimator": t.estimator.label,
                "params": ", ".join(f"{k}={v}" for k, v in sorted(t.estimator.params.items())) or "defaults",
                "search": t.search,
                "train_rows": t.train_rows,
                sel.metric: None if v is None else float(v),
                **{f"backtest {b}": t.backtest.get(b) for b in sel.origins},
                "backtest_mean": None if not np.isfinite(t.backtest_mean) else t.backtest_mean,
                "backtest_low": None if not np.isfinite(t.backtest_interval[0]) else t.backtest_interval[0],
                "backtest_high": None if not np.isfinite(t.backtest_interval[1]) else t.backtest_interval[1],
                "fit_seconds": round(t.fit_seconds + t.backtest_seconds, 2),
                "note": t.skipped or "",
            }
        )
    return pd.DataFrame(rows)
