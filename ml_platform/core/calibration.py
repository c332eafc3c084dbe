"""The champion's calibration (isotonic, one class against the rest, fitted on its holdout) and
the concept check on it: do a labelled batch's labels still follow the calibrated
probabilities? ``core/estimate.py`` says how both are used."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

MIN_REFERENCE_ROWS = 50


# ---- calibration on the reference ----------------------------------------------------------


@dataclass
class Calibration:
    """Isotonic steps per calibrated column: binary -> one (class 1), multiclass -> one per class."""

    classes: list
    x: list[list[float]]
    y: list[list[float]]
    reference_rows: int
    counts: list[list[int]] | None = None  # reference rows behind each step (0 for the anchors)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> Calibration | None:
        if not d:
            return None
        return cls(
            classes=list(d["classes"]),
            x=d["x"],
            y=d["y"],
            reference_rows=int(d["reference_rows"]),
            counts=d.get("counts"),
        )

    def bins(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(score, calibrated rate, reference rows) of column ``k``'s reference bins, anchors left
        out. Without recorded counts (calibrations written before them) the quantile bins are
        taken as equal."""
        x, y = np.asarray(self.x[k], dtype=float), np.asarray(self.y[k], dtype=float)
        if self.counts is not None:
            n = np.asarray(self.counts[k], dtype=float)
        else:  # the anchors are the points (0, 0) and (1, 1)
            anchor = ((x == 0) & (y == 0)) | ((x == 1) & (y == 1))
            n = np.where(anchor, 0.0, self.reference_rows / max(int((~anchor).sum()), 1))
        keep = n > 0
        return x[keep], y[keep], n[keep]

    def probabilities(self, outputs: np.ndarray) -> np.ndarray:
        """Calibrated class probabilities (rows sum to 1) for the model's raw ``outputs`` [N, classes]."""
        q = np.asarray(outputs, dtype=np.float64)
        if len(self.classes) == 2:
            p1 = np.interp(q[:, 1], self.x[0], self.y[0])
            return np.column_stack([1 - p1, p1])
        p = np.column_stack([np.interp(q[:, k], self.x[k], self.y[k]) for k in range(len(self.classes))])
        s = p.sum(axis=1, keepdims=True)
        # all-zero rows (every class says "never"): fall back to the raw probabilities
        return np.where(s > 0, p / np.where(s > 0, s, 1), q)


