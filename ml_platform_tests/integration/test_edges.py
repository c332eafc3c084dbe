"""Bad input at the edges (issue 9), through the real graph on a real Dagster instance and
MLflow store, driven like `ml-platform run`: each case is quarantined or failed with a reason
naming the file or column, the other batches go on, and nothing is deleted."""

import json
import os
import textwrap
import time
import warnings

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from ml_platform.control.chain import Chain
from ml_platform.control.decisions import ingest_tags
from ml_platform.control.runner import run_pending
from ml_platform.control.status import status, to_json
from ml_platform.core import catalog, export
from ml_platform.core.landing import LandingFile, scan_landing
from ml_platform.core.simulate import generate_batch
from ml_platform.defs.definitions import build_definitions
from ml_platform.serving.store import ModelStore
from ml_platform.settings import load_settings
from ml_platform_tests.conftest import DEMO_FEATURES, dagster_instance, land

SECRET = "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY"


def _batch(rows, seed, start_id=0):
    df = generate_batch(rows, seed=seed, start_id=start_id)
    df["autopay"] = np.random.default_rng(seed).random(rows) < 0.5  # a boolean categorical
    return df


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("edges")
    (root / "ml_platform.yaml").write_text(
        textwrap.dedent("""\
        storage_dir: state
        models:
          churn:
            landing_dir: landing
            target: churned
            task: classification
            id_column: customer_id
            timestamp_column: event_time
            validation: {min_rows: 10}
            features:
              autopay: {type: categorical}
        """)
        + DEMO_FEATURES
    )
    (root / "landing").mkdir()
    (root / "outside").mkdir()
    settings = load_settings(root / "ml_platform.yaml")
    landing = settings.landing_dir("churn")

    good = _batch(1500, seed=10)
    good["autopay"] = good["autopay"].map({True: "True", False: "false"})  # CSV spellings vary
    land(landing, "good-1.csv", good, age=900)

    dup = _batch(100, seed=11, start_id=5000)
    dup.insert(2, "age_again", dup["age"])
    land(landing, "dup-column.csv", dup.rename(columns={"age_again": "age"}), age=800)

    lists = pa.Table.from_pandas(_batch(300, seed=12, start_id=6000), preserve_index=False)
    plans = lists.column("plan").to_pylist()
    cells = [[p] if i < 30 else p for i, p in enumerate(plans)]  # 30 list cells, the rest strings
    lists = lists.set_column(
        lists.schema.get_field_index("plan"),
        "plan",
        pa.array([c if isinstance(c, list) else [c] for c in cells], pa.list_(pa.string())),
    )
    land(landing, "lists.parquet", lists, age=700)  # a list column: every row quarantined

    big = _batch(300, seed=13, start_id=7000)
    big.loc[:19, "monthly_charges"] = 1e39
    land(landing, "big-numbers.csv", big, age=600)

    stamps = _batch(300, seed=14, start_id=8000)
    stamps["age"] = pd.Timestamp("2026-01-01") + pd.to_timedelta(np.arange(300), unit="min")
    land(landing, "timestamps.parquet", stamps, age=500)

    bools = _batch(300, seed=15, start_id=9000)
    bools["support_calls"] = bools["support_calls"] > 1
    land(landing, "bools-in-numeric.parquet", bools, age=400)

    land(landing, "secrets.csv", (SECRET + "\nDB_PASSWORD=hunter2\n").encode(), age=300)
    (root / "outside" / "creds.csv").write_text(SECRET + "\n")
    (landing / "passwd.csv").symlink_to("/etc/passwd")
    (landing / "creds.csv").symlink_to(root / "outside" / "creds.csv")

    one_class = _batch(300, seed=16, start_id=10_000)
    one_class["churned"] = 0
    land(landing, "one-class.csv", one_class, age=200)
    land(landing, "same-ids.csv", _batch(300, seed=17, start_id=1000), age=100)  # ids 1000-1299 again

    # A partial raw copy left by an earlier failed ingest of good-1.csv must not be taken for it.
    first = next(f for f in scan_landing(landing, settle_seconds=0) if f.path.name == "good-1.csv")
    chain = Chain("churn", settings.models["churn"], settings)
    stale = chain.raw_dir(first.partition_key) / ".good-1.csv.tmp"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"customer_id,ten")

    defs = build_definitions(settings)
    (root / "dagster_home").mkdir()
    with dagster_instance(root / "dagster_home") as instance:
        lines = []
        summary = run_pending(settings, defs, instance, echo=lines.append)
        yield {
            "settings": settings,
            "defs": defs,
            "instance": instance,
            "root": root,
            "chain": chain,
            "summary": {os.path.basename(o.file): o for o in summary["churn"]},
            "lines": lines,
            "first": first,
        }


