"""The champion's performance on a batch: measured when it carries labels, estimated when not.

Measured: the gate metric on the batch with a bootstrap interval, against the champion's
holdout figure and its own interval (``measure``).

Estimated: confidence-based performance estimation (CBPE). The champion's probabilities are
calibrated on its reference data (its holdout: rows it never trained on) with scikit-learn's
``IsotonicRegression``, one class against the rest. On an unlabelled batch each row's
calibrated probability is its expected label, which gives the expected confusion matrix and
the expected ROC AUC / accuracy / F1 / log loss without a single label. The interval is the
spread of the metric the batch would realise if its labels were drawn from those
probabilities (simulated, ``n_sim`` draws). This holds while the concept holds (P(y | x) as
on the reference): it sees a drop caused by covariate shift (rows moving to where the model
is less sure) and is blind to a changed concept, which only labels show. Regression has no
such estimate: the answer is an honest "no estimate".

Concept check (``check_calibration``): on a labelled batch the same calibration says how many
positives each score bin should hold. When the labels no longer follow it (a Hosmer-Lemeshow
chi-square whose variance includes the reference bins' own uncertainty, so a fixed error of
the calibration is not read as a change) P(y | x) moved: the concept changed, even where the
ROC AUC barely moves (a threshold that shifts keeps the ranking). The retrain policy reads it
(``retrain.concept_alpha``); a covariate shift with the concept unchanged keeps it calibrated.

The isotonic steps travel as plain numbers in the version's serving metadata (key
``cbpe``): no pickle, no sklearn needed to read them back (``np.interp``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from statistics import NormalDist

import numpy as np

from ml_platform.core.batch_record import BatchRecord
from ml_platform.core.calibration import Calibration, check_calibration
from ml_platform.core.metric_kinds import HIGHER_IS_BETTER

ESTIMABLE = {"roc_auc", "accuracy", "f1", "log_loss"}


# ---- expected metrics ----------------------------------------------------------------------


def expected_binary_auc(p: np.ndarray, score: np.ndarray) -> float:
    """E[TP-pairs] / (E[positives] * E[negatives]) with rows ranked by the model's ``score`` and
    each row a positive with probability ``p`` (ties count one half, as in ROC AUC)."""
    _, inv = np.unique(score, return_inverse=True)
    pos = np.bincount(inv, weights=p)
    neg = np.bincount(inv, weights=1 - p)
    below = np.cumsum(neg) - neg
    denom = pos.sum() * neg.sum()
    return float(np.sum(pos * (below + 0.5 * neg)) / denom) if denom > 0 else float("nan")


def expected_metric(metric: str, p: np.ndarray, q: np.ndarray) -> float:
    """``metric`` expected from calibrated probabilities ``p`` and raw outputs ``q`` (both [N, classes])."""
    k = q.shape[1]
    pred = q.argmax(axis=1)
    if metric == "roc_auc":
        if k == 2:
            return expected_binary_auc(p[:, 1], q[:, 1])
        return float(np.mean([expected_binary_auc(p[:, c], q[:, c]) for c in range(k)]))
    if metric == "accuracy":
        return float(np.mean(p[np.arange(len(p)), pred]))
    if metric == "f1":

        def f1(c):
            hit = pred == c
            tp, fp, fn = p[hit, c].sum(), (1 - p[hit, c]).sum(), p[~hit, c].sum()
            return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn > 0 else 0.0

        return float(f1(1) if k == 2 else np.mean([f1(c) for c in range(k)]))
    if metric == "log_loss":
        return float(-np.mean(np.sum(p * np.log(np.clip(q, 1e-7, 1)), axis=1)))
    raise ValueError(f"no CBPE estimate for {metric}")


def _simulated(metric: str, p: np.ndarray, q: np.ndarray, classes, n_sim: int, seed: int) -> np.ndarray:
    """The metric realised under ``n_sim`` label draws from ``p``."""
    rng = np.random.default_rng(seed)
    n, k = p.shape
    out = np.full(n_sim, np.nan)
    if metric == "roc_auc" and k == 2:
        from scipy.stats import rankdata

        ranks = rankdata(q[:, 1])
        block = max(1, min(n_sim, 4_000_000 // max(n, 1)))
        for start in range(0, n_sim, block):
            b = min(block, n_sim - start)
            y = rng.random((b, n)) < p[:, 1]
            n1 = y.sum(axis=1).astype(np.float64)
            n0 = n - n1
            with np.errstate(invalid="ignore", divide="ignore"):
                out[start : start + b] = (y @ ranks - n1 * (n1 + 1) / 2) / (n1 * n0)
        return out[np.isfinite(out)]
    from ml_platform.core.training import metric_function  # sklearn: only where a metric is computed

    fn = metric_function(metric, "classification", classes)
    cls = np.asarray(classes)
    cum = np.cumsum(p, axis=1)
    for i in range(n_sim):
        idx = np.minimum((rng.random(n)[:, None] > cum).sum(axis=1), k - 1)
        try:
            out[i] = fn(cls[idx], q)
        except ValueError:
            pass
    return out[np.isfinite(out)]


# ---- per-batch figures ---------------------------------------------------------------------


@dataclass
class Performance:
    """The champion's gate metric on one batch (measured or estimated), against its holdout."""

    method: str  # measured | cbpe | none
    metric: str
    rows: int = 0
    value: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    baseline: float | None = None  # the champion's holdout figure
    baseline_ci: list = field(default_factory=list)
    drop: float | None = None  # baseline - value, sign-adjusted: > 0 = worse
    significant: bool = False  # the whole interval is worse than the holdout's interval
    champion_version: int | None = None
    reason: str = ""  # why there is no figure (method "none")
    concept: dict | None = None  # measured only: ``ConceptCheck.to_dict`` (labels vs calibration)
    challenger: dict | None = None  # measured only: ``challenger.ChallengerCheck.to_dict`` (would a refit pay)

    def to_dict(self) -> dict:
        return {k: (round(v, 5) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def _z(alpha: float) -> float:
    return NormalDist().inv_cdf(1 - alpha / 2)


def _se(lo: float | None, hi: float | None, z: float) -> float:
    """Standard error read back from a (1 - alpha) interval."""
    return 0.0 if lo is None or hi is None else max(float(hi) - float(lo), 0.0) / (2 * z)


def _judge(perf: Performance, higher: bool) -> Performance:
    lo, hi = perf.baseline_ci or [perf.baseline, perf.baseline]
    perf.drop = (perf.baseline - perf.value) if higher else (perf.value - perf.baseline)
    # Both figures are estimates and every labelled batch is judged against the same holdout:
    # a drop counts only when the batch's interval clears the holdout's own interval. A z test
    # on their combined error would retrain stable streams far too often, since each batch is
    # looked at several times against one holdout (benchmarks/README.md has the simulation).
    perf.significant = bool(perf.ci_high < lo if higher else perf.ci_low > hi)
    return perf


def pooled(perfs: list[dict], *, alpha: float = 0.05) -> Performance | None:
    """The champion's figure over several batches at once (``Performance.to_dict`` records of one
    champion version against one holdout): the inverse-variance mean of the batch figures with
    its (1 - alpha) interval, judged like one batch. A drop too small for one batch's rows shows
    on two or three."""
    if len(perfs) < 2 or len({p.get("champion_version") for p in perfs}) != 1:
        return None
    z = _z(alpha)
    ses = np.array([_se(p.get("ci_low"), p.get("ci_high"), z) for p in perfs])
    values = np.array([p.get("value") if p.get("value") is not None else np.nan for p in perfs], dtype=float)
    if not (np.isfinite(ses).all() and (ses > 0).all() and np.isfinite(values).all()):
        return None
    w = 1 / ses**2
    value = float(np.sum(w * values) / w.sum())
    se = float(1 / np.sqrt(w.sum()))
    newest = perfs[-1]
    perf = Performance(
        newest["method"],
        newest["metric"],
        int(sum(p.get("rows") or 0 for p in perfs)),
        value,
        value - z * se,
        value + z * se,
        newest["baseline"],
        list(newest.get("baseline_ci") or []),
        champion_version=newest.get("champion_version"),
    )
    return _judge(perf, HIGHER_IS_BETTER[newest["metric"]])


def _baseline(meta: dict, metric: str) -> tuple[float | None, list]:
    base = (meta.get("metrics") or {}).get(metric)
    ci = (meta.get("metrics_ci") or {}).get(metric) or ([base, base] if base is not None else [])
    return (None if base is None else float(base)), [float(v) for v in ci]


def measure(
    y,
    outputs: np.ndarray,
    meta: dict,
    metric: str,
    task: str,
    *,
    alpha: float = 0.05,
    n_boot: int = 200,
    seed: int = 0,
    version: int | None = None,
    concept_alpha: float = 0.001,
) -> Performance:
    """Measured ``metric`` of the champion (``meta``: its serving metadata) on a labelled batch,
    with the concept check (``check_calibration`` at ``concept_alpha``) for a calibrated classifier."""
    from ml_platform.core.metric_drop import bootstrap_metric_drop

    base, base_ci = _baseline(meta, metric)
    if base is None:
        return Performance("none", metric, len(y), reason=f"champion has no holdout {metric}", champion_version=version)
    classes = meta.get("classes")
    weighted = None
    if task == "classification" and metric == "roc_auc" and len(classes or []) == 2 and np.isfinite(outputs).all():
        # all resamples at once; the same values to the last bit (integer counts, ties one half)
        from ml_platform.core.bootstrap import weighted_metric

        weighted = weighted_metric(metric, task, y, outputs, classes)
    res = bootstrap_metric_drop(
        y,
        outputs,
        metric=_metric_function(metric, task, classes),
        weighted=weighted,
        baseline=base,
        higher_is_better=HIGHER_IS_BETTER[metric],
        alpha=alpha,
        n_boot=n_boot,
        seed=seed,
    )
    perf = Performance(
        "measured",
        metric,
        int(len(y)),
        res["value"],
        res["ci_low"],
        res["ci_high"],
        base,
        base_ci,
        champion_version=version,
    )
    if task == "classification":
        check = check_calibration(y, outputs, Calibration.from_dict(meta.get("cbpe")), alpha=concept_alpha)
        perf.concept = check.to_dict() if check is not None else None
    return _judge(perf, HIGHER_IS_BETTER[metric])


def estimate(
    outputs: np.ndarray | None,
    meta: dict,
    metric: str,
    task: str,
    *,
    alpha: float = 0.05,
    n_sim: int = 200,
    seed: int = 0,
    version: int | None = None,
) -> Performance:
    """CBPE estimate of ``metric`` on an unlabelled batch from the champion's ``outputs``
    (probabilities [N, classes]); method "none" with the reason when it cannot be estimated."""

    def none(why: str) -> Performance:
        return Performance("none", metric, 0 if outputs is None else len(outputs), reason=why, champion_version=version)

    if task != "classification":
        return none("regression: no label-free estimate of the error (labels decide)")
    if metric not in ESTIMABLE:
        return none(f"{metric} cannot be estimated without labels")
    cal = Calibration.from_dict(meta.get("cbpe"))
    if cal is None:
        return none(
            f"champion v{version} carries no calibration (trained before CBPE, or its holdout "
            "was too small or held one class)"
        )
    base, base_ci = _baseline(meta, metric)
    if base is None:
        return none(f"champion v{version} has no holdout {metric}")
    q = np.asarray(outputs, dtype=np.float64)
    if len(q) == 0 or not np.isfinite(q).all():
        return none("no finite champion outputs to estimate from")
    p = cal.probabilities(q)
    value = expected_metric(metric, p, q)
    sims = _simulated(metric, p, q, cal.classes, n_sim, seed)
    if not np.isfinite(value) or sims.size == 0:
        return none(f"{metric} is undefined on this batch (a single expected class)")
    lo, hi = np.quantile(sims, [alpha / 2, 1 - alpha / 2])
    perf = Performance(
        "cbpe",
        metric,
        int(len(q)),
        float(value),
        float(min(lo, value)),
        float(max(hi, value)),
        base,
        base_ci,
        champion_version=version,
    )
    return _judge(perf, HIGHER_IS_BETTER[metric])


def binary_outputs(score: np.ndarray) -> np.ndarray:
    """[1 - s, s] from a binary model's positive-class score (the live sample keeps the score)."""
    s = np.asarray(score, dtype=np.float64)
    return np.column_stack([1 - s, s])


# ---- how well the estimate tracked the realised metric ---------------------------------------


@dataclass
class Tracking:
    rows: list[dict]  # per labelled batch: partition, estimated, realised, error, inside
    mean_abs_error: float | None
    covered: float | None  # share of batches whose realised value fell in the estimate's interval

    def to_dict(self) -> dict:
        return asdict(self)


def tracking(records: list[BatchRecord]) -> Tracking:
    """Estimated vs realised on every batch that has both (``BatchRecord``s: ``estimate`` and
    ``performance``), in arrival order."""
    rows = []
    for r in records:
        e, m = r.estimate_figure, r.performance_figure
        if e.get("value") is None or m.get("value") is None:
            continue
        rows.append(
            {
                "partition": r.partition,
                "metric": m.get("metric"),
                "estimated": e["value"],
                "estimate_ci": [e.get("ci_low"), e.get("ci_high")],
                "realised": m["value"],
                "error": round(e["value"] - m["value"], 5),
                "inside": bool(e.get("ci_low") is not None and e["ci_low"] <= m["value"] <= e["ci_high"]),
            }
        )
    if not rows:
        return Tracking([], None, None)
    return Tracking(
        rows,
        round(float(np.mean([abs(r["error"]) for r in rows])), 5),
        round(float(np.mean([r["inside"] for r in rows])), 3),
    )


def _metric_function(metric: str, task: str, classes):
    from ml_platform.core.training import metric_function  # sklearn: only where a metric is computed

    return metric_function(metric, task, classes)
