"""One typing rule (serving/values.py) for batch validation, training and the endpoint."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from ml_platform.core import export, training
from ml_platform.core.frames import MISSING, category_column, numeric_column
from ml_platform.core.schema import validate_batch
from ml_platform.core.values import InvalidValue, category, number
from ml_platform.serving.requests import RequestError, Schema
from ml_platform.settings import ModelConfig


@pytest.mark.parametrize(
    "value,expected",
    [
        ("basic", "basic"),
        ("  basic ", "basic"),
        ("", None),
        ("   ", None),
        (None, None),
        (float("nan"), None),
        (True, "true"),
        (False, "false"),
        (np.bool_(True), "true"),
        ("True", "true"),
        ("TRUE", "true"),
        ("false", "false"),
        (" False ", "false"),
        ("truth", "truth"),
        (3, "3"),
        (3.0, "3"),
        ("3", "3"),
        (np.int64(3), "3"),
        (np.float32(3.0), "3"),
        (2.5, "2.5"),
        (b"pro", "pro"),
        (pd.NA, None),
        (pd.NaT, None),
    ],
)
def test_category_rule(value, expected):
    assert category(value) == expected


@pytest.mark.parametrize("value", [[1, 2], {"a": 1}, np.array([1, 2]), (1,), b"\xff\xfe"])
def test_containers_are_not_categories(value):
    with pytest.raises(InvalidValue):
        category(value)


@pytest.mark.parametrize(
    "value,text,expected",
    [
        (3, False, 3.0),
        (2.5, False, 2.5),
        (None, False, None),
        (float("nan"), False, None),
        (" 3.5 ", True, 3.5),
        ("", True, None),
        (3.4e38, False, 3.4e38),
    ],
)
def test_number_rule(value, text, expected):
    assert number(value, text=text) == expected


@pytest.mark.parametrize(
    "value,text,why",
    [
        (True, False, "a boolean is not a number"),
        (np.bool_(False), True, "a boolean is not a number"),
        (1e39, False, "too large for a float32"),
        (10**400, False, "too large for a float32"),
        (float("inf"), False, "not a finite number"),
        ("lots", True, "not a number"),
        ("3", False, "a string is not a number"),
        (pd.Timestamp("2024-01-01"), True, "a timestamp is not a number"),
        ([1], True, "a list is not a number"),
        ({"a": 1}, True, "a mapping is not a number"),
    ],
)
def test_invalid_numbers(value, text, why):
    with pytest.raises(InvalidValue, match=why):
        number(value, text=text)


def test_values_module_is_stdlib_only():
    """The endpoint imports it: no numpy, pandas, sklearn, dagster or mlflow."""
    code = (
        "import sys; import ml_platform.core.values; "
        "print(sorted(m for m in ('numpy', 'pandas', 'sklearn', 'dagster', 'mlflow', 'pydantic') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---- the batch path and the endpoint agree value by value ----

CFG = ModelConfig.model_validate(
    {
        "landing_dir": "x",
        "target": "y",
        "task": "classification",
        "features": {
            "num": {"type": "numeric", "nullable": True},
            "cat": {"type": "categorical"},
            "flag": {"type": "categorical"},
        },
    }
)
META = {"features": {c: s.model_dump(exclude_none=True) for c, s in CFG.features.items()}, "missing_category": MISSING}

# JSON-able values: (value, typed category or "invalid"), (value, typed number or "invalid")
CATEGORIES = [
    ("pro", "pro"),
    (" pro ", "pro"),
    (True, "true"),
    (False, "false"),
    ("TRUE", "true"),
    (3, "3"),
    (3.0, "3"),
    ("3", "3"),
    (None, MISSING),
    ("", MISSING),
    ([1], "invalid"),
    ({"a": 1}, "invalid"),
    (2.5, "2.5"),
]
NUMBERS = [
    (1.5, 1.5),
    (3, 3.0),
    (None, "nan"),
    (True, "invalid"),
    (False, "invalid"),
    (1e39, "invalid"),
    (-1e39, "invalid"),
    ([1], "invalid"),
]


def _batch_cat(v):
    values, problems = category_column(pd.Series([v, "other"], dtype=object))
    if problems:
        return "invalid"
    return MISSING if values[0] is None else values[0]


def _endpoint_cat(v):
    try:
        parsed = Schema(META).parse_mlflow({"dataframe_records": [{"num": 1.0, "cat": "x", "flag": v}]})
    except RequestError as e:
        assert e.field == "flag"
        return "invalid"
    return parsed.feeds["flag"][0, 0]


@pytest.mark.parametrize("value,expected", CATEGORIES)
def test_categories_agree(value, expected):
    assert _batch_cat(value) == expected
    assert _endpoint_cat(value) == expected


def _batch_num(v):
    values, problems = numeric_column(pd.Series([v, 1.0], dtype=object))
    if problems:
        return "invalid"
    return "nan" if np.isnan(values[0]) else values[0]


def _endpoint_num(v, rows=1):
    try:
        parsed = Schema(META).parse_mlflow({"dataframe_records": [{"num": v, "cat": "x", "flag": "a"}] * rows})
    except RequestError as e:
        assert e.field == "num"
        return "invalid"
    f = float(parsed.feeds["num"][0, 0])
    return "nan" if np.isnan(f) else f


@pytest.mark.parametrize("value,expected", NUMBERS)
def test_numbers_agree(value, expected):
    assert _batch_num(value) == expected
    assert _endpoint_num(value) == expected
    assert _endpoint_num(value, rows=40) == expected  # the vectorised request path too


def test_batch_quarantines_booleans_in_a_numeric_column_naming_it():
    df = pd.DataFrame(
        {
            "num": pd.array([True, False, None] * 10, dtype="boolean"),
            "cat": ["a"] * 30,
            "flag": ["x"] * 30,
            "y": [0, 1] * 15,
        }
    )
    out = validate_batch(df, CFG)
    assert len(out.valid) == 10  # the missing ones
    assert out.quarantined["_reason"].str.startswith("num: a boolean is not a number").all()


# ---- a model trained on a boolean feature answers JSON true like the batch path ----


def _bool_data(n=1500, seed=0):
    rng = np.random.default_rng(seed)
    flag = rng.random(n) < 0.4
    x = rng.normal(size=n)
    y = ((x + 1.5 * flag + rng.normal(scale=0.5, size=n)) > 0.7).astype(int)
    return pd.DataFrame({"x": x, "flag": flag, "plan": rng.choice(["a", "b"], n), "y": y})


def test_model_trained_on_a_boolean_feature_scores_json_true_like_the_batch(tmp_path):
    cfg = ModelConfig.model_validate(
        {
            "landing_dir": "x",
            "target": "y",
            "task": "classification",
            "features": {"x": {"type": "numeric"}, "flag": {"type": "categorical"}, "plan": {"type": "categorical"}},
        }
    )
    path = tmp_path / "b.parquet"
    _bool_data().to_parquet(path)  # a Parquet bool column
    valid = validate_batch(pd.read_parquet(path), cfg).valid
    assert set(valid["flag"]) == {"true", "false"}
    pipe = training.fit(valid, cfg)
    sess = export.session(export.export_onnx(pipe, cfg))
    meta = export.serving_metadata(pipe, cfg, name="m", version=1, metrics={}, smoke_rows=[])
    schema = Schema(json.loads(json.dumps(meta)))  # as the endpoint reads it
    rows = [
        {"x": 0.3, "flag": True, "plan": "a"},
        {"x": 0.3, "flag": False, "plan": "a"},
        {"x": 0.3, "flag": "TRUE", "plan": " a "},
    ]
    batch = export.onnx_predict(sess, pd.DataFrame(rows), cfg)
    for i, row in enumerate(rows):
        body = json.loads(json.dumps({"dataframe_records": [row]}))  # JSON true, not Python True
        served = sess.run(None, schema.parse_mlflow(body).feeds)[1]
        np.testing.assert_allclose(served[0], batch[i], rtol=0, atol=1e-7)
    assert not np.allclose(batch[0], batch[1])  # the flag matters: true and false differ
    np.testing.assert_allclose(batch[0], batch[2])  # "TRUE" and " a " are true and "a"
    v2 = sess.run(
        None,
        schema.parse_mlflow(
            {"dataframe_split": {"columns": ["x", "flag", "plan"], "data": [[0.3, True, "a"]] * 40}}
        ).feeds,
    )[1]
    np.testing.assert_allclose(v2[0], batch[0], atol=1e-7)
