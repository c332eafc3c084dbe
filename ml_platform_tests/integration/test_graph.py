"""The whole graph on a real Dagster instance with a real MLflow store, driven like `ml-platform run`."""

import json
import os

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from ml_platform.control.operator_actions import rollback
from ml_platform.control.promotion import PromotionError
from ml_platform.control.runner import run_pending
from ml_platform.control.status import status
from ml_platform.core.simulate import generate_batch
from ml_platform.defs.definitions import build_definitions
from ml_platform.serving.store import ModelStore
from ml_platform.settings import load_settings
from ml_platform_tests.conftest import dagster_instance, land, write_config


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("graph")
    write_config(root, extra="training: {window_batches: 1}\nretrain: {policy: on_arrival}\n")
    settings = load_settings(root / "ml_platform.yaml")
    landing = settings.landing_dir("churn")
    garbage = generate_batch(1500, seed=11, start_id=10_000)
    garbage["age"] = garbage["age"].astype(object)
    garbage.loc[:29, "age"] = "forty"
    truncated = generate_batch(300, seed=12)
    truncated.to_parquet(root / "full.parquet")
    land(landing, "good-1.csv", generate_batch(1500, seed=10), age=700)
    land(landing, "empty.csv", b"", age=600)
    land(landing, "garbage-rows.csv", garbage, age=500)
    land(landing, "missing-column.csv", generate_batch(200, seed=13).drop(columns=["contract"]), age=400)
    land(landing, "truncated.parquet", (root / "full.parquet").read_bytes()[:2000], age=300)
    land(landing, "notes.json", b'{"hello": "world"}', age=200)
    land(landing, "good-2.parquet", generate_batch(1500, seed=14, start_id=20_000), age=100)
    defs = build_definitions(settings)
    (root / "dagster_home").mkdir()
    with dagster_instance(root / "dagster_home") as instance:
        lines = []
        summary = run_pending(settings, defs, instance, echo=lines.append)
        yield {
            "settings": settings,
            "defs": defs,
            "instance": instance,
            "summary": summary["churn"],
            "lines": lines,
            "root": root,
        }


def test_every_file_became_a_batch_in_arrival_order(world):
    files = [os.path.basename(o.file) for o in world["summary"]]
    assert files == [
        "good-1.csv",
        "empty.csv",
        "garbage-rows.csv",
        "missing-column.csv",
        "truncated.parquet",
        "notes.json",
        "good-2.parquet",
    ]


def test_bad_files_fail_with_reasons_and_others_go_on(world):
    by_file = {os.path.basename(o.file): o for o in world["summary"]}
    assert by_file["empty.csv"].status == "failed" and "file is empty" in by_file["empty.csv"].reason
    assert "missing column(s) 'contract'" in by_file["missing-column.csv"].reason
    assert "models.churn.features.contract" in by_file["missing-column.csv"].reason
    assert "cannot be read as parquet" in by_file["truncated.parquet"].reason
    assert "unsupported file type '.json'" in by_file["notes.json"].reason
    g = by_file["garbage-rows.csv"]
    assert g.status == "validated" and g.quarantined_rows == 30 and g.rows == 1470
    assert by_file["good-2.parquet"].status == "validated"


def test_quarantined_rows_are_stored_with_reasons(world):
    s = world["settings"]
    part = next(o.partition for o in world["summary"] if o.file.endswith("garbage-rows.csv"))
    q = pd.read_parquet(s.model_dir("churn") / "quarantine" / f"{part}.parquet")
    assert len(q) == 30 and q["_row"].tolist() == list(range(1, 31))
    assert q["_reason"].str.contains("age: not a number \\(got 'forty'\\)").all()


def test_raw_copies_survive_deleting_the_landing_zone(world):
    s = world["settings"]
    for o in world["summary"]:
        os.remove(o.file)
    raw = sorted(p.name for p in (s.model_dir("churn") / "raw").glob("*/*"))
    assert len(raw) == 7 and "empty.csv" in raw and "good-2.parquet" in raw


