"""The evaluation gate as plain policy functions: figures in, verdict + readable reason out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ml_platform.core.bootstrap import PairedInterval, paired_bootstrap, weighted_metric
from ml_platform.core.metric_kinds import HIGHER_IS_BETTER
from ml_platform.core.slices import SliceResult

if TYPE_CHECKING:
    from ml_platform.settings import ModelConfig


@dataclass
class Verdict:
    check: str
    passed: bool
    reason: str
    figures: dict = field(default_factory=dict)


def verdict_line(check: str, passed: bool, reason: str) -> str:
    """One check's verdict as every console shows it (`run`'s summary, the run's log under `up`)."""
    return f"gate {check}: {'PASS' if passed else 'FAIL'} - {reason}"


def min_metric(metric: str, value: float | None, threshold: float | None) -> Verdict:
    higher = HIGHER_IS_BETTER[metric]
    figures = {"metric": metric, "value": value, "threshold": threshold}
    if value is None:
        return Verdict("min_metric", False, f"{metric} could not be computed on the holdout", figures)
    if threshold is None:
        return Verdict("min_metric", True, f"{metric} = {value:.4f}; no absolute threshold configured", figures)
    ok = value >= threshold if higher else value <= threshold
    op = (">=" if ok else "<") if higher else ("<=" if ok else ">")
    word = "floor" if higher else "ceiling"
    return Verdict("min_metric", ok, f"{metric} {value:.4f} {op} {word} {threshold:.4f}", figures)


def not_worse_than_champion(
    metric: str, candidate: float | None, champion: float | None, champion_version: int | None, max_regression: float
) -> Verdict:
    figures = {
        "metric": metric,
        "candidate": candidate,
        "champion": champion,
        "champion_version": champion_version,
        "max_regression": max_regression,
    }
    if champion_version is None:
        return Verdict(
            "not_worse_than_champion",
            True,
            "no champion yet: the first model is judged on the absolute threshold alone",
            figures,
        )
    if candidate is None or champion is None:
        return Verdict(
            "not_worse_than_champion",
            False,
            f"{metric} unavailable for candidate or champion v{champion_version}",
            figures,
        )
    higher = HIGHER_IS_BETTER[metric]
    delta = candidate - champion if higher else champion - candidate  # > 0 means better
    figures["delta"] = delta
    ok = delta >= -max_regression
    rel = "better than" if delta >= 0 else "worse than"
    return Verdict(
        "not_worse_than_champion",
        ok,
        f"{metric} {candidate:.4f} vs champion v{champion_version} {champion:.4f} on the same "
        f"holdout: {abs(delta):.4f} {rel} (allowed regression {max_regression})",
        figures,
    )


def too_few_rows(
    champion_version: int | None, *, rows: int, min_rows: int, note: str = "", method: str
) -> Verdict | None:
    """The failing "not enough evidence" verdict when the fair comparison set is too small."""
    if champion_version is None or rows >= min_rows:
        return None
    where = f" ({note})" if note else ""
    return Verdict(
        "not_worse_than_champion",
        False,
        f"not enough evidence: {rows} comparison rows{where} < min_comparison_rows {min_rows}; "
        f"champion v{champion_version} stays",
        {"method": method, "champion_version": champion_version, "rows": rows, "min_rows": min_rows},
    )