def _record(world, name):
    return catalog.read_record(world["chain"].dir, world["summary"][name].partition)


def test_every_regular_file_became_a_batch_and_links_were_refused(world):
    assert sorted(world["summary"]) == sorted(
        [
            "good-1.csv",
            "dup-column.csv",
            "lists.parquet",
            "big-numbers.csv",
            "timestamps.parquet",
            "bools-in-numeric.parquet",
            "secrets.csv",
            "one-class.csv",
            "same-ids.csv",
        ]
    )
    raw = [p.name for p in (world["chain"].dir / "raw").glob("*/*")]
    assert "passwd.csv" not in raw and "creds.csv" not in raw  # never copied into storage
    assert all(os.path.exists(world["root"] / "landing" / n) for n in world["summary"])  # nothing deleted


def test_good_batch_with_booleans_trained_a_champion(world):
    o = world["summary"]["good-1.csv"]
    assert o.status == "validated" and o.train and o.train.deployed, o
    valid = pd.read_parquet(world["chain"].validated_path(o.partition))
    assert set(valid["autopay"]) == {"true", "false"}


def test_partial_raw_copy_was_cleaned_up(world):
    d = world["chain"].raw_dir(world["first"].partition_key)
    assert sorted(p.name for p in d.iterdir()) == ["good-1.csv"]
    assert (d / "good-1.csv").read_bytes() == (world["root"] / "landing" / "good-1.csv").read_bytes()


def test_duplicate_column_fails_naming_it(world):
    o = world["summary"]["dup-column.csv"]
    assert o.status == "failed"
    assert "duplicate column name(s): 'age' (models.churn.features.age) appears 2 times" in o.reason


def test_list_cells_in_a_categorical_are_quarantined(world):
    o = world["summary"]["lists.parquet"]
    assert o.status == "rejected" and o.quarantined_rows == 300 and "100.0% of rows invalid" in o.reason
    q = pd.read_parquet(world["chain"].quarantine_path(o.partition))
    assert q["_reason"].str.startswith("plan: a list is not a category").all()


def test_numbers_beyond_float32_are_quarantined_naming_the_column(world):
    o = world["summary"]["big-numbers.csv"]
    assert o.status == "validated" and o.quarantined_rows == 20 and o.rows == 280
    rec = _record(world, "big-numbers.csv")
    assert all(r.startswith("monthly_charges: too large for a float32") for r in rec.quarantine_reasons)


@pytest.mark.parametrize(
    "name,reason",
    [
        ("timestamps.parquet", "age: a timestamp is not a number"),
        ("bools-in-numeric.parquet", "support_calls: a boolean is not a number"),
    ],
)
def test_wrongly_typed_numeric_columns_are_quarantined(world, name, reason):
    o = world["summary"][name]
    assert o.status == "rejected" and o.quarantined_rows == 300
    assert all(r.startswith(reason) for r in _record(world, name).quarantine_reasons)


def test_secrets_file_fails_without_echoing_its_content(world):
    o = world["summary"]["secrets.csv"]
    assert o.status == "failed" and "missing column(s)" in o.reason and "0 of the 12 configured" in o.reason
    everything = "\n".join(world["lines"]) + to_json(
        status(world["settings"], world["defs"].resources["ml_platform_registry"])
    )
    for rec in catalog.read_records(world["chain"].dir):
        everything += json.dumps(rec.to_dict())
    instance = world["instance"]
    for key in ("raw_batch", "validated_batch"):
        for ev in instance.get_event_records(
            dg.EventRecordsFilter(dg.DagsterEventType.ASSET_MATERIALIZATION, asset_key=dg.AssetKey(["churn", key]))
        ):
            everything += repr(ev.asset_materialization.metadata)
    for ev in instance.get_event_records(dg.EventRecordsFilter(dg.DagsterEventType.ASSET_CHECK_EVALUATION)):
        everything += repr(ev.event_log_entry.dagster_event.event_specific_data)
    assert "AWS_SECRET" not in everything and "hunter2" not in everything and "root:x:" not in everything


