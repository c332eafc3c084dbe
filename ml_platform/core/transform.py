"""The user's feature transform (``transform: "module:function"``): ``(DataFrame) -> DataFrame``
from the validated input columns (``features``: what callers send) to what the estimator sees
(its output minus target, id and timestamp columns).

The same function runs in training, the gate, batch scoring, monitoring and the endpoint, so
training and serving cannot skew. Each model version carries the source of the transform's module
it was trained with in its serving metadata (``meta["transform"]``), and every reader of that
version runs that copy: a champion keeps its own transform after the project's code moved on.
"""

from __future__ import annotations

import hashlib
import inspect
import sys
import types
from collections.abc import Callable

import numpy as np
import pandas as pd

from ml_platform.core import frames
from ml_platform.core.values import MISSING
from ml_platform.settings import FeatureSpec, ModelConfig

TransformFn = Callable[[pd.DataFrame], pd.DataFrame]


class TransformError(ValueError):
    """The transform failed or returned something unusable; the message names the row when one
    row is to blame."""


def function_name(path: str) -> str:
    return path.rsplit(":", 1)[-1]


def module_source(path: str) -> str:
    """The source of the module holding the transform (stored with each version)."""
    from ml_platform.core.user_code import load_object

    fn = load_object(path)
    module = inspect.getmodule(fn)
    if module is None:
        raise TransformError(f"transform {path!r}: its module's source cannot be read")
    return inspect.getsource(module)


def load_from_source(source: str, path: str, package: str = "", file: str = "") -> TransformFn:
    """The transform function from a version's stored module source (a module of its own per
    source, so two versions' transforms never share one). It runs as a module of its original
    package, at its original file path, so relative imports and ``__file__`` work as they did."""
    name = f"_ml_platform_transform_{hashlib.sha256(source.encode()).hexdigest()[:16]}"
    module = sys.modules.get(name)
    if module is None:
        module = types.ModuleType(name)
        module.__file__ = file or f"<transform {path}>"
        module.__package__ = package
        sys.modules[name] = module  # before exec: dataclasses and pickling look the module up
        try:
            exec(compile(source, module.__file__, "exec"), module.__dict__)  # noqa: S102 - the user's own code
        except Exception as e:  # noqa: BLE001 - a version whose transform no longer imports
            sys.modules.pop(name, None)
            raise TransformError(
                f"transform {path}: its stored module fails to load: {type(e).__name__}: {e}"
            ) from None
    fn = getattr(module, function_name(path), None)
    if not callable(fn):
        raise TransformError(f"transform {path}: no function {function_name(path)!r} in its stored module")
    return fn


def version_meta(cfg: ModelConfig) -> dict | None:
    """What a version stores of its transform: the path, its module's source, and where that
    module lives (its package resolves the module's own imports: helpers are the installed ones)."""
    if cfg.transform is None:
        return None
    from ml_platform.core.user_code import load_object

    module = inspect.getmodule(load_object(cfg.transform))
    return {
        "path": cfg.transform,
        "source": module_source(cfg.transform),
        "package": getattr(module, "__package__", None) or "",
        "file": getattr(module, "__file__", None) or "",
    }


def for_version(meta: dict, cfg: ModelConfig) -> tuple[TransformFn | None, ModelConfig]:
    """(the version's transform or None, the config its ONNX graph takes) from its serving
    metadata: what every reader of a version's outputs on raw rows uses."""
    spec = meta.get("transform")
    if not spec:
        return None, cfg
    fn = load_from_source(spec["source"], spec["path"], spec.get("package", ""), spec.get("file", ""))
    feats = {c: FeatureSpec.model_validate(s) for c, s in meta["model_features"].items()}
    return fn, model_config(cfg, feats)


def model_rows(df: pd.DataFrame, fn: TransformFn | None, meta: dict, where: str = "") -> pd.DataFrame:
    """Raw rows as the version's ONNX graph takes them (unchanged without a transform)."""
    if fn is None:
        return df
    inputs = list(meta["features"])  # what callers send: the transform never sees more
    keep = tuple(c for c in df.columns if c not in inputs)
    return apply(fn, df, meta["transform"]["path"], where=where, keep=keep, inputs=inputs)


