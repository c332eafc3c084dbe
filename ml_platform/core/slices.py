"""Slices of the comparison set for the per-slice gate: each value of a categorical feature, or
the bins of a numeric one, with the gate metric of both models on each slice."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ml_platform.core import bootstrap
from ml_platform.core.frames import MISSING, category_array, numeric_array
from ml_platform.core.metric_kinds import HIGHER_IS_BETTER


def _num(x: float) -> str:
    return f"{x:g}"


def slice_masks(
    df: pd.DataFrame, feature: str, kind: str, bins: list[float] | None = None
) -> list[tuple[str, np.ndarray]]:
    """(label, row mask) per slice of ``feature``: categorical -> one per value present (typed like
    the model sees it: 3, 3.0 and "3" are one value, missing is ``MISSING``); numeric -> the
    intervals between ``bins`` (left-closed), plus "missing" when there are NaNs."""
    if kind == "categorical":
        values = category_array(df[feature]).astype(str)
        uniq = sorted(set(values), key=lambda v: (v == MISSING, v))
        return [(f"{feature}={'missing' if v == MISSING else v}", values == v) for v in uniq]
    x = numeric_array(df[feature]).astype(np.float64)
    edges = list(bins or [])
    out = []
    for i in range(len(edges) + 1):
        lo, hi = (edges[i - 1] if i else -np.inf), (edges[i] if i < len(edges) else np.inf)
        mask = (x >= lo) & (x < hi)
        label = (
            f"{feature} < {_num(hi)}"
            if i == 0
            else f"{feature} >= {_num(lo)}"
            if i == len(edges)
            else f"{feature} in [{_num(lo)}, {_num(hi)})"
        )
        out.append((label, mask))
    missing = np.isnan(x)
    if missing.any():
        out.append((f"{feature} missing", missing))
    return out


@dataclass
class SliceResult:
    """One slice's figures and verdict. ``delta`` is sign-adjusted (> 0: candidate better)."""

    slice: str
    rows: int
    candidate: float | None
    champion: float | None
    delta: float | None
    threshold: float | None
    max_regression: float | None
    judged: bool  # False: too few rows, or the metric is undefined on it
    passed: bool
    note: str


def judge_slice(
    label: str,
    mask: np.ndarray,
    *,
    metric: str,
    task: str,
    y,
    candidate_outputs,
    candidate_classes,
    champion_outputs=None,
    champion_classes=None,
    threshold: float | None,
    max_regression: float | None,
    min_rows: int,
) -> SliceResult:
    """The gate metric of both models on one slice against its floor (ceiling for error metrics)
    and the allowed regression against the champion. A slice smaller than ``min_rows`` or where
    the metric is undefined (one class) is reported, not judged."""
    rows = int(mask.sum())
    base = dict(slice=label, rows=rows, threshold=threshold, max_regression=max_regression)
    if rows < min_rows:
        return SliceResult(
            **base,
            candidate=None,
            champion=None,
            delta=None,
            judged=False,
            passed=True,
            note=f"not judged: {rows} rows < min_rows {min_rows}",
        )
    ys = np.asarray(y)[mask]
    ones = np.ones((rows, 1), dtype=np.int32)

    def value(outputs, classes) -> float:
        return float(bootstrap.weighted_metric(metric, task, ys, np.asarray(outputs)[mask], classes)(ones)[0])

    cand = value(candidate_outputs, candidate_classes)
    champ = None if champion_outputs is None else value(champion_outputs, champion_classes)
    if not np.isfinite(cand) or (champ is not None and not np.isfinite(champ)):
        return SliceResult(
            **base,
            candidate=None,
            champion=None,
            delta=None,
            judged=False,
            passed=True,
            note=f"not judged: {metric} undefined on this slice (one class?)",
        )
    higher = HIGHER_IS_BETTER[metric]
    problems = []
    if threshold is not None and (cand < threshold if higher else cand > threshold):
        problems.append(
            f"{metric} {cand:.4f} {'<' if higher else '>'} {'floor' if higher else 'ceiling'} {threshold:g}"
        )
    delta = None
    if champ is not None:
        delta = (cand - champ) if higher else (champ - cand)
        if max_regression is not None and delta < -max_regression:
            problems.append(
                f"{metric} {cand:.4f} vs champion {champ:.4f}: {-delta:.4f} worse (allowed {max_regression:g})"
            )
    note = (
        "; ".join(problems)
        if problems
        else (f"{metric} {cand:.4f}" + (f" vs champion {champ:.4f}" if champ is not None else ""))
    )
    return SliceResult(**base, candidate=cand, champion=champ, delta=delta, judged=True, passed=not problems, note=note)
