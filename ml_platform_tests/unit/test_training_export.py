import numpy as np
import pandas as pd
import pytest

from ml_platform.core import export, training
from ml_platform.core.schema import validate_batch
from ml_platform.core.simulate import generate_batch
from ml_platform.settings import ModelConfig


def _data(settings, n=3000, seed=0):
    return validate_batch(generate_batch(n, seed=seed), settings.models["churn"]).valid


def test_time_ordered_holdout_takes_the_newest_rows(settings):
    cfg = settings.models["churn"]
    df = _data(settings, 1000).sample(frac=1, random_state=1)  # shuffled order
    mask = training.holdout_mask(df, cfg)
    assert mask.sum() == 200
    assert df.loc[mask, "event_time"].min() >= df.loc[~mask, "event_time"].max()


def test_hash_holdout_is_stable_across_calls_and_row_order(settings):
    cfg = settings.models["churn"].model_copy(update={"timestamp_column": None})
    df = _data(settings, 1000)
    m1 = pd.Series(training.holdout_mask(df, cfg), index=df.customer_id)
    shuffled = df.sample(frac=1, random_state=3)
    m2 = pd.Series(training.holdout_mask(shuffled, cfg), index=shuffled.customer_id)
    assert m1.equals(m2.loc[m1.index]) and 0.15 < m1.mean() < 0.25


@pytest.mark.parametrize("estimator", ["hist_gradient_boosting", "random_forest", "logistic_regression"])
def test_onnx_matches_sklearn_on_the_holdout(settings, estimator):
    cfg = ModelConfig.model_validate({**settings.models["churn"].model_dump(), "estimator": {"name": estimator}})
    df = _data(settings, 2500, seed=4)
    mask = training.holdout_mask(df, cfg)
    pipe = training.fit(df[~mask], cfg)
    sess = export.session(export.export_onnx(pipe, cfg))
    assert export.parity(pipe, sess, df[mask], cfg) <= 1e-4
    assert [o.name for o in sess.get_outputs()] == ["label", "probabilities"]  # ZipMap off
    types = {i.name: i.type for i in sess.get_inputs()}
    assert types["tenure_months"] == "tensor(float)" and types["region"] == "tensor(string)"


def test_unseen_category_and_missing_values_are_served(settings):
    cfg = settings.models["churn"]
    df = _data(settings, 1500)
    pipe = training.fit(df, cfg)
    sess = export.session(export.export_onnx(pipe, cfg))
    odd = df.head(3).copy()
    odd["plan"] = ["platinum", None, "basic"]
    odd["usage_gb"] = [np.nan, 1.0, np.nan]
    proba = export.onnx_predict(sess, odd, cfg)
    assert proba.shape == (3, 2) and np.allclose(proba.sum(axis=1), 1, atol=1e-5)
    assert export.parity(pipe, sess, odd, cfg) <= 1e-4


def test_regression_pipeline_exports(tmp_path):
    cfg = ModelConfig.model_validate(
        {
            "landing_dir": "x",
            "target": "monthly_charges",
            "task": "regression",
            "features": {"tenure_months": {"type": "numeric"}, "plan": {"type": "categorical"}},
        }
    )
    df = generate_batch(1500, seed=5)
    pipe = training.fit(df, cfg)
    m = training.evaluate(pipe, df, cfg)
    assert set(m) == {"rmse", "mae", "r2"} and m["rmse"] > 0
    sess = export.session(export.export_onnx(pipe, cfg))
    assert export.parity(pipe, sess, df, cfg) <= 1e-4


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_hgb_splits_between_adjacent_float32_values_match_onnx(task):
    """A feature whose values are adjacent float32 numbers: HistGradientBoosting's float64
    midpoint thresholds round onto a data value in ONNX's float32 trees. Before
    ``training.float32_thresholds`` 6,831 of 20,000 rows were off, up to 0.81 on P(y)."""
    rng = np.random.default_rng(0)
    n = 20_000
    ladder = [np.float32(1000.0)]
    for _ in range(40):
        ladder.append(np.nextafter(ladder[-1], np.float32(2000)))
    step = rng.integers(0, 40, n)
    y = ((step >= 20) ^ (rng.random(n) < 0.1)).astype(int)
    df = pd.DataFrame(
        {
            "x0": np.array(ladder, np.float32)[step].astype(np.float64),
            "x1": rng.normal(size=n),
            "y": y if task == "classification" else y * 1000.0 + step,
        }
    )
    cfg = ModelConfig.model_validate(
        {
            "landing_dir": "u",
            "target": "y",
            "task": task,
            "features": {"x0": {"type": "numeric"}, "x1": {"type": "numeric"}},
            "estimator": {"name": "hist_gradient_boosting"},
        }
    )
    pipe = training.fit(df, cfg)
    x = training.model_inputs(df, cfg)
    ref = pipe.predict_proba(x)[:, 1] if task == "classification" else pipe.predict(x)
    got = export.onnx_predict(export.session(export.export_onnx(pipe, cfg)), df, cfg)
    got = got[:, 1] if task == "classification" else got
    off = np.abs(ref - got) > 1e-4 * max(1.0, float(np.abs(ref).max()))
    assert off.sum() == 0, f"{off.sum()} rows differ, e.g. sklearn {ref[off][:3]} vs ONNX {got[off][:3]}"