def raw_metadata(meta: dict, cfg: ModelConfig, spec: dict, raw_holdout: pd.DataFrame) -> dict:
    """A transform model's serving metadata: callers send (and are validated against) the input
    ``features``; the ONNX graph takes ``model_features``; the transform travels with it."""
    return {
        **meta,
        "features": {c: s.model_dump(exclude_none=True) for c, s in cfg.features.items()},
        "model_features": meta["features"],
        "transform": spec,
        "smoke_rows": frames.json_records(raw_holdout[list(cfg.features)].head(5)),
    }


def apply(
    fn: TransformFn, df: pd.DataFrame, path: str, *, where: str = "", keep: tuple = (), inputs: list | None = None
) -> pd.DataFrame:
    """``fn`` on the ``inputs`` columns (all when None), checked: a DataFrame with one row per
    input row, in the input's order (a transform that reorders rows is put back in order); the
    columns in ``keep`` (target, id, the platform's own) are carried over. On failure the rows
    are tried one by one so the error names the first row that fails."""
    if inputs is not None:
        df_in = df[[c for c in inputs if c in df.columns]]
    else:
        df_in = df
    try:
        out = fn(df_in.copy())
    except Exception as e:  # noqa: BLE001 - the user's code: say which row breaks it
        raise TransformError(_blame(fn, df_in, path, e, where)) from None
    if not isinstance(out, pd.DataFrame):
        raise TransformError(f"{where}transform {path} returned {type(out).__name__}, not a DataFrame")
    if len(out) != len(df):
        raise TransformError(f"{where}transform {path} returned {len(out)} rows for {len(df)}")
    if out.index.equals(df.index):
        pass
    elif out.index.has_duplicates is False and set(out.index) == set(df.index):
        out = out.loc[df.index]  # reordered rows: back to the order their predictions are paired with
    else:
        out = out.set_axis(df.index, axis=0)
    missing = [c for c in keep if c in df.columns and c not in out.columns]
    return out.assign(**{c: df[c] for c in missing}) if missing else out


def _blame(fn: TransformFn, df: pd.DataFrame, path: str, error: Exception, where: str) -> str:
    for i in range(min(len(df), 1000)):
        try:
            fn(df.iloc[[i]].copy())
        except Exception as e:  # noqa: BLE001 - found the row
            return f"{where}row {i}: transform {path} raised {type(e).__name__}: {e}"[:500]
    return f"{where}transform {path} raised {type(error).__name__}: {error}"[:500]


def derived_features(out: pd.DataFrame, cfg: ModelConfig) -> dict[str, FeatureSpec]:
    """The estimator's inputs: the transform's output columns minus target, id and timestamp;
    numeric (and boolean) columns are numeric, the rest categorical. Input columns keep their
    configured spec (ranges, allowed values)."""
    skip = {cfg.target, cfg.id_column, cfg.timestamp_column}
    specs = {}
    for c in out.columns:
        if c in skip or str(c).startswith("_") and c not in cfg.features:  # the platform's own (_batch, ...)
            continue
        if c in cfg.features:
            specs[str(c)] = cfg.features[c]
        elif pd.api.types.is_numeric_dtype(out[c]) or pd.api.types.is_bool_dtype(out[c]):
            specs[str(c)] = FeatureSpec(type="numeric")
        else:
            specs[str(c)] = FeatureSpec(type="categorical")
    if not specs:
        raise TransformError(f"transform {cfg.transform} left no input column for the estimator")
    return specs


def model_config(cfg: ModelConfig, features: dict[str, FeatureSpec]) -> ModelConfig:
    """``cfg`` as the estimator sees it: its features are the transform's output columns."""
    return cfg.model_copy(update={"features": features})


def raw_frame(columns: dict[str, np.ndarray], features: dict[str, dict]) -> pd.DataFrame:
    """Request columns as the endpoint parsed them (numeric float32, categories as strings with
    ``MISSING`` for null) back to the frame a transform expects: missing is NaN / None."""
    data = {}
    for c, v in columns.items():
        v = np.asarray(v).reshape(-1)
        if (features.get(c) or {}).get("type") == "categorical":
            v = np.where(v == MISSING, None, v).astype(object)
        data[c] = v
    return pd.DataFrame(data)
