"""Turning a batch DataFrame into model inputs, the same way for training, ONNX and serving.

Numeric features become float32 (NaN = missing); categorical features become strings
(integer codes and their string form are one category; missing = ``MISSING``). The
endpoint applies the identical rules to JSON requests (see ``serving/requests.py``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ml_platform.settings import ModelConfig

MISSING = "__missing__"


def category_strings(values: pd.Series) -> pd.Series:
    """Categorical values as strings: 3, 3.0 and "3" are one category; NaN -> MISSING."""
    def one(v):
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return MISSING
        if isinstance(v, (float, np.floating)) and float(v).is_integer():
            return str(int(v))
        return str(v)

    return values.astype(object).map(one)


def model_inputs(df: pd.DataFrame, cfg: ModelConfig) -> pd.DataFrame:
    """The feature columns of ``df`` typed for the pipeline (and for the ONNX graph)."""
    out = {}
    for col, spec in cfg.features.items():
        if spec.type == "numeric":
            out[col] = pd.to_numeric(df[col], errors="coerce").astype(np.float32)
        else:
            out[col] = category_strings(df[col])
    return pd.DataFrame(out, index=df.index)


def onnx_feeds(x: pd.DataFrame, cfg: ModelConfig) -> dict[str, np.ndarray]:
    """ONNX Runtime feeds: one [N, 1] tensor per feature, named as the feature."""
    feeds = {}
    for col, spec in cfg.features.items():
        if spec.type == "numeric":
            feeds[col] = x[col].to_numpy(np.float32).reshape(-1, 1)
        else:
            feeds[col] = x[col].to_numpy(object).astype(str).reshape(-1, 1)
    return feeds
