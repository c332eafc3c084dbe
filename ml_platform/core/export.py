"""scikit-learn pipeline -> ONNX (preprocessing included, typed inputs, ZipMap off), and
the serving metadata that travels next to the ONNX file."""

from __future__ import annotations

from functools import cache

import numpy as np
import onnxruntime as ort
import pandas as pd
from sklearn.pipeline import Pipeline

from ml_platform.core.compute import outputs
from ml_platform.core.frames import MISSING, feeds_of, model_inputs
from ml_platform.settings import ModelConfig

TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}


@cache
def _skl2onnx():
    """skl2onnx, imported on first export: its import is slow, and most processes that import
    this module (ingest runs, monitoring, scoring) only run ONNX graphs."""
    import skl2onnx
    from skl2onnx.operator_converters.imputer_op import convert_sklearn_imputer
    from skl2onnx.shape_calculators.imputer import calculate_sklearn_imputer_output_shapes

    from ml_platform.core.training import Float32Imputer

    skl2onnx.update_registered_converter(
        Float32Imputer, "MlPlatformFloat32Imputer", calculate_sklearn_imputer_output_shapes, convert_sklearn_imputer
    )
    return skl2onnx


def export_onnx(pipe: Pipeline, cfg: ModelConfig) -> bytes:
    skl2onnx = _skl2onnx()
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    initial_types = [
        (c, FloatTensorType([None, 1]) if s.type == "numeric" else StringTensorType([None, 1]))
        for c, s in cfg.features.items()
    ]
    options = {id(pipe.steps[-1][1]): {"zipmap": False}} if cfg.task == "classification" else None
    onx = skl2onnx.to_onnx(pipe, initial_types=initial_types, options=options, target_opset=TARGET_OPSET)
    name_inputs(onx, [name for name, _ in initial_types])
    return onx.SerializeToString()


def name_inputs(onx, columns: list[str]) -> None:
    """The rule of the platform's ONNX graphs: input i is named exactly column i, whatever the
    column name holds (``tenure months``, ``plan/type``, ``x.y``, unicode). skl2onnx turns every
    character outside ``[\\w+]`` into ``_`` (and numbers names that then collide), so a graph
    would want feeds no feed builder makes: its inputs are renamed back here, in place. Every
    feed builder (``frames.feeds_of``, the endpoint's ``requests.Schema``, the gate, scoring)
    keys feeds by column name, and the endpoint checks that a graph's inputs are its metadata's
    features. ONNX names are free strings; skl2onnx declares the inputs first, in order, so the
    sanitised names only ever stand for the inputs."""
    graph = onx.graph
    if len(graph.input) != len(columns):
        raise ValueError(f"the ONNX graph has {len(graph.input)} inputs for {len(columns)} columns")
    renamed = {i.name: col for i, col in zip(graph.input, columns) if i.name != col}
    if not renamed:
        return
    for i in graph.input:
        i.name = renamed.get(i.name, i.name)
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name in renamed:
                node.input[k] = renamed[name]
    for vi in graph.value_info:
        vi.name = renamed.get(vi.name, vi.name)


def session(onnx_bytes: bytes, threads: int = 1) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(onnx_bytes, so, providers=["CPUExecutionProvider"])


def onnx_predict(
    sess: ort.InferenceSession, df: pd.DataFrame, cfg: ModelConfig, chunk_rows: int = 50_000
) -> np.ndarray:
    """Probabilities [N, n_classes] (classification) or predictions [N] (regression),
    computed in chunks so memory stays bounded on large batches."""
    outs = []
    for start in range(0, len(df), chunk_rows):
        res = sess.run(None, feeds_of(df.iloc[start : start + chunk_rows], cfg.features))
        outs.append(res[1] if cfg.task == "classification" else res[0].reshape(-1))
    if not outs:
        return np.empty((0, 0) if cfg.task == "classification" else (0,))
    return np.concatenate(outs)


def parity(pipe: Pipeline, sess: ort.InferenceSession, df: pd.DataFrame, cfg: ModelConfig) -> float:
    """Max absolute difference between sklearn and ONNX outputs on ``df``."""
    x = model_inputs(df, cfg)
    ref = outputs(pipe, x, cfg.task)
    got = onnx_predict(sess, df, cfg)
    return float(np.max(np.abs(ref - got))) if len(df) else 0.0


def serving_metadata(
    pipe: Pipeline, cfg: ModelConfig, *, name: str, version: int, metrics: dict, smoke_rows: list[dict]
) -> dict:
    """Everything the endpoint needs besides the ONNX graph (it never imports sklearn)."""
    classes = pipe.classes_.tolist() if cfg.task == "classification" else None
    return {
        "name": name,
        "version": version,
        "task": cfg.task,
        "classes": classes,
        "id_column": cfg.id_column,
        "missing_category": MISSING,
        "features": {c: s.model_dump(exclude_none=True) for c, s in cfg.features.items()},
        "metrics": metrics,
        "smoke_rows": smoke_rows,
        "latency_budget_ms": cfg.gate.latency_budget_ms,  # the endpoint holds the version to its own budget
    }
