import pytest

from ml_platform.core.schema import BatchSchemaError, validate_batch
from ml_platform.core.simulate import generate_batch


def test_clean_batch_passes(settings):
    out = validate_batch(generate_batch(300, seed=1), settings.models["churn"])
    assert len(out.valid) == 300 and out.quarantined.empty


def test_garbage_rows_are_quarantined_with_reasons(settings):
    df = generate_batch(50, seed=2)
    df["tenure_months"] = df["tenure_months"].astype(object)
    df.loc[3, "tenure_months"] = "lots"          # not a number
    df.loc[7, "age"] = 400                       # above max
    df.loc[9, "contract"] = "lifetime"           # not an allowed value
    df.loc[11, "churned"] = None                 # missing label
    df.loc[13, "event_time"] = "yesterday-ish"   # not a timestamp
    out = validate_batch(df, settings.models["churn"], source="b.csv")
    reasons = dict(zip(out.quarantined["_row"], out.quarantined["_reason"]))
    assert set(reasons) == {4, 8, 10, 12, 14}  # 1-based data rows
    assert "tenure_months: not a number (got 'lots')" in reasons[4]
    assert "age: <=(130.0)" in reasons[8]
    assert "contract: not an allowed value" in reasons[10]
    assert "churned: missing value" in reasons[12]
    assert "event_time: not a timestamp" in reasons[14]
    assert len(out.valid) == 45 and out.invalid_share == pytest.approx(0.1)


def test_missing_column_fails_the_batch_and_names_the_config_key(settings):
    df = generate_batch(20).drop(columns=["plan"])
    with pytest.raises(BatchSchemaError, match=r"b.csv: missing column\(s\) 'plan' required by models.churn.features.plan"):
        validate_batch(df, settings.models["churn"], model_name="churn", source="b.csv")


def test_integer_codes_and_strings_are_one_category(settings):
    df = generate_batch(6, seed=3)
    df["region"] = [1, "1", 1.0, 2, "2", 3]
    out = validate_batch(df, settings.models["churn"])
    assert out.valid["region"].tolist() == ["1", "1", "1", "2", "2", "3"]