def test_each_good_batch_made_a_gated_deployed_champion(world):
    trained = [o.train for o in world["summary"] if o.train]
    assert [t.version for t in trained] == [1, 2, 3]
    for t in trained:
        assert t.deployed, t
        assert {c for c, _, _ in t.gate} == {
            "min_metric",
            "not_worse_than_champion",
            "per_slice",
            "onnx_parity",
            "latency_budget",
        }
        assert all(passed for _, passed, _ in t.gate)
    assert trained[0].trigger == "arrival"


def test_serving_store_and_mlflow_alias_agree(world):
    s, registry = world["settings"], world["defs"].resources["ml_platform_registry"]
    assert registry.champion_alias("churn") == 3
    pointer = ModelStore(s.serving_dir).current("churn")
    assert pointer["version"] == 3 and pointer["previous"] == 2
    # MLflow's own tools load the registered sklearn model.
    import mlflow

    mlflow.set_tracking_uri(s.tracking_uri)
    model = mlflow.pyfunc.load_model("models:/churn@champion")
    x = generate_batch(5, seed=99)
    cats = ["plan", "contract", "region", "payment_method"]
    as_str = {c: x[c].astype(str).where(x[c].notna(), None) for c in cats}
    proba = np.asarray(model.predict(x.assign(**as_str)))
    assert proba.shape == (5, 2) and np.allclose(proba.sum(axis=1), 1)
    # Integer codes sent as JSON numbers (what `mlflow models serve` passes on: an object
    # column of ints) are the same category as their strings, as on the endpoint.
    as_json = x.assign(**as_str).assign(region=x["region"].astype(object))
    np.testing.assert_array_equal(np.asarray(model.predict(as_json)), proba)
    # ... and MLflow's model agrees with the ONNX graph the endpoint serves
    from ml_platform.core import export

    onnx_bytes, _ = ModelStore(s.serving_dir).read("churn", 3)
    cfg = s.models["churn"]
    np.testing.assert_allclose(export.onnx_predict(export.session(onnx_bytes), x, cfg), proba, atol=1e-5)


def test_dagster_records_the_story(world):
    inst = world["instance"]
    ev = inst.get_latest_materialization_event(dg.AssetKey(["churn", "deployed_model"]))
    meta = ev.asset_materialization.metadata
    assert meta["served_version"].value == 3 and meta["previous_version"].value == "v2"
    parts = inst.get_dynamic_partitions("churn_batches")
    assert len(parts) == 7
    runs = inst.get_runs(filters=dg.RunsFilter(tags={"ml_platform/trigger": "arrival"}))
    assert len(runs) == 3


def test_status_json_shape(world):
    doc = status(world["settings"], world["defs"].resources["ml_platform_registry"])
    json.dumps(doc)
    m = doc["models"]["churn"]
    assert doc["tracking_uri"].startswith("sqlite:///")
    assert m["champion"]["version"] == 3 and "roc_auc" in m["champion"]["metrics"]
    assert [v["version"] for v in m["versions"]] == [1, 2, 3]
    v = m["versions"][0]
    assert set(v) >= {"version", "gate_passed", "promoted", "reasons", "trigger"}
    assert v["gate_passed"] is True and v["promoted"] is True and v["trigger"] == "arrival"
    assert len(v["reasons"]) == 5
    b = {x["file"].split("/")[-1]: x for x in m["batches"]}
    assert b["empty.csv"]["status"] == "failed" and b["garbage-rows.csv"]["quarantined_rows"] == 30
    assert set(b["good-1.csv"]) >= {"partition", "file", "rows", "quarantined_rows", "status"}


