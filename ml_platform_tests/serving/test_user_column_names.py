"""Column names as users write them (issue 20): a model whose features are named `tenure months`,
`plan/type`, `x.y` (and `x_y`, which `x.y` becomes once sanitised) is served by those names on
both protocols; its ONNX inputs are the names themselves (``core/export.name_inputs``)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ml_platform.core.export import onnx_predict, session
from ml_platform.serving.app import create_app
from ml_platform.serving.store import ModelStore
from ml_platform_tests.serving.conftest import TestClient, build, publish, records

NAME = "odd"
FEATURES = {
    "tenure months": {"type": "numeric", "min": 0},
    "plan/type": {"type": "categorical", "values": ["basic", "plus", "pro"]},
    "x.y": {"type": "numeric"},
    "x_y": {"type": "numeric"},
    "région": {"type": "categorical"},
}


def _frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "tenure months": rng.integers(0, 72, n).astype(float),
            "plan/type": rng.choice(["basic", "plus", "pro"], n),
            "x.y": rng.normal(size=n).round(3),
            "x_y": rng.normal(size=n).round(3),
            "région": rng.choice(["nord", "sud"], n),
        }
    )
    score = df["x.y"] - df["tenure months"] / 36 + (df["plan/type"] == "pro") - df["x_y"]
    df["churned"] = (score + rng.normal(0, 0.5, n) > 0).astype(int)
    return df


def test_the_endpoint_answers_by_the_columns_own_names(tmp_path):
    cfg = {
        "landing_dir": "landing/odd",
        "target": "churned",
        "task": "classification",
        "features": FEATURES,
        "estimator": {"name": "hist_gradient_boosting", "params": {"max_iter": 30}},
    }
    frame = _frame(600, 3)
    smoke = records(frame.head(2), list(FEATURES))
    built = build(cfg, frame, NAME, smoke)
    assert [i.name for i in session(built.onnx).get_inputs()] == list(FEATURES)
    publish(ModelStore(tmp_path), NAME, built, 1)
    rows = records(frame.head(10), list(FEATURES))
    ref = onnx_predict(session(built.onnx), frame.head(10), built.cfg)
    with TestClient(create_app(tmp_path, [NAME], poll_seconds=3600)) as c:
        assert c.get("/v2/health/ready").json()["models"][NAME]["ready"] is True
        r = c.post(f"/models/{NAME}/invocations", json={"dataframe_records": rows})
        assert r.status_code == 200, r.text
        got = [[p["probabilities"][k] for k in ("0", "1")] for p in r.json()["predictions"]]
        np.testing.assert_allclose(got, ref, atol=1e-6)
        inputs = [
            {
                "name": c_,
                "shape": [10],
                "datatype": "BYTES" if FEATURES[c_]["type"] == "categorical" else "FP64",
                "data": [row[c_] for row in rows],
            }
            for c_ in FEATURES
        ]
        v2 = c.post(f"/v2/models/{NAME}/infer", json={"inputs": inputs})
        assert v2.status_code == 200, v2.text
        out = {o["name"]: o for o in v2.json()["outputs"]}
        np.testing.assert_allclose(np.array(out["probabilities"]["data"]), ref.reshape(-1), atol=1e-6)
        # a missing column is named as the user wrote it
        bad = c.post(
            f"/models/{NAME}/invocations",
            json={"dataframe_records": [{k: v for k, v in rows[0].items() if k != "plan/type"}]},
        )
        assert bad.status_code == 400 and "plan/type" in bad.text