def not_worse_by_bootstrap(
    interval: PairedInterval | None,
    champion_version: int | None,
    *,
    max_regression: float,
    min_rows: int,
    rows: int,
    note: str = "",
    strict: bool = False,
) -> Verdict:
    """The paired bootstrap interval of (candidate - champion) on the fair comparison set,
    sign-adjusted so that > 0 is better, against ``-max_regression``:

    - default: refused when the whole interval lies below ``-max_regression`` (the candidate is
      shown worse than allowed); noise alone never refuses a candidate;
    - ``strict`` (non-inferiority): passes only when the whole interval lies above it (the
      candidate is shown within the allowed regression); a wide interval keeps the champion.

    Fewer than ``min_rows`` rows (or no resample where the metric is defined) is not enough
    evidence either way: the check fails and the champion stays."""
    check = "not_worse_than_champion"
    method = "bootstrap_strict" if strict else "bootstrap"
    figures = {
        "method": method,
        "champion_version": champion_version,
        "rows": rows,
        "min_rows": min_rows,
        "max_regression": max_regression,
    }
    if champion_version is None:
        return Verdict(
            check, True, "no champion yet: the first model is judged on the absolute threshold alone", figures
        )
    where = f" ({note})" if note else ""
    short = too_few_rows(champion_version, rows=rows, min_rows=min_rows, note=note, method=method)
    if short is not None or interval is None:
        return short or Verdict(
            check, False, f"not enough evidence: no interval; champion v{champion_version} stays", figures
        )
    figures.update(
        metric=interval.metric,
        candidate=interval.candidate,
        champion=interval.champion,
        delta=interval.delta,
        ci_low=interval.ci_low,
        ci_high=interval.ci_high,
        confidence=interval.confidence,
        resamples=interval.resamples,
    )
    m = interval.metric
    if not np.isfinite(interval.ci_low):
        return Verdict(
            check,
            False,
            f"not enough evidence: {m} undefined on every resample of the {rows} "
            f"comparison rows; champion v{champion_version} stays",
            figures,
        )
    sign = "+" if interval.delta >= 0 else ""
    head = (
        f"{m} {interval.candidate:.4f} vs champion v{champion_version} {interval.champion:.4f}: "
        f"improvement {sign}{interval.delta:.4f}, {interval.confidence:.0%} interval "
        f"[{interval.ci_low:+.4f}, {interval.ci_high:+.4f}] on {rows} rows neither trained on{where}"
    )
    bar = -max_regression
    if strict:
        ok = interval.ci_low >= bar
        tail = (
            f"lower bound >= {bar:g}: shown within the allowed regression"
            if ok
            else f"lower bound < {bar:g}: not shown to be within the allowed regression (strict)"
        )
    else:
        ok = interval.ci_high >= bar
        tail = (
            f"upper bound >= {bar:g}: not shown worse than the allowed regression"
            if ok
            else f"the whole interval is below {bar:g}: worse than the allowed regression"
        )
    return Verdict(check, ok, f"{head}; {tail}", figures)


def judge_against_champion(
    cfg: ModelConfig,
    y,
    candidate_outputs,
    candidate_classes,
    champion_outputs,
    champion_classes,
    champion_version: int | None,
    note: str = "",
) -> Verdict:
    """``not_worse_than_champion`` as configured (``cfg.gate.comparison``) on the rows of ``y``, which
    neither model trained on (``core/comparison.py``): the one decision the gate check and the
    benchmarks share. Outputs: probabilities [N, classes] or predictions [N]."""
    g, metric, rows = cfg.gate, cfg.gate_metric, len(y)
    short = too_few_rows(champion_version, rows=rows, min_rows=g.min_comparison_rows, note=note, method=g.comparison)
    if short is not None:
        return short
    if champion_version is None:
        return not_worse_by_bootstrap(
            None, None, max_regression=g.max_regression, min_rows=g.min_comparison_rows, rows=rows
        )
    if g.comparison == "plain":
        one = np.ones((rows, 1), dtype=np.int32)

        def value(out, classes) -> float:
            return float(weighted_metric(metric, cfg.task, y, out, classes)(one)[0])

        v = not_worse_than_champion(
            metric,
            value(candidate_outputs, candidate_classes),
            value(champion_outputs, champion_classes),
            champion_version,
            g.max_regression,
        )
        v.figures.update(method="plain", rows=rows)
        v.reason += f" ({note})" if note else ""
        return v
    interval = paired_bootstrap(
        metric,
        cfg.task,
        y,
        candidate_outputs,
        champion_outputs,
        candidate_classes=candidate_classes,
        champion_classes=champion_classes,
        resamples=g.resamples,
        confidence=g.confidence,
        seed=cfg.training.seed,
    )
    return not_worse_by_bootstrap(
        interval,
        champion_version,
        max_regression=g.max_regression,
        min_rows=g.min_comparison_rows,
        rows=rows,
        note=note,
        strict=g.comparison == "bootstrap_strict",
    )