def test_champion_performance_shows_the_concept_check(world):
    """A labelled batch is checked against the serving champion's calibration: the p-value and
    the reliability table (expected vs observed share per score bin) in the UI, the figures on
    the batch record (status). The demo's stable batches keep their concept."""
    mats = world["instance"].get_event_records(
        dg.EventRecordsFilter(
            dg.DagsterEventType.ASSET_MATERIALIZATION, asset_key=dg.AssetKey(["churn", "champion_performance"])
        )
    )
    metas = [m.asset_materialization.metadata for m in mats]
    checked = [m for m in metas if "concept_p_value" in m]
    assert checked, [sorted(m) for m in metas]
    md = checked[-1]
    assert md["concept_moved"].value is False and 0.001 <= md["concept_p_value"].value <= 1, md
    rows = md["concept_bins"].value.records
    assert len(rows) >= 3 and {"champion score", "rows", "z"} <= set(rows[0].data), rows[0].data
    doc = status(world["settings"], world["defs"].resources["ml_platform_registry"])
    concepts = [(b.get("performance") or {}).get("concept") for b in doc["models"]["churn"]["batches"]]
    assert any(c and c["bins"] and not c["significant"] for c in concepts), concepts


def test_a_much_worse_candidate_is_blocked_and_the_champion_stays(world):
    s, defs, inst = world["settings"], world["defs"], world["instance"]
    bad = generate_batch(1500, seed=15, start_id=30_000)
    bad["churned"] = np.random.default_rng(0).permutation(bad["churned"].to_numpy())
    land(s.landing_dir("churn"), "shuffled.csv", bad, age=10)
    out = run_pending(s, defs, inst, echo=lambda *_: None)["churn"]
    t = out[0].train
    assert t.version == 4 and not t.deployed
    verdicts = {c: p for c, p, _ in t.gate}
    # The holdout is the shuffled batch: both models are at chance there, so the fair paired
    # comparison need not tell them apart; the floor blocks it.
    assert verdicts["min_metric"] is False, t.gate
    assert "rows neither trained on" in dict((c, r) for c, _, r in t.gate)["not_worse_than_champion"], t.gate
    assert defs.resources["ml_platform_registry"].champion_alias("churn") == 3
    assert ModelStore(s.serving_dir).current("churn")["version"] == 3
    v4 = status(s, defs.resources["ml_platform_registry"])["models"]["churn"]["versions"][-1]
    assert v4["gate_passed"] is False and v4["promoted"] is False
    assert any("min_metric: roc_auc" in r and "< floor" in r for r in v4["reasons"])


def test_rollback_moves_alias_store_and_audit(world):
    s, registry = world["settings"], world["defs"].resources["ml_platform_registry"]
    with pytest.raises(PromotionError, match="did not pass the gate"):
        rollback(s, registry, None, "churn", to_version=4)
    p = rollback(s, registry, None, "churn", to_version=1)
    assert (p.previous, p.version) == (3, 1)
    assert registry.champion_alias("churn") == 1
    assert ModelStore(s.serving_dir).current("churn")["version"] == 1
    audit = status(s, registry)["models"]["churn"]["audit"]
    assert audit[-1]["from"] == 3 and audit[-1]["to"] == 1 and audit[-1]["actor"] == "cli"
    assert (
        "roc_auc" in audit[-1]["gate"]["min_metric"] and audit[-1]["kind"] == "rollback"
    )  # the target's gate figures travel along
    with pytest.raises(PromotionError, match="no earlier version"):
        rollback(s, registry, None, "churn")  # v1 is the oldest
    assert rollback(s, registry, None, "churn", to_version=3).version == 3  # roll forward again
    assert rollback(s, registry, None, "churn").version == 2  # default: newest gate-passed below the champion


