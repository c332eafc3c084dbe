"""The evaluation gate as plain policy functions: figures in, verdict + readable reason out."""

from __future__ import annotations

from dataclasses import dataclass, field

from ml_platform.core.training import HIGHER_IS_BETTER


@dataclass
class Verdict:
    check: str
    passed: bool
    reason: str
    figures: dict = field(default_factory=dict)


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


def not_worse_than_champion(metric: str, candidate: float | None, champion: float | None,
                            champion_version: int | None, max_regression: float) -> Verdict:
    figures = {"metric": metric, "candidate": candidate, "champion": champion,
               "champion_version": champion_version, "max_regression": max_regression}
    if champion_version is None:
        return Verdict("not_worse_than_champion", True,
                       "no champion yet: the first model is judged on the absolute threshold alone", figures)
    if candidate is None or champion is None:
        return Verdict("not_worse_than_champion", False,
                       f"{metric} unavailable for candidate or champion v{champion_version}", figures)
    higher = HIGHER_IS_BETTER[metric]
    delta = candidate - champion if higher else champion - candidate  # > 0 means better
    figures["delta"] = delta
    ok = delta >= -max_regression
    rel = "better than" if delta >= 0 else "worse than"
    return Verdict("not_worse_than_champion", ok,
                   f"{metric} {candidate:.4f} vs champion v{champion_version} {champion:.4f} on the same "
                   f"holdout: {abs(delta):.4f} {rel} (allowed regression {max_regression})", figures)


def onnx_parity(max_abs_diff: float, tolerance: float, rows: int) -> Verdict:
    ok = max_abs_diff <= tolerance
    return Verdict("onnx_parity", ok,
                   f"max |sklearn - onnx| = {max_abs_diff:.2e} over {rows} holdout rows "
                   f"({'<=' if ok else '>'} {tolerance:.0e})",
                   {"max_abs_diff": max_abs_diff, "tolerance": tolerance, "rows": rows})


def latency_budget(p99_ms: float, budget_ms: float) -> Verdict:
    ok = p99_ms <= budget_ms
    return Verdict("latency_budget", ok,
                   f"single-row ONNX p99 {p99_ms:.3f} ms {'<=' if ok else '>'} budget {budget_ms} ms",
                   {"p99_ms": p99_ms, "budget_ms": budget_ms})
