import pytest

from ml_platform.core.schema import BatchSchemaError, validate_batch
from ml_platform.core.simulate import generate_batch


def test_clean_batch_passes(settings):
    out = validate_batch(generate_batch(300, seed=1), settings.models["churn"])
    assert len(out.valid) == 300 and out.quarantined.empty


def test_garbage_rows_are_quarantined_with_reasons(settings):
    df = generate_batch(50, seed=2)
    df["tenure_months"] = df["tenure_months"].astype(object)
    df.loc[3, "tenure_months"] = "lots"  # not a number
    df.loc[7, "age"] = 400  # above max
    df.loc[9, "contract"] = "lifetime"  # not an allowed value
    df.loc[11, "churned"] = None  # missing label
    df.loc[13, "event_time"] = "yesterday-ish"  # not a timestamp
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
    with pytest.raises(
        BatchSchemaError, match=r"b.csv: missing column\(s\) 'plan' required by models.churn.features.plan"
    ):
        validate_batch(df, settings.models["churn"], model_name="churn", source="b.csv")


def test_a_header_with_spaces_around_a_name_is_named_in_the_message(settings):
    df = generate_batch(20).rename(columns={"plan": "plan "})
    with pytest.raises(BatchSchemaError, match=r"required by models.churn.features.plan; .* \(it has 'plan ': spaces"):
        validate_batch(df, settings.models["churn"], model_name="churn", source="b.csv")


def test_a_target_header_with_spaces_fails_instead_of_reading_the_batch_as_unlabelled(settings):
    df = generate_batch(20).rename(columns={"churned": " churned"})
    with pytest.raises(BatchSchemaError, match=r"no column 'churned' \(models.churn.target\) \(it has ' churned'"):
        validate_batch(df, settings.models["churn"], model_name="churn", source="b.csv")


def test_a_dg_projects_model_is_named_by_its_defs_yaml():
    """In a dg project the keys are a defs.yaml's attributes, not ml_platform.yaml's models.<name>."""
    from pathlib import Path

    from ml_platform.settings import load_settings

    s = load_settings(Path(__file__).resolve().parents[2] / "examples" / "churn_project")
    keys = s.keys_of("churn")
    assert keys == "src/churn_project/defs/churn/defs.yaml: attributes", keys
    df = generate_batch(20).drop(columns=["plan"])
    with pytest.raises(BatchSchemaError, match=r"required by src/churn_project/defs/churn/defs.yaml: attributes"):
        validate_batch(df, s.models["churn"], keys=keys, source="b.csv")


def test_integer_codes_and_strings_are_one_category(settings):
    df = generate_batch(6, seed=3)
    df["region"] = [1, "1", 1.0, 2, "2", 3]
    out = validate_batch(df, settings.models["churn"])
    assert out.valid["region"].tolist() == ["1", "1", "1", "2", "2", "3"]


# ---- issue 9: bad landing files ----

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from ml_platform.core.landing import read_batch  # noqa: E402


def _csv(tmp_path, df, name="b.csv"):
    p = tmp_path / name
    df.to_csv(p, index=False)
    return read_batch(p)


def test_booleans_in_a_categorical_csv_column_are_true_and_false(settings, tmp_path):
    df = generate_batch(8, seed=4)
    df["plan"] = ["True", "true", "TRUE", "False", "false", " FALSE ", "True", "false"]
    out = validate_batch(_csv(tmp_path, df), settings.models["churn"])
    assert out.valid["plan"].tolist() == ["true", "true", "true", "false", "false", "false", "true", "false"]


def test_booleans_in_a_categorical_parquet_column(settings, tmp_path):
    df = generate_batch(6, seed=4)
    df["plan"] = [True, False, True, None, False, True]
    df.to_parquet(tmp_path / "b.parquet")
    out = validate_batch(read_batch(tmp_path / "b.parquet"), settings.models["churn"])
    assert out.valid["plan"].tolist() == ["true", "false", "true", None, "false", "true"]


def test_strings_are_stripped(settings):
    df = generate_batch(4, seed=4)
    df["contract"] = [" monthly", "annual ", " two_year ", "monthly"]
    out = validate_batch(df, settings.models["churn"])
    assert out.quarantined.empty and out.valid["contract"].tolist() == ["monthly", "annual", "two_year", "monthly"]


def test_booleans_in_a_numeric_column_are_quarantined(settings, tmp_path):
    df = generate_batch(20, seed=5)
    df["usage_gb"] = [True, False] * 10  # a CSV column of True/False is read as bool
    out = validate_batch(_csv(tmp_path, df), settings.models["churn"], source="b.csv")
    assert len(out.quarantined) == 20
    assert out.quarantined["_reason"].str.contains("usage_gb: a boolean is not a number").all()


