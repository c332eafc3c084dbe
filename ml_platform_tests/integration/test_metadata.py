"""What a person reads in the UI: tables (shown inline on the asset overview) instead of
markdown, no `nan`/`None`/`-1` placeholders, people's names for internal columns, both the
file's rows and the valid rows. On a real Dagster instance with a real MLflow store."""

import os
import re
import time

import dagster as dg
import pytest

from ml_platform.control.runner import run_pending
from ml_platform.core.simulate import generate_batch
from ml_platform.defs.definitions import build_definitions
from ml_platform.settings import load_settings
from ml_platform_tests.conftest import dagster_instance, write_config

# A placeholder is a whole cell or word: "nan", "None", "-1" (not "financial").
PLACEHOLDER = re.compile(r"(^|[\s(:=,])(nan|NaN|None|-1)($|[\s),.;])")


def _land(landing, name, df, age):
    p = landing / name
    df.to_csv(p, index=False)
    t = time.time() - age
    os.utime(p, (t, t))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("metadata")
    write_config(root, extra="retrain: {policy: on_arrival}\n")
    settings = load_settings(root / "ml_platform.yaml")
    landing = settings.landing_dir("churn")
    good = generate_batch(1500, seed=10)
    good["age"] = good["age"].astype(object)
    good.loc[:4, "age"] = "forty"  # five quarantined rows
    good.loc[5:9, "usage_gb"] = None  # missing cells (null rates, not placeholders)
    _land(landing, "good.csv", good, age=300)
    _land(landing, "drifted.csv", generate_batch(1500, seed=11, start_id=5000, drift=1.0), age=200)
    defs = build_definitions(settings)
    (root / "dagster_home").mkdir()
    with dagster_instance(root / "dagster_home") as instance:
        run_pending(settings, defs, instance, echo=lambda _: None)
        yield {"defs": defs, "instance": instance}


def _events(instance, asset: str) -> list:
    """Materializations of churn/<asset>, oldest first."""
    recs = instance.fetch_materializations(dg.AssetKey(["churn", asset]), limit=100, ascending=True).records
    assert recs, f"churn/{asset} was never materialized"
    return [r.asset_materialization for r in recs]


def _check_metadata(instance, asset: str, check: str) -> dict:
    key = dg.AssetCheckKey(dg.AssetKey(["churn", asset]), check)
    rec = instance.event_log_storage.get_latest_asset_check_execution_by_key([key])[key]
    return rec.event.dagster_event.event_specific_data.metadata


def _texts(value) -> list[str]:
    """Every string a person reads in one metadata value (each cell of a table)."""
    if isinstance(value, dg.TableMetadataValue):
        return [c.name for c in value.schema.columns] + [
            str(v) for r in value.records for v in r.data.values() if v is not None
        ]
    if isinstance(value, (dg.TextMetadataValue, dg.MarkdownMetadataValue)):
        return [value.value]
    return []


def _assert_readable(label: str, metadata: dict) -> None:
    for key, value in metadata.items():
        for text in _texts(value):
            if text.startswith("!["):  # the embedded chart's base64
                continue
            assert not PLACEHOLDER.search(text), f"{label}.{key}: placeholder in {text!r}"
            assert "__score__" not in text, f"{label}.{key}: internal column name in {text!r}"
        if isinstance(value, (dg.IntMetadataValue, dg.FloatMetadataValue)):
            assert value.value != -1, f"{label}.{key} is -1"


def test_validated_batch_shows_file_and_valid_rows_and_a_quarantine_table(world):
    inst = world["instance"]
    meta = _events(inst, "validated_batch")[0].metadata  # good.csv, the first batch
    assert meta["file_rows"].value == 1500 and meta["valid_rows"].value == 1495, meta
    q = meta["quarantined"]
    assert isinstance(q, dg.TableMetadataValue), q
    assert [c.name for c in q.schema.columns] == ["file row", "reason"]
    assert [r.data["file row"] for r in q.records] == [1, 2, 3, 4, 5]
    assert "age: not a number" in q.records[0].data["reason"]
    assert isinstance(meta["label_balance"], dg.TableMetadataValue)
    nulls = _check_metadata(inst, "validated_batch", "null_rates")["null_rates"]
    assert isinstance(nulls, dg.TableMetadataValue)
    rates = {r.data["feature"]: r.data["null rate"] for r in nulls.records}
    assert set(rates) >= {"usage_gb", "age", "plan"} and all(0 <= v <= 1 for v in rates.values()), rates


def test_drift_report_table_and_chart_of_a_drifted_batch(world):
    meta = _events(world["instance"], "drift_report")[-1].metadata  # drifted.csv, judged against v1
    assert meta["drift"].value == "drifted", meta
    assert meta["file_rows"].value == 1500 and meta["rows"].value == 1500
    table = meta["per_feature"]
    assert isinstance(table, dg.TableMetadataValue), table
    names = [c.name for c in table.schema.columns]
    assert names[:3] == ["feature", "drift", "vs threshold"], names
    rows = {r.data["feature"]: r.data for r in table.records}
    assert "model score" in rows and "__score__" not in rows, list(rows)
    assert rows["tenure_months"]["drift"] == "DRIFTED" and "×" in rows["tenure_months"]["vs threshold"]
    assert rows["plan"]["W1 distance"] is None and rows["plan"]["unseen categories"] == 0
    assert table.records[0].data["drift"] == "DRIFTED"  # drifted features first
    assert meta["chart"].value.startswith("![drift per feature](data:image/png;base64,")


def test_no_placeholders_in_what_a_person_reads(world):
    inst = world["instance"]
    for asset in ("raw_batch", "validated_batch", "batch_predictions", "drift_report", "deployed_model"):
        for i, ev in enumerate(_events(inst, asset)):
            _assert_readable(f"{asset}[{i}]", ev.metadata)
    for asset in ("raw_batch", "validated_batch", "batch_predictions"):
        assert not any(
            isinstance(v, dg.MarkdownMetadataValue) and "|" in v.value
            for ev in _events(inst, asset)
            for v in ev.metadata.values()
        ), f"{asset}: markdown table"


def test_first_champion_says_there_was_none_before(world):
    first = _events(world["instance"], "deployed_model")[0].metadata
    assert first["previous_version"].value == "no previous champion"
    moves = first["alias_moves"]
    assert isinstance(moves, dg.TableMetadataValue)
    assert moves.records[-1].data["from"] == "no previous champion"