ODD_NAMES = ["tenure months", "plan/type", "x.y", "x_y", "région (€)", "3rd"]


def _odd_frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "tenure months": rng.integers(0, 72, n).astype(float),
            "plan/type": rng.choice(["basic", "plus", "pro"], n),
            "x.y": rng.normal(size=n),
            "x_y": rng.normal(size=n),  # collides with "x.y" once sanitized
            "région (€)": rng.choice(["nord", "sud"], n),
            "3rd": rng.normal(size=n),
        }
    )
    score = df["x.y"] - df["tenure months"] / 36 + (df["plan/type"] == "pro") + 0.5 * df["x_y"]
    df["churned"] = (score + rng.normal(0, 0.5, n) > 0).astype(int)
    return df


def odd_names_config(estimator: str = "hist_gradient_boosting") -> ModelConfig:
    cats = {"plan/type", "région (€)"}
    return ModelConfig.model_validate(
        {
            "landing_dir": "x",
            "target": "churned",
            "task": "classification",
            "features": {c: {"type": "categorical" if c in cats else "numeric"} for c in ODD_NAMES},
            "estimator": {"name": estimator},
        }
    )


@pytest.mark.parametrize("estimator", ["hist_gradient_boosting", "logistic_regression"])
def test_column_names_as_users_write_them_are_the_onnx_input_names(estimator):
    """Issue 20: skl2onnx sanitised `tenure months` to `tenure_months`, so every feed (the gate's
    onnx_parity, scoring, the endpoint) missed the graph's inputs."""
    cfg = odd_names_config(estimator)
    df = _odd_frame(1500, 7)
    pipe = training.fit(df, cfg)
    sess = export.session(export.export_onnx(pipe, cfg))
    assert [i.name for i in sess.get_inputs()] == ODD_NAMES
    assert export.parity(pipe, sess, df, cfg) <= 1e-4


def test_control_characters_in_a_column_name_reach_the_endpoint_intact():
    """Re-run of issue 20's attack round: a feature named `a\\x00b` trained and passed the gate,
    but pandas' to_json cut the smoke rows' key to `a`, so the endpoint refused the champion
    ("smoke_rows do not fit the schema: missing column") and answered 503 for good."""
    import json

    from ml_platform.core.frames import json_records
    from ml_platform.serving.model import LoadedModel

    rng = np.random.default_rng(0)
    names = ["a\x00b", "c\nd", "e\tf"]
    df = pd.DataFrame(
        {"a\x00b": rng.normal(size=600), "c\nd": rng.normal(size=600), "e\tf": rng.choice(["u", "v"], 600)}
    )
    df["y"] = (df["a\x00b"] + rng.normal(0, 0.5, 600) > 0).astype(int)
    cfg = ModelConfig.model_validate(
        {
            "landing_dir": "x",
            "target": "y",
            "task": "classification",
            "features": {"a\x00b": {"type": "numeric"}, "c\nd": {"type": "numeric"}, "e\tf": {"type": "categorical"}},
        }
    )
    pipe = training.fit(df, cfg)
    smoke = json_records(df[names].head(3))
    assert [list(r) for r in smoke] == [names] * 3
    meta = json.loads(json.dumps(export.serving_metadata(pipe, cfg, name="m", version=1, metrics={}, smoke_rows=smoke)))
    LoadedModel("m", 1, export.export_onnx(pipe, cfg), meta).validate()  # raises RejectedModel if refused
