"""The evaluation gate: blocking asset checks on candidate_model.

Each check computes its figures, asks the pure policy in ``core/gate.py`` for a verdict,
records it on the MLflow model version (so `status` and MLflow show it) and in the UI.
"""


import json
import time

import dagster as dg
import numpy as np

from ml_platform.assets.common import Chain
from ml_platform.assets.training import load_training_set
from ml_platform.champion import champion_version
from ml_platform.core import export, gate, training
from ml_platform.core.candidate import Candidate
from ml_platform.core.frames import feeds_of
from ml_platform.promotion import version_files_of
from ml_platform.resources.registry import MlflowRegistry


def _result(registry: MlflowRegistry, chain: Chain, candidate: Candidate, v: gate.Verdict,
            extra_tags: dict | None = None) -> dg.AssetCheckResult:
    # The verdict is recorded on the MLflow version: the champion move reads it from there.
    registry.set_version_tags(chain.name, candidate.version, {
        f"gate.{v.check}": "passed" if v.passed else "failed", f"gate.{v.check}.reason": v.reason,
        **(extra_tags or {})})
    figures = {k: val for k, val in v.figures.items() if val is not None}
    return dg.AssetCheckResult(passed=v.passed, metadata={"reason": v.reason, "candidate_version":
                                                          candidate.version, **figures})


def _candidate_session(candidate: Candidate):
    return export.session(candidate.files.onnx.read_bytes())


def champion_metric_on(chain: Chain, registry: MlflowRegistry, holdout) -> tuple[int | None, float | None]:
    """The serving champion's gate metric on this holdout (its ONNX graph, like it serves)."""
    version = champion_version(chain.settings, chain.name)
    if version is None:
        return None, None
    files = version_files_of(chain.settings, registry, chain.name, version)
    meta = json.loads(files.serving.read_text())
    out = export.onnx_predict(export.session(files.onnx.read_bytes()), holdout, chain.cfg)
    cfg = chain.cfg
    y = training.target_values(holdout, cfg)
    if cfg.task == "classification":
        m = training.classification_metrics(y, out, meta["classes"])
    else:
        m = training.regression_metrics(y, out)
    return version, m.get(cfg.gate_metric)


def build_gate_checks(chain: Chain) -> list[dg.AssetChecksDefinition]:
    cfg = chain.cfg
    key = chain.key("candidate_model")
    metric = cfg.gate_metric

    @dg.asset_check(asset=key, name="min_metric", blocking=True,
                    description=f"holdout {metric} meets the configured threshold")
    def min_metric(registry: MlflowRegistry, candidate_model: Candidate) -> dg.AssetCheckResult:
        v = gate.min_metric(metric, candidate_model.metrics.get(metric), cfg.gate_threshold)
        return _result(registry, chain, candidate_model, v)

    @dg.asset_check(asset=key, name="not_worse_than_champion", blocking=True,
                    description=f"{metric} not worse than the champion's on the same holdout "
                                f"by more than {cfg.gate.max_regression}")
    def not_worse_than_champion(registry: MlflowRegistry, candidate_model: Candidate) -> dg.AssetCheckResult:
        _, holdout = load_training_set({"path": candidate_model.training_set})
        champ_version, champ_value = champion_metric_on(chain, registry, holdout)
        judged_against = "none" if champ_version is None else str(champ_version)
        if champ_version == candidate_model.version:
            champ_version = None  # re-checking the serving champion itself
        v = gate.not_worse_than_champion(metric, candidate_model.metrics.get(metric), champ_value,
                                         champ_version, cfg.gate.max_regression)
        return _result(registry, chain, candidate_model, v, {"gate.judged_against": judged_against})

    @dg.asset_check(asset=key, name="onnx_parity", blocking=True,
                    description="ONNX outputs equal sklearn's on the holdout up to float32 rounding "
                                "(absolute on probabilities, relative to the output scale for regression)")
    def onnx_parity(registry: MlflowRegistry, candidate_model: Candidate) -> dg.AssetCheckResult:
        _, holdout = load_training_set({"path": candidate_model.training_set})
        ref = np.load(candidate_model.files.holdout_outputs)
        got = export.onnx_predict(_candidate_session(candidate_model), holdout, cfg)
        v = gate.onnx_parity(ref, got, task=cfg.task, atol=cfg.gate.parity_tolerance, rtol=cfg.gate.parity_rtol)
        return _result(registry, chain, candidate_model, v)

    @dg.asset_check(asset=key, name="latency_budget", blocking=True,
                    description=f"single-row ONNX p99 within {cfg.gate.latency_budget_ms} ms")
    def latency_budget(registry: MlflowRegistry, candidate_model: Candidate) -> dg.AssetCheckResult:
        _, holdout = load_training_set({"path": candidate_model.training_set})
        sess = _candidate_session(candidate_model)
        feeds = feeds_of(holdout.head(1), cfg.features)
        for _ in range(20):
            sess.run(None, feeds)  # warm-up
        times = []
        for _ in range(300):
            t = time.perf_counter()
            sess.run(None, feeds)
            times.append((time.perf_counter() - t) * 1000)
        v = gate.latency_budget(float(np.percentile(times, 99)), cfg.gate.latency_budget_ms)
        return _result(registry, chain, candidate_model, v)

    return [min_metric, not_worse_than_champion, onnx_parity, latency_budget]
