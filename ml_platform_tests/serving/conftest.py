"""Serving fixtures: a real small model (trained, exported to ONNX, published to a model
store), and in-process apps over it."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

with warnings.catch_warnings():  # starlette>=1.x nudges towards httpx2; httpx works
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from ml_platform.core.export import export_onnx, serving_metadata
from ml_platform.core.training import fit
from ml_platform.serving.app import create_app
from ml_platform.serving.store import ModelStore
from ml_platform.settings import ModelConfig

CLF = "churn"
REG = "price"

CLF_CONFIG = {
    "landing_dir": "landing/churn",
    "target": "churned",
    "task": "classification",
    "id_column": "customer_id",
    "features": {
        "tenure": {"type": "numeric", "min": 0, "max": 600},
        "charges": {"type": "numeric", "nullable": False},
        "plan": {"type": "categorical", "values": ["basic", "plus", "pro"]},
        "region": {"type": "categorical"},  # integer codes
    },
    "estimator": {"name": "hist_gradient_boosting", "params": {"max_iter": 30}},
}
REG_CONFIG = {
    "landing_dir": "landing/price",
    "target": "price",
    "task": "regression",
    "features": {
        "size": {"type": "numeric"},
        "rooms": {"type": "numeric"},
        "city": {"type": "categorical"},
        "zone": {"type": "categorical"},
    },
    "estimator": {"name": "hist_gradient_boosting", "params": {"max_iter": 20}},
}

CLF_SMOKE = [
    {"tenure": 12.0, "charges": 70.5, "plan": "plus", "region": 3},
    {"tenure": None, "charges": 20.0, "plan": None, "region": "1"},
]
REG_SMOKE = [{"size": 80.0, "rooms": 3, "city": "rome", "zone": 2}]


@dataclass
class Built:
    cfg: ModelConfig
    frame: pd.DataFrame
    onnx: bytes
    meta: dict

    def meta_for(self, version: int, **changes) -> dict:
        return {**self.meta, "version": version, **changes}


def _clf_frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "customer_id": [f"c{i}" for i in range(n)],
            "tenure": rng.integers(0, 120, n).astype(float),
            "charges": rng.normal(60, 20, n).round(2),
            "plan": rng.choice(["basic", "plus", "pro"], n),
            "region": rng.integers(1, 6, n),
        }
    )
    df.loc[rng.random(n) < 0.1, "tenure"] = np.nan
    df.loc[rng.random(n) < 0.05, "plan"] = None
    score = (df.charges - 60) / 20 - df.tenure.fillna(60) / 60 + (df.plan == "pro") + (df.region == 3)
    df["churned"] = (score + rng.normal(0, 0.5, n) > 0).astype(int)
    return df


def _reg_frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "size": rng.uniform(20, 200, n).round(1),
            "rooms": rng.integers(1, 7, n).astype(float),
            "city": rng.choice(["rome", "milan", "turin"], n),
            "zone": rng.integers(1, 4, n),
        }
    )
    df["price"] = df["size"] * 3 + df.rooms * 10 + (df.city == "milan") * 50 + rng.normal(0, 5, n)
    return df


def build(cfg_raw: dict, frame: pd.DataFrame, name: str, smoke: list) -> Built:
    cfg = ModelConfig.model_validate(cfg_raw)
    pipe = fit(frame, cfg)
    meta = serving_metadata(pipe, cfg, name=name, version=1, metrics={"holdout": 1.0}, smoke_rows=smoke)
    return Built(cfg, frame, export_onnx(pipe, cfg), meta)


@pytest.fixture(scope="session")
def clf() -> Built:
    return build(CLF_CONFIG, _clf_frame(600, 0), CLF, CLF_SMOKE)


@pytest.fixture(scope="session")
def reg() -> Built:
    return build(REG_CONFIG, _reg_frame(400, 1), REG, REG_SMOKE)


def publish(store: ModelStore, name: str, built: Built, version: int, *, point: bool = True, **meta_changes):
    store.publish(name, version, built.onnx, built.meta_for(version, **meta_changes))
    if point:
        store.point(name, version)


@pytest.fixture
def serving_dir(tmp_path, clf, reg) -> Path:
    root = tmp_path / "serving"
    store = ModelStore(root)
    publish(store, CLF, clf, 1)
    publish(store, REG, reg, 1)
    return root


@pytest.fixture
def client(serving_dir, tmp_path):
    app = create_app(
        serving_dir,
        [CLF, REG],
        max_body_bytes=64 * 1024,
        poll_seconds=0.05,
        sample_dir=tmp_path / "samples",
        sample_flush_seconds=3600,
    )
    with TestClient(app) as c:
        yield c


@pytest.fixture
def single_client(serving_dir):
    with TestClient(create_app(serving_dir, [CLF], poll_seconds=3600)) as c:
        yield c


def split_body(rows: list[dict], columns: list[str] | None = None) -> dict:
    columns = columns or list(rows[0])
    return {"dataframe_split": {"columns": columns, "data": [[r.get(c) for c in columns] for r in rows]}}


def records(frame: pd.DataFrame, columns: list[str]) -> list[dict]:
    """Rows as JSON-ready dicts (NaN -> None, numpy scalars -> Python)."""
    out = []
    for rec in frame[columns].to_dict("records"):
        out.append(
            {
                k: (
                    None
                    if (isinstance(v, float) and np.isnan(v)) or v is None
                    else v.item()
                    if hasattr(v, "item")
                    else v
                )
                for k, v in rec.items()
            }
        )
    return out
