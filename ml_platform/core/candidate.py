"""Training one candidate: a pure function from (train, holdout, config) to everything the
registry, the gate and the endpoint need. No Dagster, no MLflow."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from ml_platform.core import calibration, compute, drift_reference, export, metric_drop, training
from ml_platform.core.files import write_atomic, write_with
from ml_platform.core.frames import json_records, model_inputs
from ml_platform.core.version_files import VersionFiles
from ml_platform.names import COL_SCORE
from ml_platform.settings import ModelConfig

SCORE = COL_SCORE  # the model's one-number output, as a column of the drift reference


def scores_of(outputs: np.ndarray, task: str) -> np.ndarray:
    return training.positive_scores(outputs) if task == "classification" else outputs


@dataclass
class CandidateArtifacts:
    pipe: Pipeline
    onnx_bytes: bytes
    metrics: dict[str, float]
    holdout_outputs: np.ndarray  # sklearn's own outputs on the holdout (parity reference)
    drift_reference: dict
    serving_meta: dict  # without "version": the registry assigns it
    params: dict
    train_rows: int
    holdout_rows: int

    def write(self, files: VersionFiles) -> None:
        what = "the candidate's {}"
        write_atomic(files.onnx, self.onnx_bytes, what.format("ONNX graph"))
        outputs = np.asarray(self.holdout_outputs, dtype=np.float64)

        def save(tmp):
            with open(tmp, "wb") as f:
                np.save(f, outputs)

        write_with(files.holdout_outputs, save, what.format("holdout outputs"))
        write_atomic(files.drift_reference, json.dumps(self.drift_reference), what.format("drift reference"))
        write_atomic(files.serving, json.dumps(self.serving_meta, default=str), what.format("serving metadata"))


@dataclass
class Candidate:
    """candidate_model's output: one registered version and where its files are."""

    version: int
    run_id: str
    metrics: dict[str, float]
    dir: str
    training_set: str
    trigger: str
    batches: dict = field(default_factory=dict)  # the batches of the window it trained on -> sha256
    window: str = ""  # that window, e.g. "newest 3 batches"

    @property
    def files(self) -> VersionFiles:
        return VersionFiles(Path(self.dir))


def build_candidate(
    train: pd.DataFrame,
    holdout: pd.DataFrame,
    cfg: ModelConfig,
    *,
    name: str,
    pipe: Pipeline | None = None,
    window: str | None = None,
) -> CandidateArtifacts:
    """Fit the configured pipeline (or take ``pipe``, already fitted on ``train``), evaluate it on
    the holdout, export ONNX, and build the serving metadata and the drift reference that travel
    with the version."""
    pipe = training.fit(train, cfg) if pipe is None else pipe
    metrics = training.evaluate(pipe, holdout, cfg)
    onnx_bytes = export.export_onnx(pipe, cfg)
    clf = cfg.task == "classification"
    x = model_inputs(holdout, cfg)
    ref = compute.outputs(pipe, x, cfg.task)
    # The drift reference: when this version becomes champion, batches are compared with the
    # data it was trained on (and its own scores on that data).
    x_train = model_inputs(train, cfg)
    train_out = compute.outputs(pipe, x_train, cfg.task)
    drift_ref = drift_reference.build_reference_from_config(
        train.assign(**{SCORE: scores_of(train_out, cfg.task)}), cfg.features, cfg.drift, score_column=SCORE
    )
    smoke = json_records(holdout[list(cfg.features)].head(5))
    meta = export.serving_metadata(pipe, cfg, name=name, version=None, metrics=metrics, smoke_rows=smoke)
    meta.pop("version", None)
    # The holdout metric's own bootstrap interval: monitoring compares batches against it.
    gm = cfg.gate_metric
    if gm in metrics:
        ci = metric_drop.bootstrap_metric_drop(
            training.target_values(holdout, cfg),
            ref,
            metric=training.metric_function(gm, cfg.task, getattr(pipe, "classes_", None)),
            baseline=metrics[gm],
            alpha=cfg.retrain.performance_alpha,
            n_boot=200,
            seed=0,
        )
        meta["metrics_ci"] = {gm: [ci["ci_low"], ci["ci_high"]]}
    if clf:  # CBPE: the holdout calibrates the probabilities that estimate unlabelled batches
        cal = calibration.fit_calibration(training.target_values(holdout, cfg), ref, pipe.classes_)
        if cal is not None:
            meta["cbpe"] = cal.to_dict()
    params = {
        "estimator": cfg.estimator.label if cfg.pipeline is None else cfg.pipeline,
        **{f"estimator.{k}": v for k, v in cfg.estimator.params.items()},
        "train_rows": len(train),
        "holdout_rows": len(holdout),
        "features": ",".join(cfg.features),
        "window_batches": cfg.training.window_batches or "all",
        "window": window or "all",
    }
    return CandidateArtifacts(
        pipe, onnx_bytes, metrics, ref, drift_ref.to_dict(), meta, params, len(train), len(holdout)
    )