def test_numbers_beyond_float32_are_quarantined(settings):
    df = generate_batch(10, seed=6)
    df.loc[2, "monthly_charges"] = 1e39
    df.loc[4, "monthly_charges"] = -1e39
    df.loc[6, "usage_gb"] = np.inf
    out = validate_batch(df, settings.models["churn"])
    reasons = dict(zip(out.quarantined["_row"], out.quarantined["_reason"]))
    assert set(reasons) == {3, 5, 7}
    assert reasons[3].startswith("monthly_charges: too large for a float32 (got 1e+39)")
    assert reasons[7].startswith("usage_gb: not a finite number")


def test_datetimes_in_a_numeric_parquet_column_are_quarantined(settings, tmp_path):
    df = generate_batch(10, seed=7)
    df["age"] = pd.Timestamp("2026-01-01") + pd.to_timedelta(np.arange(10), unit="D")
    df.loc[3, "age"] = pd.NaT
    df.to_parquet(tmp_path / "t.parquet")
    out = validate_batch(read_batch(tmp_path / "t.parquet"), settings.models["churn"])
    assert len(out.quarantined) == 9  # not 1.77e18: every timestamp is refused
    assert out.quarantined["_reason"].str.startswith("age: a timestamp is not a number").all()
    assert out.valid["age"].isna().all()


def test_lists_and_structs_in_a_categorical_parquet_column_are_quarantined(settings, tmp_path):
    df = generate_batch(6, seed=8)
    t = pa.Table.from_pandas(df, preserve_index=False)
    i = t.schema.get_field_index("plan")
    lists = pa.array([["a"], None, ["b", "c"], [], ["a"], ["a"]], type=pa.list_(pa.string()))
    structs = pa.array([{"k": "a"}] * 6)
    pq.write_table(t.set_column(i, "plan", lists), tmp_path / "lists.parquet")
    pq.write_table(t.set_column(i, "plan", structs), tmp_path / "structs.parquet")
    cfg = settings.models["churn"]
    out = validate_batch(read_batch(tmp_path / "lists.parquet"), cfg)
    assert out.quarantined["_row"].tolist() == [1, 3, 4, 5, 6] and out.valid["plan"].tolist() == [None]
    assert out.quarantined["_reason"].str.startswith("plan: a list is not a category").all()
    out = validate_batch(read_batch(tmp_path / "structs.parquet"), cfg)
    assert len(out.quarantined) == 6 and out.quarantined["_reason"].str.contains("plan: a mapping").all()


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_configured_column_twice_fails_the_batch_naming_it(settings, tmp_path, fmt):
    df = generate_batch(10, seed=9)
    df.insert(3, "age_2", df["age"])
    df = df.rename(columns={"age_2": "age"})
    p = tmp_path / f"dup.{fmt}"
    if fmt == "csv":
        df.to_csv(p, index=False)
    else:
        pq.write_table(
            pa.Table.from_arrays([pa.array(df.iloc[:, j]) for j in range(df.shape[1])], names=list(df.columns)), p
        )
    read = read_batch(p)
    assert read.attrs["duplicate_columns"] == {"age": 2} and "age.1" in read.columns
    with pytest.raises(
        BatchSchemaError,
        match=r"dup\.\w+: duplicate column name\(s\): 'age' "
        r"\(models.churn.features.age\) appears 2 times",
    ):
        validate_batch(read, settings.models["churn"], model_name="churn", source=p.name)


def test_an_unconfigured_column_twice_is_ignored(settings, tmp_path):
    df = generate_batch(10, seed=9)
    df["note"], df["note2"] = "a", "b"
    p = tmp_path / "d.csv"
    df.rename(columns={"note2": "note"}).to_csv(p, index=False)
    assert len(validate_batch(read_batch(p), settings.models["churn"]).valid) == 10


def test_a_file_that_is_not_a_batch_is_not_echoed(settings, tmp_path):
    p = tmp_path / "secrets.csv"
    p.write_text("AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG\nDB_PASSWORD=hunter2\n")
    with pytest.raises(BatchSchemaError) as e:
        validate_batch(read_batch(p), settings.models["churn"], model_name="churn", source="secrets.csv")
    msg = str(e.value)
    assert "AWS_SECRET" not in msg and "wJalr" not in msg and "hunter2" not in msg
    assert "the file has 1 column(s), 0 of the 11 configured" in msg