def test_rollback_job_records_the_move_in_dagster(world):
    defs, inst = world["defs"], world["instance"]
    job = defs.resolve_job_def("churn_rollback")
    res = job.execute_in_process(
        instance=inst, run_config={"ops": {"churn_rollback_champion": {"config": {"to_version": 3}}}}
    )
    assert res.success
    assert defs.resources["ml_platform_registry"].champion_alias("churn") == 3
    ev = inst.get_latest_materialization_event(dg.AssetKey(["churn", "deployed_model"]))
    meta = ev.asset_materialization.metadata
    moves = meta["alias_moves"]
    assert isinstance(moves, dg.TableMetadataValue), moves  # a table, shown inline in the UI
    assert meta["served_version"].value == 3 and moves.records[0].data["by"].startswith("dagster run")
    bad = job.execute_in_process(
        instance=inst,
        raise_on_error=False,
        run_config={"ops": {"churn_rollback_champion": {"config": {"to_version": 4}}}},
    )
    assert not bad.success  # v4 failed the gate: refusing is the outcome


def _send_live_traffic(settings, frame):
    """Score ``frame`` through a real (in-process) endpoint that writes the live sample."""
    import warnings

    from ml_platform.serving.app import create_app

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient
    cfg = settings.models["churn"]
    cols = [cfg.id_column, *cfg.features]
    app = create_app(
        settings.serving_dir,
        ["churn"],
        sample_dir=settings.live_samples_dir,
        sample_flush_seconds=3600,
        poll_seconds=3600,
    )
    with TestClient(app) as c:  # the sample is written on shutdown
        for i in range(0, len(frame), 250):
            part = frame.iloc[i : i + 250][cols]
            body = {"dataframe_split": {"columns": cols, "data": json.loads(part.to_json(orient="values"))}}
            assert c.post("/models/churn/invocations", json=body).status_code == 200


def test_live_drift_watches_what_the_endpoint_scores(world):
    s, defs, inst = world["settings"], world["defs"], world["instance"]
    sensor = defs.resolve_sensor_def("churn_live_drift_sensor")
    job = defs.resolve_job_def("churn_live_drift")
    assert isinstance(sensor(dg.build_sensor_context(instance=inst, definitions=defs)), dg.SkipReason)

    def check_run(cursor):
        ctx = dg.build_sensor_context(instance=inst, cursor=cursor, definitions=defs)
        req = sensor(ctx)
        assert isinstance(req, dg.RunRequest), req
        assert job.execute_in_process(instance=inst, tags=req.tags).success
        ev = inst.get_latest_materialization_event(dg.AssetKey(["churn", "live_drift"]))
        check = inst.event_log_storage.get_latest_asset_check_execution_by_key(
            [dg.AssetCheckKey(dg.AssetKey(["churn", "live_drift"]), "live_traffic_stable")]
        )
        return ctx.cursor, ev.asset_materialization.metadata, list(check.values())[0]

    _send_live_traffic(s, generate_batch(1200, seed=40, start_id=50_000))
    cursor, meta, check = check_run(None)
    assert meta["drift"].value == "stable" and meta["rows"].value == 1200, meta
    # the only performance figure live traffic has: the CBPE estimate, near the holdout on stable traffic
    assert meta["estimated_metric"].value == "roc_auc", meta
    assert abs(meta["estimated_value"].value - meta["holdout_baseline"].value) < 0.05, meta
    assert meta["estimated_ci_low"].value <= meta["estimated_value"].value <= meta["estimated_ci_high"].value
    assert check.status.value == "SUCCEEDED"
    assert isinstance(
        sensor(dg.build_sensor_context(instance=inst, cursor=cursor, definitions=defs)), dg.SkipReason
    )  # nothing new: no run
    _send_live_traffic(s, generate_batch(3000, seed=41, start_id=60_000, drift=1.0))
    _, meta, check = check_run(cursor)
    assert meta["drift"].value == "drifted" and meta["rows"].value == 4200
    assert "per_feature" in meta and "chart" in meta
    assert check.status.value == "FAILED" and check.evaluation.severity == dg.AssetCheckSeverity.WARN
    live = status(s, defs.resources["ml_platform_registry"])["models"]["churn"]["live_drift"]
    assert live["verdict"] == "drifted" and "tenure_months" in live["drifted_features"]
    assert live["estimate"]["method"] == "cbpe" and live["estimate"]["rows"] == 4200, live["estimate"]