def per_slice(results: list[SliceResult], champion_version: int | None, configured: int) -> Verdict:
    """Every judged slice passes its floor and its allowed regression against the champion; the
    reason names the failing slices with their figures (and the ones too small to judge)."""
    failing = [r for r in results if r.judged and not r.passed]
    skipped = [r for r in results if not r.judged]
    judged = [r for r in results if r.judged]
    figures = {
        "slices": len(results),
        "judged": len(judged),
        "failing": len(failing),
        "champion_version": champion_version,
    }
    if not configured:
        return Verdict("per_slice", True, "no slices configured (gate.slices)", figures)
    if failing:
        head = f"{len(failing)} of {len(judged)} judged slices fail: " + "; ".join(
            f"{r.slice} ({r.rows} rows): {r.note}" for r in failing
        )
    else:
        head = f"all {len(judged)} judged slices pass" + (
            "" if champion_version is not None else " (no champion: floors only)"
        )
    if skipped:
        head += (
            f"; {len(skipped)} not judged ("
            + ", ".join(f"{r.slice}: {r.note.removeprefix('not judged: ')}" for r in skipped[:5])
            + (", ..." if len(skipped) > 5 else "")
            + ")"
        )
    return Verdict("per_slice", not failing, head, figures)


DEFAULT_PARITY_RTOL = 1e-4
DEFAULT_PARITY_ATOL_PROBABILITIES = 1e-4


def onnx_parity(
    reference, onnx=None, rows=None, *, task: str | None = None, atol: float | None = None, rtol: float | None = None
) -> Verdict:
    """Do the ONNX outputs equal scikit-learn's on the holdout, up to float32 rounding?

    ``onnx_parity(reference, onnx, task=..., atol=..., rtol=...)`` with the two outputs as
    arrays (probabilities [N, classes] or predictions [N]):

    - classification: probabilities live in [0, 1], so the bar is absolute:
      ``|onnx - sklearn| <= atol`` (``atol`` default 1e-4);
    - regression: ONNX computes in float32, so differences grow with the outputs (about 1e-2
      on targets in the thousands). Each row must satisfy, as ``numpy.isclose`` does,
      ``|onnx - sklearn| <= atol + rtol * |sklearn|`` (``rtol`` default 1e-4). ``atol`` (a
      floor for outputs near zero) defaults to ``rtol`` times the output scale
      (max |sklearn| on the holdout), so it scales with the target instead of dwarfing small
      ones: a fixed 1e-4 would let 10 % errors through on targets around 1e-3.

    float32 keeps ~7 significant digits; the roundings of a tree ensemble or a linear model
    measured here stay below 1e-6 relative, while a split routed the other way or a
    preprocessing mismatch shows up at 1e-3 and above.

    The old form ``onnx_parity(max_abs_diff, tolerance, rows)`` (an absolute bar on a
    precomputed figure) is still accepted.
    """
    if np.ndim(reference) == 0:  # legacy: (max_abs_diff, tolerance, rows)
        max_abs = float(reference)
        tol = DEFAULT_PARITY_ATOL_PROBABILITIES if onnx is None else float(onnx)
        ok = max_abs <= tol
        return Verdict(
            "onnx_parity",
            ok,
            f"max |sklearn - onnx| = {max_abs:.2e} over {rows} holdout rows ({'<=' if ok else '>'} {tol:.0e})",
            {"max_abs_diff": max_abs, "tolerance": tol, "rows": rows},
        )

    ref = np.asarray(reference, dtype=np.float64)
    got = np.asarray(onnx, dtype=np.float64)
    n = int(ref.shape[0]) if ref.ndim else 0
    classification = (task or ("classification" if ref.ndim == 2 else "regression")) == "classification"
    if ref.shape != got.shape:
        return Verdict(
            "onnx_parity",
            False,
            f"ONNX output shape {got.shape} differs from sklearn's {ref.shape}",
            {"rows": n, "reference_shape": str(ref.shape), "onnx_shape": str(got.shape)},
        )
    if n == 0:
        return Verdict("onnx_parity", True, "no holdout rows to compare", {"rows": 0})
    both_nan = np.isnan(ref) & np.isnan(got)
    diff = np.where(both_nan, 0.0, np.abs(ref - got))  # NaN where only one side is NaN
    finite = diff[np.isfinite(diff)]
    max_abs = float(finite.max()) if finite.size else 0.0
    nonzero = np.abs(ref) > 0
    rel = diff[nonzero & np.isfinite(diff)] / np.abs(ref[nonzero & np.isfinite(diff)])
    max_rel = float(rel.max()) if rel.size else 0.0
    figures = {
        "task": "classification" if classification else "regression",
        "rows": n,
        "max_abs_diff": max_abs,
        "max_rel_diff": max_rel,
    }
    if classification:
        a = DEFAULT_PARITY_ATOL_PROBABILITIES if atol is None else float(atol)
        bad = ~(diff <= a)  # NaN fails
        figures.update(atol=a, rtol=None)
        rule = f"|sklearn - onnx| <= {a:.0e} (probabilities: absolute)"
    else:
        r = DEFAULT_PARITY_RTOL if rtol is None else float(rtol)
        finite_ref = np.abs(ref[np.isfinite(ref)])
        scale = float(finite_ref.max()) if finite_ref.size else 0.0
        a = r * scale if atol is None else float(atol)
        with np.errstate(invalid="ignore"):
            bad = ~(diff <= a + r * np.where(both_nan, 0.0, np.abs(ref)))
        figures.update(atol=a, rtol=r, output_scale=scale)
        floor = f"atol {a:.2e} = rtol x output scale {scale:.3g}" if atol is None else f"atol {a:.2e}"
        rule = f"|sklearn - onnx| <= atol + rtol*|sklearn| ({floor}, rtol {r:.0e})"
    if bad.ndim > 1:
        bad = bad.any(axis=1)
    failing = int(bad.sum())
    figures["failing_rows"] = failing
    ok = failing == 0
    lone_nan = int(np.isnan(diff).any(axis=1).sum() if diff.ndim > 1 else np.isnan(diff).sum())
    head = (f"all {n} holdout rows within" if ok else f"{failing} of {n} holdout rows outside") + f" {rule}"
    detail = f"max abs diff {max_abs:.2e}, max rel diff {max_rel:.2e}"
    if lone_nan:
        detail += f"; {lone_nan} row(s) NaN on one side only"
    return Verdict("onnx_parity", ok, f"{head}: {detail}", figures)