def test_single_class_target_is_flagged(settings):
    df = generate_batch(30, seed=10)
    df["churned"] = 0
    out = validate_batch(df, settings.models["churn"])
    assert out.single_class == "0" and out.flags == ["single class '0' in target churned"]
    assert validate_batch(generate_batch(200, seed=10), settings.models["churn"]).flags == []


def test_quarantine_reasons_cut_long_values_short(settings):
    df = generate_batch(3, seed=11)
    df["tenure_months"] = df["tenure_months"].astype(object)
    df.loc[0, "tenure_months"] = "x" * 500
    reason = validate_batch(df, settings.models["churn"]).quarantined["_reason"][0]
    assert reason.startswith("tenure_months: not a number (got 'xxx") and len(reason) < 100


@pytest.mark.parametrize("declared", [False, True])
def test_a_label_outside_the_targets_classes_is_quarantined_naming_it(settings, declared):
    """Issue 20: `churned = 2` on 30 rows of a 0/1 model validated as all-valid, and every later
    candidate was a 3-class model the gate refused. The classes are declared (`target_values`)
    or the champion's; a label outside them costs its row, named."""
    cfg = settings.models["churn"]
    if declared:
        cfg = cfg.model_copy(update={"target_values": [0, 1]})
    df = generate_batch(300, seed=5)
    df.loc[:29, "churned"] = 2
    df["churned"] = df["churned"].astype(object)
    df.loc[40, "churned"] = "maybe"
    df.loc[41, "churned"] = 1.0  # the class 1, written otherwise: kept
    df.loc[42, "churned"] = " 0"  # the class 0, padded: kept
    out = validate_batch(df, cfg, model_name="churn", source="b.csv", classes=None if declared else [0, 1])
    reasons = dict(zip(out.quarantined["_row"], out.quarantined["_reason"]))
    assert sorted(reasons) == [*range(1, 31), 41]
    assert reasons[1] == "churned: not a class of models.churn.target (0, 1) (got 2)"
    assert reasons[41] == "churned: not a class of models.churn.target (0, 1) (got 'maybe')"
    assert len(out.valid) == 269 and set(out.valid["churned"]) == {"0", "1"}


def test_labels_of_another_vocabulary_fail_the_batch_naming_them(settings):
    df = generate_batch(200, seed=6)
    df["churned"] = df["churned"].map({0: "stay", 1: "leave"})
    with pytest.raises(BatchSchemaError) as e:
        validate_batch(df, settings.models["churn"], model_name="churn", source="b.csv", classes=[0, 1])
    msg = str(e.value)
    assert msg.startswith("b.csv: 200 of 200 labels in 'churned' (models.churn.target) are not its classes 0, 1")
    assert "'stay' (" in msg and "'leave' (" in msg and "models.churn.target_values" in msg


@pytest.mark.parametrize("declared", [False, True])
def test_yes_no_and_true_false_labels_of_a_0_1_target_are_mapped(settings, declared):
    """D16: yes/true/y/t -> 1 and no/false/n/f -> 0 (any case, booleans too) when the target's
    classes are 0 and 1, declared or the champion's; the validated rows hold 0/1 for every later path."""
    cfg = settings.models["churn"]
    if declared:
        cfg = cfg.model_copy(update={"target_values": [0, 1]})
    df = generate_batch(12, seed=8)
    words = ["yes", "No", "TRUE", "false", "y", "N", "t", "F", True, False, 1, "0"]
    df["churned"] = pd.Series(words, dtype=object)
    out = validate_batch(df, cfg, model_name="churn", source="b.csv", classes=None if declared else [0, 1])
    assert out.quarantined.empty
    assert [str(v) for v in out.valid["churned"]] == ["1", "0", "1", "0", "1", "0", "1", "0", "1", "0", "1", "0"]


@pytest.mark.parametrize("classes", [None, ["no", "yes"], [0, 1, 2]])
def test_word_labels_are_mapped_only_for_a_0_1_target(settings, classes):
    df = generate_batch(4, seed=9)
    df["churned"] = pd.Series(["yes", "no", "yes", "no"], dtype=object)
    if classes == [0, 1, 2]:
        with pytest.raises(BatchSchemaError, match="are not its classes 0, 1, 2"):
            validate_batch(df, settings.models["churn"], model_name="churn", classes=classes)
        return
    out = validate_batch(df, settings.models["churn"], model_name="churn", classes=classes)
    assert list(out.valid["churned"]) == ["yes", "no", "yes", "no"]


def test_without_known_classes_any_label_is_kept(settings):
    df = generate_batch(100, seed=7)
    df.loc[:4, "churned"] = 2
    assert len(validate_batch(df, settings.models["churn"]).valid) == 100
