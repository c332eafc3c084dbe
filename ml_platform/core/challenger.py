"""Would retraining pay? The challenger check on a labelled batch (classification).

A model refitted on the labelled batches that arrived before this one (the training set's
batches: all, or the newest ``training.window_batches``; the first configured estimator)
scores the batch next to the champion. Neither trained on its rows, so the paired bootstrap
interval of (challenger - champion) on them measures what a retrain would have bought on
fresh data. When the interval's lower end reaches ``retrain.challenger_min_gain``
(``retrain.challenger_confidence``), retraining is measured to pay, and the policy retrains
(trigger "challenger") even though the champion's own figure held: a relationship that
moves a little every month never shows a significant drop, yet a refit gains. A stream whose
concept holds gains only the learning curve's few thousandths, under the bar (the figures of
both are in benchmarks/README.md).

The retrain itself runs the usual candidate selection and gate; this fit only decides.

In a run of several files (a backlog) every file is scored by one challenger, fitted on the
batches before the run's first file (``prior_records``): each file is still unseen by it, and a
backlog of N files costs N/25 fits instead of N fits on a training set that grows with the
history (up to ``MAX_TRAIN_ROWS``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from ml_platform.core import compute, training
from ml_platform.core.frames import model_inputs
from ml_platform.settings import ModelConfig

MIN_TRAIN_ROWS = 50
MAX_TRAIN_ROWS = 200_000  # the newest rows before the batch: bounds the ingest run's fit and memory
_last_fit: tuple = (None, None)  # (key, fitted pipeline): the fit the files of one run share


@dataclass
class ChallengerCheck:
    metric: str
    rows: int  # the batch's rows both models scored
    train_rows: int  # rows the challenger learnt from
    train_batches: int
    challenger: float  # its metric on the batch
    champion: float
    delta: float  # challenger - champion, sign-adjusted: > 0 = the challenger is better
    ci_low: float
    ci_high: float
    confidence: float
    min_gain: float
    pays: bool  # ci_low >= min_gain

    def to_dict(self) -> dict:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> ChallengerCheck:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__})

    def summary(self) -> str:
        return (
            f"a model refitted on {self.train_batches} labelled batch(es) that arrived before it "
            f"({self.train_rows} rows) scores {self.metric} {self.challenger:.4f} on its {self.rows} rows "
            f"against the champion's {self.champion:.4f}: {self.delta:+.4f}, {self.confidence:.0%} CI "
            f"[{self.ci_low:+.4f}, {self.ci_high:+.4f}]"
            # the interval's lower end is what is compared ("+0.0106 ...: below 0.005" read as if
            # the gain were below it), against the bar this check used
            + (
                f", at least retrain.challenger_min_gain {self.min_gain}"
                if self.pays
                else f": lower end {self.ci_low:+.4f} below retrain.challenger_min_gain {self.min_gain}"
            )
        )


def prior_records(records: list, partition: str, run_partitions, window_batches: int | None) -> list:
    """The batch records the challenger of ``partition`` learns from: the trainable batches that
    arrived before the first of ``run_partitions`` (the files of its run, in any order; itself
    alone in a one-file run), the newest ``window_batches`` of them when set."""
    keys = [r.partition for r in records]
    cut = min((keys.index(p) for p in {*run_partitions, partition} if p in keys), default=len(keys))
    prior = [r for r in records[:cut] if r.trainable and r.validated_path]
    return prior[-window_batches:] if window_batches else prior


def _fit(prior: pd.DataFrame, cfg: ModelConfig, key: tuple | None):
    global _last_fit
    if key is not None and _last_fit[0] == key:
        return _last_fit[1]
    pipe = training.fit(prior, cfg.model_copy(update={"estimator": cfg.estimator_list[0]}))
    _last_fit = (key, pipe) if key is not None else (None, None)
    return pipe


def check(
    prior: pd.DataFrame,
    batch: pd.DataFrame,
    champion_outputs: np.ndarray,
    champion_classes,
    cfg: ModelConfig,
    *,
    train_batches: int,
    resamples: int = 500,
    seed: int = 0,
    fit_key: tuple | None = None,
) -> ChallengerCheck | None:
    """The challenger check of ``batch`` (labelled) against the champion's ``champion_outputs`` on
    it; ``prior``: the labelled rows before it. None when it does not apply (regression, the check
    turned off, too few prior rows, a single class). ``fit_key``: names ``prior`` (its batches and
    the model's configuration); the next check with the same key reuses the fit."""
    from ml_platform.core.bootstrap import paired_bootstrap

    rc = cfg.retrain
    if cfg.task != "classification" or rc.challenger_min_gain is None or len(prior) < MIN_TRAIN_ROWS:
        return None
    if prior[cfg.target].nunique() < 2 or batch[cfg.target].nunique() < 2:
        return None
    pipe = _fit(prior, cfg, fit_key)
    y = training.target_values(batch, cfg)
    iv = paired_bootstrap(
        cfg.gate_metric,
        cfg.task,
        y,
        compute.outputs(pipe, model_inputs(batch, cfg), "classification"),
        champion_outputs,
        candidate_classes=pipe.classes_,
        champion_classes=champion_classes,
        resamples=resamples,
        confidence=rc.challenger_confidence,
        seed=seed,
    )
    if not np.isfinite(iv.ci_low):
        return None
    return ChallengerCheck(
        cfg.gate_metric,
        int(len(batch)),
        int(len(prior)),
        int(train_batches),
        float(iv.candidate),
        float(iv.champion),
        float(iv.delta),
        float(iv.ci_low),
        float(iv.ci_high),
        float(iv.confidence),
        float(rc.challenger_min_gain),
        bool(iv.ci_low >= rc.challenger_min_gain),
    )