def latency_budget(p99_ms: float, budget_ms: float) -> Verdict:
    ok = p99_ms <= budget_ms
    return Verdict(
        "latency_budget",
        ok,
        f"single-row ONNX p99 {p99_ms:.3f} ms {'<=' if ok else '>'} budget {budget_ms} ms",
        {"p99_ms": p99_ms, "budget_ms": budget_ms},
    )


# ------------------------------------------------------------------ your own checks (gate.checks)
@dataclass(frozen=True)
class ModelOutputs:
    """What a user check is given for one model on the comparison rows."""

    version: int | None
    values: np.ndarray  # probabilities [rows, classes] (classification) or predictions [rows]
    classes: list | None  # the class labels of the probability columns


@dataclass(frozen=True)
class GateVerdict:
    """What a user check returns (a ``(passed, reason)`` or ``(passed, reason, metadata)`` tuple
    is read the same way)."""

    passed: bool
    reason: str
    metadata: dict = field(default_factory=dict)


USER_ERROR_CHARS = 160  # pandas puts whole columns in some messages ("Could not convert 0101...")


def _short(message: str) -> str:
    """An exception's message on one line, cut to ``USER_ERROR_CHARS``: the reason is read in a
    table cell and a terminal line."""
    line = " ".join(message.split())
    return line if len(line) <= USER_ERROR_CHARS else line[: USER_ERROR_CHARS - 1] + "…"


def user_check(name: str, fn, candidate: ModelOutputs, champion: ModelOutputs | None, rows) -> Verdict:
    """Run a user check and read its answer as a Verdict. An exception or an answer of the wrong
    shape is a failed verdict naming it: the candidate does not ship on a check that did not run."""
    try:
        out = fn(candidate, champion, rows)
        if isinstance(out, GateVerdict):
            passed, reason, metadata = out.passed, out.reason, dict(out.metadata or {})
        elif isinstance(out, tuple) and len(out) in (2, 3) and isinstance(out[0], (bool, np.bool_)):
            passed, reason, metadata = bool(out[0]), str(out[1]), (dict(out[2] or {}) if len(out) == 3 else {})
        else:
            return Verdict(name, False, f"{name} returned {type(out).__name__}: expected a GateVerdict")
    except Exception as e:  # noqa: BLE001 - the user's code: its failure is the verdict
        return Verdict(name, False, f"{name} raised {type(e).__name__}: {_short(str(e))}")
    figures = {k: v for k, v in metadata.items() if isinstance(v, (int, float, str, bool))}
    return Verdict(name, bool(passed), str(reason), figures)