def test_a_symlink_given_to_raw_batch_is_refused_not_copied(world):
    """The scan never offers a link; a run tagged with one (or a UI re-run) refuses it too."""
    settings, instance, chain = world["settings"], world["instance"], world["chain"]
    link = settings.landing_dir("churn") / "creds.csv"
    f = LandingFile(link, "0" * 64, time.time(), 0)
    instance.add_dynamic_partitions(chain.partitions.name, [f.partition_key])
    job = world["defs"].resolve_job_def("churn_ingest")
    job.execute_in_process(instance=instance, partition_key=f.partition_key, tags=ingest_tags(f), raise_on_error=False)
    rec = catalog.read_record(chain.dir, f.partition_key)
    assert rec.status == "failed" and rec.refused and "refused: a symbolic link" in rec.reason
    assert not chain.raw_dir(f.partition_key).exists()
    assert "AWS_SECRET" not in json.dumps(rec.to_dict())


def test_single_class_target_is_said_in_the_batch_verdict(world):
    o = world["summary"]["one-class.csv"]
    assert o.status == "validated" and "single class '0' in target churned" in o.reason
    rec = _record(world, "one-class.csv")
    assert rec.single_class == "0" and rec.flags == ["single class '0' in target churned"]
    assert any("single class '0' in target churned" in line for line in world["lines"])


def test_ids_seen_in_earlier_batches_are_counted_not_rejected(world):
    o = world["summary"]["same-ids.csv"]
    assert o.status == "validated" and o.rows == 300
    rec = _record(world, "same-ids.csv")
    assert rec.duplicate_ids == 300 and rec.duplicate_ids_within_batch == 0
    assert "300 id(s) in customer_id already seen in earlier batches" in o.reason
    assert _record(world, "good-1.csv").duplicate_ids == 0
    ev = world["instance"].get_latest_materialization_event(dg.AssetKey(["churn", "validated_batch"]))
    assert ev is not None
    mats = world["instance"].get_event_records(
        dg.EventRecordsFilter(
            dg.DagsterEventType.ASSET_MATERIALIZATION,
            asset_key=dg.AssetKey(["churn", "validated_batch"]),
            asset_partitions=[o.partition],
        )
    )
    assert mats[0].asset_materialization.metadata["duplicate_ids"].value == 300


def test_endpoint_scores_json_true_like_the_batch_path(world):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient
    from ml_platform.serving.app import create_app

    settings = world["settings"]
    store = ModelStore(settings.serving_dir)
    version = store.current("churn")["version"]
    onnx_bytes, meta = store.read("churn", version)
    row = _batch(1, seed=99).drop(columns=["churned", "event_time"]).iloc[0].to_dict()
    row = {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
    cfg = settings.models["churn"]
    sess = export.session(onnx_bytes)
    with TestClient(create_app(settings.serving_dir, ["churn"], poll_seconds=3600)) as client:
        for flag in (True, False):
            body = {"dataframe_records": [{**row, "autopay": flag}]}
            r = client.post(
                "/models/churn/invocations",
                content=json.dumps(body),  # JSON true / false
                headers={"content-type": "application/json"},
            )
            assert r.status_code == 200, r.text
            served = r.json()["predictions"][0]["probabilities"]
            batch = export.onnx_predict(sess, pd.DataFrame([{**row, "autopay": flag}]), cfg)[0]
            assert [served[str(c)] for c in meta["classes"]] == pytest.approx(batch.tolist(), abs=1e-6)
            text = client.post(
                "/models/churn/invocations",
                content=json.dumps({"dataframe_records": [{**row, "autopay": " TRUE " if flag else "False"}]}),
                headers={"content-type": "application/json"},
            ).json()["predictions"][0]["probabilities"]
            assert text == served
            # Open Inference Protocol: a BOOL tensor for the boolean categorical, same answer.
            inputs = [
                {
                    "name": k,
                    "shape": [1],
                    "datatype": "FP64"
                    if isinstance(v, float)
                    else "INT64"
                    if isinstance(v, int) and not isinstance(v, bool)
                    else "BYTES",
                    "data": [v],
                }
                for k, v in row.items()
                if k != "autopay"
            ]
            inputs.append({"name": "autopay", "shape": [1], "datatype": "BOOL", "data": [flag]})
            v2 = client.post("/v2/models/churn/infer", json={"inputs": inputs})
            assert v2.status_code == 200, v2.text
            probs = [o for o in v2.json()["outputs"] if o["name"] == "probabilities"][0]["data"]
            assert probs == pytest.approx(batch.tolist(), abs=1e-6)
        bad = client.post(
            "/models/churn/invocations",
            content=json.dumps({"dataframe_records": [{**row, "support_calls": True}]}),
            headers={"content-type": "application/json"},
        )
        assert bad.status_code == 400 and bad.json()["error"]["field"] == "support_calls"
