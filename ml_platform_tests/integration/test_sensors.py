"""Sensors evaluated against a real instance: what they request, and what they refuse to request."""

import os
import time

import dagster as dg
from dagster._core.utils import make_new_run_id

from ml_platform.control.chain import Chain
from ml_platform.control.decisions import record_retrain_decision
from ml_platform.core import catalog
from ml_platform.core.simulate import write_batches
from ml_platform.defs.definitions import build_definitions
from ml_platform_tests.conftest import dagster_instance


def _sensor(defs, name):
    return defs.resolve_sensor_def(name)


def test_landing_sensor_requests_each_settled_file_once(settings, tmp_path):
    defs = build_definitions(settings)
    sensor = _sensor(defs, "churn_landing_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert sensor.minimum_interval_seconds <= 15
    landing = settings.landing_dir("churn")
    old = write_batches(landing, 2, rows=50)
    for i, p in enumerate(old):
        t = time.time() - 100 + i
        os.utime(p, (t, t))
    with dagster_instance() as instance:
        ctx = dg.build_sensor_context(instance=instance, definitions=defs)
        (landing / "batch-9999.csv").write_text("customer_id,event_time\n1,")  # being written right now
        result = sensor(ctx)
        # Two pending files: one run over the range of their two partitions (one per file).
        (run,) = result.run_requests
        keys = result.dynamic_partitions_requests[0].partition_keys
        assert [k.split("-")[0] + "-" + k.split("-")[1] for k in keys] == ["batch-0000.csv", "batch-0001.csv"]
        assert run.run_key.startswith("ingest-")
        assert (run.tags["dagster/asset_partition_range_start"], run.tags["dagster/asset_partition_range_end"]) == (
            keys[0],
            keys[1],
        )
        files = run.run_config["ops"]["churn__raw_batch"]["config"]["files"]
        assert files[keys[0]]["path"] == str(old[0])

        # Once ingested (catalog knows the content), the same files are not requested again,
        # not even under another name.
        for k in keys:
            catalog.update_record(settings.model_dir("churn"), k, sha256=files[k]["sha256"], status="validated")
        instance.add_dynamic_partitions("churn_batches", keys)
        os.rename(old[0], landing / "renamed-copy.csv")
        ctx2 = dg.build_sensor_context(instance=instance, cursor=result.cursor, definitions=defs)
        again = sensor(ctx2)
        assert not again.run_requests


def test_retrain_sensor_applies_the_policy_once_per_batch(settings):
    defs = build_definitions(settings)
    sensor = _sensor(defs, "churn_retrain_sensor")
    mdir = settings.model_dir("churn")
    catalog.update_record(
        mdir,
        "a-1",
        arrival=1,
        status="validated",
        sha256="a",
        drift={"verdict": "no champion"},
        performance={"skipped": "no champion"},
    )
    catalog.update_record(mdir, "a-2", arrival=1.5, status="validated", sha256="a2")  # ingest died long ago
    catalog.update_record(mdir, "b-2", arrival=2, status="failed", reason="file is empty", sha256="b")
    catalog.update_record(mdir, "c-3", arrival=3, status="raw", sha256="c", ingested_at=time.time())  # still ingesting
    catalog.update_record(mdir, "d-4", arrival=4, status="failed", reason="empty", sha256="d")  # waits for c-3
    with dagster_instance() as instance:
        result = sensor(dg.build_sensor_context(instance=instance, definitions=defs))
        assert [r.run_key for r in result.run_requests] == ["train-a-1"]
        assert result.run_requests[0].tags["ml_platform/trigger"] == "arrival"
        assert "no champion yet" in result.run_requests[0].tags["ml_platform/reason"]
        obs = {e.partition: e.metadata for e in result.asset_events}
        assert obs["a-1"]["retrain"].value is True and obs["b-2"]["retrain"].value is False
        assert catalog.read_record(mdir, "b-2").decision.retrain is False
        assert catalog.read_record(mdir, "c-3").decision is None
        assert catalog.read_record(mdir, "a-2").decision is None
        assert catalog.read_record(mdir, "d-4").decision is None  # decisions keep arrival order
        # The retrain is claimed on the batch at once (no other process decides it again); until
        # its run exists (the tick may have died before submitting it), a tick asks again with
        # the same run_key (deduped).
        claim = catalog.read_record(mdir, "a-1").decision
        assert claim.retrain and claim.claimed_by == "sensor" and claim.run_id is None
        again = sensor(dg.build_sensor_context(instance=instance, definitions=defs))
        assert [r.run_key for r in again.run_requests] == ["train-a-1"]
        run = dg.DagsterRun(job_name="churn_train", run_id=make_new_run_id(), tags=result.run_requests[0].tags)
        instance.add_run(run)  # submitted: a-1 is now in flight
        assert isinstance(sensor(dg.build_sensor_context(instance=instance, definitions=defs)), dg.SkipReason)
        record_retrain_decision(Chain("churn", settings.models["churn"], settings), run.tags, run.run_id)
        assert catalog.read_record(mdir, "a-1").decision.retrain is True  # recorded by the run
        ctx = dg.build_sensor_context(instance=instance, definitions=defs)
        assert isinstance(sensor(ctx), dg.SkipReason)
        # An idle tick does not re-read the records; a new record is decided on the next one.
        idle = sensor(dg.build_sensor_context(instance=instance, cursor=ctx.cursor, definitions=defs))
        assert isinstance(idle, dg.SkipReason) and "no batch record changed" in str(idle.skip_message)
        catalog.update_record(mdir, "c-3", status="failed", reason="unreadable")
        woke = sensor(dg.build_sensor_context(instance=instance, cursor=ctx.cursor, definitions=defs))
        assert {e.partition for e in woke.asset_events} == {"c-3", "d-4"}


def test_definitions_load_with_every_part(settings):
    defs = build_definitions(settings)
    repo = defs.get_repository_def()
    keys = {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()}
    assert keys == {
        f"churn/{a}"
        for a in (
            "raw_batch",
            "validated_batch",
            "batch_predictions",
            "drift_report",
            "champion_performance",
            "training_set",
            "candidate_model",
            "deployed_model",
            "live_drift",
            "payoff",
        )
    }
    checks = {k.name for k in repo.asset_graph.asset_check_keys}
    assert {
        "schema_conformance",
        "null_rates",
        "row_count",
        "min_metric",
        "not_worse_than_champion",
        "onnx_parity",
        "latency_budget",
        "live_traffic_stable",
    } <= checks
    assert {s.name for s in repo.sensor_defs} >= {
        "churn_landing_sensor",
        "churn_retrain_sensor",
        "churn_live_drift_sensor",
    }
    assert defs.resolve_schedule_def("churn_weekly_retrain").cron_schedule == "0 3 * * 1"


def test_weekly_schedule_retrains_only_with_something_new_to_learn(settings):
    """The schedule evaluated against a real instance and catalog: nothing labelled -> skipped
    with the reason; a labelled batch -> a train run tagged schedule; while a train run is in
    flight, skipped; a run that died before building a candidate does not count; once a run
    built a candidate (passed or blocked), skipped until a newer labelled batch is validated."""
    import datetime

    from ml_platform.control.chain import Chain
    from ml_platform.serving.store import ModelStore

    defs = build_definitions(settings)
    sched = defs.resolve_schedule_def("churn_weekly_retrain")
    assert sched.default_status == dg.DefaultScheduleStatus.RUNNING and sched.job_name == "churn_train"
    mdir = settings.model_dir("churn")
    at = datetime.datetime(2026, 11, 23, 3, 0)
    with dagster_instance() as instance:

        def tick():
            return sched.evaluate_tick(dg.build_schedule_context(instance=instance, scheduled_execution_time=at))

        empty = tick()
        assert not empty.run_requests and "no labelled batch to train on yet" in empty.skip_message, empty
        catalog.update_record(
            mdir,
            "a-1",
            arrival=1,
            status="validated",
            sha256="a",
            labelled=True,
            valid_rows=500,
            validated_at=time.time() - 60,
        )
        req = tick().run_requests[0]
        assert (
            req.tags["ml_platform/trigger"] == "schedule"
            and "1 new labelled batch(es), 500 rows" in req.tags["ml_platform/reason"]
        ), req.tags
        run = dg.DagsterRun(
            job_name="churn_train", run_id=make_new_run_id(), tags=req.tags, status=dg.DagsterRunStatus.STARTED
        )
        instance.add_run(run)
        busy = tick()
        assert not busy.run_requests and "already queued or running" in busy.skip_message, busy
        instance.report_run_failed(run)  # died before building a candidate: a-1 was never judged
        assert tick().run_requests, "a run that built no candidate must not count as having learnt a-1"

        # A train run builds a candidate (what the gate then passes or blocks): a-1 is now used.
        key = Chain("churn", settings.models["churn"], settings).key("candidate_model")
        built = dg.materialize([dg.asset(key=key)(lambda: None)], instance=instance)
        assert built.success
        seen = tick()
        assert not seen.run_requests and "it would refit the same rows" in seen.skip_message, seen.skip_message

        # A champion whose training batches cannot be read (no registry entry): the window is
        # unknown, the newest candidate's run still tells what was used, and the tick does not fail.
        store = ModelStore(settings.serving_dir)
        store.publish("churn", 7, b"not-onnx", {"version": 7})
        store.point("churn", 7)
        unknown = tick()
        assert not unknown.run_requests and "refit the same rows" in unknown.skip_message, unknown.skip_message
        catalog.update_record(
            mdir,
            "b-2",
            arrival=2,
            status="validated",
            sha256="b",
            labelled=True,
            valid_rows=300,
            validated_at=time.time() + 1,
        )
        fresh = tick().run_requests[0].tags["ml_platform/reason"]
        assert "1 new labelled batch(es), 300 rows" in fresh and "first: b-2" in fresh, fresh
        assert "champion v7's training batches are unknown" in fresh, fresh