def calibration_bins(rows: int) -> int:
    """Quantile bins of the reference: ~200 rows each, 5 to 20. Raw isotonic steps on every row
    overfit the reference and make the expected AUC optimistic (benchmarks/README.md)."""
    return int(min(20, max(5, rows // 200)))


def fit_calibration(y, outputs: np.ndarray, classes) -> Calibration | None:
    """Isotonic calibration of ``outputs`` (probabilities [N, classes]) on labels ``y``, fitted on
    quantile-bin means of the reference and interpolated linearly between them (anchored at 0 and 1);
    None when the reference is too small or holds a single class."""
    from sklearn.isotonic import IsotonicRegression  # the monitoring readers need numpy only

    y = np.asarray(y)
    q = np.asarray(outputs, dtype=np.float64)
    classes = list(np.asarray(classes).tolist())
    if len(y) < MIN_REFERENCE_ROWS or len(np.unique(y)) < 2:
        return None
    cols = [1] if len(classes) == 2 else list(range(len(classes)))
    nb = calibration_bins(len(y))
    xs, ys, ns = [], [], []
    for k in cols:
        s, hit = q[:, k], (y == classes[k]).astype(np.float64)
        edges = np.unique(np.quantile(s, np.linspace(0, 1, nb + 1)))
        idx = np.clip(np.searchsorted(edges, s, side="right") - 1, 0, max(len(edges) - 2, 0))
        cnt = np.bincount(idx)
        keep = cnt > 0
        xm = (np.bincount(idx, s) / np.maximum(cnt, 1))[keep]
        ym = (np.bincount(idx, hit) / np.maximum(cnt, 1))[keep]
        iso = IsotonicRegression(y_min=0.0, y_max=1.0).fit(xm, ym, sample_weight=cnt[keep])
        fx, fy = np.r_[0.0, xm, 1.0], np.r_[0.0, iso.predict(xm), 1.0]
        fn = np.r_[0, cnt[keep], 0]
        if xm[0] <= 0:  # a bin of rows scored exactly 0 keeps its own rate, not the anchor's
            fx, fy, fn = fx[1:], fy[1:], fn[1:]
        fx, first = np.unique(fx, return_index=True)  # np.interp needs increasing x
        xs.append([float(v) for v in fx])
        ys.append([float(v) for v in fy[first]])
        ns.append([int(v) for v in fn[first]])
    return Calibration(classes=classes, x=xs, y=ys, reference_rows=int(len(y)), counts=ns)


# ---- concept check: do the labels still follow the calibration? ---------------------------


@dataclass
class ConceptCheck:
    """The champion's calibrated probabilities against a labelled batch, per reference score bin
    (``bins``: score, rows, expected and observed share of the class, z), and whether they
    disagree beyond chance at level ``alpha`` (``significant``: the concept moved)."""

    p_value: float
    statistic: float
    dof: int
    rows: int
    alpha: float
    significant: bool
    cls: str  # the class column judged (binary: the positive class; else the worst)
    expected_rate: float  # its share the calibration expects on the batch
    observed_rate: float  # its share in the labels
    bins: list[dict]

    def to_dict(self) -> dict:
        d = asdict(self)
        # p-values and levels keep 3 significant figures (1e-20 is not 0); rates 6 decimals
        return {
            k: (float(f"{v:.3g}") if k in ("p_value", "alpha") else round(v, 6) if isinstance(v, float) else v)
            for k, v in d.items()
        }

    @property
    def worst(self) -> dict:
        return max(self.bins, key=lambda b: abs(b["z"]))

    def summary(self) -> str:
        w = self.worst
        return (
            f"labels no longer follow the champion's calibrated probabilities (p = {self.p_value:.1e}, "
            f"chi2 {self.statistic:.1f} on {self.dof} score bins, {self.rows} rows): {self.cls!s} share "
            f"{self.observed_rate:.3f} against {self.expected_rate:.3f} expected; worst bin scores "
            f"~{w['score']:.2f}: {w['observed']:.3f} observed, {w['expected']:.3f} expected, {w['rows']} rows"
        )


def _column_check(hit: np.ndarray, q: np.ndarray, cal: Calibration, k: int):
    """Hosmer-Lemeshow chi-square of one calibrated column on the reference bins. Each bin's
    variance adds the reference's own uncertainty about its rate (n_batch^2 r(1-r) / n_ref), so a
    large batch judges the concept, not the finite reference; the price: a change of a bin's
    rate much below sqrt(r(1-r) / n_ref) (~0.03 for 200-row bins) is never significant.
    Expected rates come from the bins alone, flat beyond the outer ones: CBPE's anchors at
    scores 0 and 1 would expect no positive among rows scored exactly 0."""
    from scipy.stats import chi2

    xs, rate, nref = cal.bins(k)
    if len(xs) == 0:
        return None
    p = np.interp(q, xs, rate)
    b = np.searchsorted((xs[1:] + xs[:-1]) / 2, q)  # the nearest reference bin by score
    nb = len(xs)
    n = np.bincount(b, minlength=nb).astype(float)
    obs, exp = np.bincount(b, hit, nb), np.bincount(b, p, nb)
    r = (rate * nref + 0.5) / (nref + 1)  # a bin at rate 0 or 1 is still uncertain
    var = np.bincount(b, p * (1 - p), nb) + n**2 * r * (1 - r) / nref
    used = (n > 0) & (var > 0)
    z = np.zeros(nb)
    z[used] = (obs - exp)[used] / np.sqrt(var[used])
    stat, dof = float(np.sum(z[used] ** 2)), int(used.sum())
    bins = [
        {
            "score": round(float(xs[i]), 4),
            "rows": int(n[i]),
            "expected": round(float(exp[i] / n[i]), 4),
            "observed": round(float(obs[i] / n[i]), 4),
            "z": round(float(z[i]), 2),
        }
        for i in np.flatnonzero(used)
    ]
    return float(chi2.sf(stat, dof)), stat, dof, float(exp.sum() / len(q)), float(obs.sum() / len(q)), bins


def check_calibration(
    y, outputs: np.ndarray, cal: Calibration | None, *, alpha: float = 0.001, min_rows: int = MIN_REFERENCE_ROWS
) -> ConceptCheck | None:
    """Do ``y`` (a labelled batch) follow the champion's calibration ``cal`` of its ``outputs``?
    None without a calibration or with too few rows. Multiclass: every class against the rest,
    the worst reported, its p-value times the classes (Bonferroni)."""
    y = np.asarray(y)
    q = np.asarray(outputs, dtype=np.float64)
    if cal is None or len(y) < min_rows or q.ndim != 2 or not np.isfinite(q).all():
        return None
    cols = [1] if len(cal.classes) == 2 else list(range(len(cal.classes)))
    best = None
    for i, k in enumerate(cols):
        got = _column_check((y == cal.classes[k]).astype(float), q[:, k], cal, i)
        if got is not None and (best is None or got[0] < best[1][0]):
            best = (k, got)
    if best is None:
        return None
    k, (pv, stat, dof, expected, observed, bins) = best
    pv = min(1.0, pv * len(cols))
    return ConceptCheck(
        pv, stat, dof, int(len(y)), alpha, bool(pv < alpha), str(cal.classes[k]), expected, observed, bins
    )
