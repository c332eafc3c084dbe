"""Batch scoring (`ml_platform.control.scoring.score_file`) against the serving champion's ONNX graph."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from ml_platform.control.scoring import score_file
from ml_platform.core import export, frames, training
from ml_platform.core.frames import feeds_of
from ml_platform.core.simulate import generate_batch
from ml_platform.serving.store import ModelStore
from ml_platform.settings import ModelConfig, load_settings


def _champion(settings, name: str, frame: pd.DataFrame, version: int = 1):
    cfg = settings.models[name]
    pipe = training.fit(frame, cfg)
    onnx_bytes = export.export_onnx(pipe, cfg)
    meta = export.serving_metadata(pipe, cfg, name=name, version=version, metrics={}, smoke_rows=[])
    store = ModelStore(settings.serving_dir)
    store.publish(name, version, onnx_bytes, meta)
    store.point(name, version)
    return export.session(onnx_bytes)


@pytest.fixture(scope="module")
def churn(tmp_path_factory):
    from ml_platform_tests.conftest import write_config

    root = tmp_path_factory.mktemp("scoring")
    settings = load_settings(write_config(root, extra="estimator: {params: {max_iter: 20}}\n"))
    sess = _champion(settings, "churn", generate_batch(1500, seed=1), version=3)
    return settings, sess


def _batch(n=700, seed=7) -> pd.DataFrame:
    df = generate_batch(n, seed=seed)
    df.loc[::11, "region"] = np.nan  # integer codes with gaps -> float column
    df.loc[::13, "plan"] = None
    df.loc[5, "usage_gb"] = np.nan
    return df.drop(columns=["churned"])  # unlabelled rows score too


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_scores_equal_onnx_predict_in_chunks(churn, tmp_path, fmt):
    settings, sess = churn
    cfg = settings.models["churn"]
    df = _batch()
    src = tmp_path / f"in.{fmt}"
    df.to_csv(src, index=False) if fmt == "csv" else df.to_parquet(src, index=False)
    seen: list[int] = []
    (tmp_path / "out").mkdir()  # `--out` names a file in an existing directory (a missing one is refused)
    res = score_file(settings, "churn", src, tmp_path / "out" / "p.parquet", chunk_rows=97, progress=seen.append)
    assert res["rows"] == len(df) and res["model_version"] == 3 and res["rows_per_second"] > 0
    assert seen == [min(len(df), 97 * (i + 1)) for i in range(len(seen))] and seen[-1] == len(df)
    out = pd.read_parquet(res["out_path"])
    assert list(out.columns) == ["customer_id", "label", "p_0", "p_1", "model_version"]
    ref = export.onnx_predict(sess, pd.read_csv(src) if fmt == "csv" else df, cfg)
    np.testing.assert_array_equal(out[["p_0", "p_1"]].to_numpy(), ref)
    np.testing.assert_array_equal(out["label"].to_numpy(), ref.argmax(axis=1))
    np.testing.assert_array_equal(out["customer_id"].to_numpy(), df["customer_id"].to_numpy())
    assert (out["model_version"] == 3).all() and out["p_1"].dtype == np.float32
    assert not list(tmp_path.joinpath("out").glob(".*.tmp"))  # written atomically


def test_typing_matches_frames_on_awkward_values():
    """The vectorised typing (feeds_of) equals the per-value reference rules
    (serving.values.number -> float32, invalid -> NaN; frames.category_strings) value by value."""
    from ml_platform.core.values import InvalidValue, number
    from ml_platform.settings import FeatureSpec

    def ref_number(v):
        try:
            f = number(v, text=True)
        except InvalidValue:  # booleans, inf, overflow: unscoreable cells are missing
            return np.nan
        return np.nan if f is None else f

    n = 12
    df = pd.DataFrame(
        {
            "f_int": np.arange(n),
            "f_float": [3.0, 2.5, np.nan, -0.0, 1e20, np.inf, 7.0, 0.1, -4.0, 12.0, np.nan, 1.0],
            "f_str": ["a", None, "b", np.nan, "3", "3.0", "", "x", "y", "z", "a", "b"],
            "f_mixed": [1, "1", 2.0, None, "b", True, 3, 4, 5, 6, 7, 8],
            "f_cat": pd.Categorical(["p", "q", None, "p", "q", "p", None, "q", "p", "q", "p", "q"]),
            "f_nullable": pd.array([1, None, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], dtype="Int64"),
            "n_str": ["1.5", "forty", None, "2", "3", "4", "5", "6", "7", "8", "9", "1e3"],
            "n_int": np.arange(n) * 1000,
            "n_bool": [True, False] * 6,
        }
    )
    features = {c: FeatureSpec(type="numeric" if c.startswith("n_") else "categorical") for c in df}
    cfg = ModelConfig(landing_dir="x", target="y", task="classification", features=features)
    want = {
        c: (
            np.array([ref_number(v) for v in df[c].astype(object)], dtype=np.float32)
            if features[c].type == "numeric"
            else frames.category_strings(df[c]).to_numpy(object)
        ).reshape(-1, 1)
        for c in df
    }
    got = feeds_of(df, cfg.features)
    for col in df:
        if features[col].type == "numeric":
            assert got[col].dtype == np.float32
            np.testing.assert_array_equal(got[col], want[col], err_msg=col)
        else:
            assert got[col].shape == (n, 1) and got[col].dtype == object
            assert got[col].tolist() == want[col].tolist(), col
    assert got["f_nullable"][1, 0] == frames.MISSING
    assert np.isnan(got["n_bool"]).all()  # a boolean is not a number
    assert got["f_mixed"][5, 0] == "true" and got["f_str"][6, 0] == frames.MISSING  # blank = missing


def test_missing_feature_column_names_file_and_column(churn, tmp_path):
    settings, _ = churn
    src = tmp_path / "no-contract.csv"
    _batch(50).drop(columns=["contract"]).to_csv(src, index=False)
    with pytest.raises(ValueError, match=r"no-contract\.csv: missing column 'contract'"):
        score_file(settings, "churn", src)
    assert not list(tmp_path.glob("*.parquet"))


def test_default_out_path_and_empty_file(churn, tmp_path):
    settings, _ = churn
    src = tmp_path / "empty.csv"
    _batch(5).iloc[:0].to_csv(src, index=False)
    res = score_file(settings, "churn", src)
    assert res["rows"] == 0 and res["out_path"] == str(tmp_path / "empty.predictions.parquet")
    assert list(pd.read_parquet(res["out_path"]).columns) == ["customer_id", "label", "p_0", "p_1", "model_version"]


def test_errors_are_value_errors(churn, tmp_path):
    settings, _ = churn
    src = tmp_path / "b.parquet"
    _batch(20).to_parquet(src)
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        score_file(settings, "nope", src)
    with pytest.raises(ValueError, match="unsupported file type '.json'"):
        (tmp_path / "b.json").write_text("{}")
        score_file(settings, "churn", tmp_path / "b.json")
    with pytest.raises(ValueError, match="no such file"):
        score_file(settings, "churn", tmp_path / "missing.csv")
    with pytest.raises(ValueError, match="chunk_rows"):
        score_file(settings, "churn", src, chunk_rows=0)
    (tmp_path / "garbage.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(ValueError, match="garbage.parquet: cannot be read as parquet"):
        score_file(settings, "churn", tmp_path / "garbage.parquet")


def test_no_champion_and_regression(tmp_path):
    cfg = tmp_path / "ml_platform.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "storage_dir": "state",
                "models": {
                    "price": {
                        "landing_dir": "landing",
                        "target": "price",
                        "task": "regression",
                        "features": {"size": {"type": "numeric"}, "city": {"type": "categorical"}},
                        "estimator": {"params": {"max_iter": 10}},
                    }
                },
            }
        )
    )
    settings = load_settings(cfg)
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"size": rng.uniform(20, 200, 300), "city": rng.choice(["rome", "milan"], 300)})
    df["price"] = df["size"] * 3 + (df.city == "rome") * 40
    df.to_parquet(tmp_path / "houses.parquet")
    with pytest.raises(ValueError, match="no champion is serving"):
        score_file(settings, "price", tmp_path / "houses.parquet")
    sess = _champion(settings, "price", df)
    res = score_file(settings, "price", tmp_path / "houses.parquet", chunk_rows=64)
    out = pd.read_parquet(res["out_path"])
    assert list(out.columns) == ["prediction", "model_version"] and res["rows"] == 300
    np.testing.assert_array_equal(out["prediction"].to_numpy(), export.onnx_predict(sess, df, settings.models["price"]))
