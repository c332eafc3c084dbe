"""A landing zone at scale, on a real instance: a backlog is ingested by runs of several files
(one partition per file), a bad file fails alone, archive mode moves only durable files, a lone
new file still gets its own run at once, and an idle tick over a large zone costs what changed."""

import json
import os
import time

import dagster as dg

from ml_platform.control.arrivals import index_path, landing_tick
from ml_platform.control.chain import Chain
from ml_platform.core import catalog
from ml_platform.core.landing_index import LandingIndex, ZoneCursor
from ml_platform.core.simulate import write_batches
from ml_platform.defs.definitions import build_definitions
from ml_platform.runtime import console
from ml_platform.settings import load_settings
from ml_platform_tests.conftest import dagster_instance, write_config


def _age(paths, seconds=100):
    for i, p in enumerate(paths):
        t = time.time() - seconds + i
        os.utime(p, (t, t))


def _tick(defs, instance, cursor=None):
    sensor = defs.resolve_sensor_def("churn_landing_sensor")
    result = sensor(dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs))
    for req in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
    return result


def _run(defs, instance, request):
    job = defs.resolve_job_def("churn_ingest")
    return job.execute_in_process(
        instance=instance,
        partition_key=request.partition_key,
        tags=request.tags,
        run_config=request.run_config or None,
        raise_on_error=False,
    )


def _checks(instance, run_id, name):
    evs = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
    evals = [e.event_log_entry.dagster_event.event_specific_data for e in evs]
    return {e.partition: e.passed for e in evals if e.check_name == name}


def test_backlog_runs_take_several_files_and_a_bad_file_fails_alone(settings):
    landing = settings.landing_dir("churn")
    files = write_batches(landing, 3, rows=60)
    bad = landing / "batch-0001b.csv"
    bad.write_text("customer_id,unrelated\n1,2\n")  # none of the configured columns
    _age([files[0], files[1], bad, files[2]])
    defs = build_definitions(settings)
    with dagster_instance() as instance:
        result = _tick(defs, instance)
        (request,) = result.run_requests  # four pending files: one run over their range
        keys = instance.get_dynamic_partitions("churn_batches")
        assert request.tags["ml_platform/files"] == "4"
        # its own run config replaces the ingest job's default: it names the platform's console logger itself
        assert request.run_config["loggers"] == console.JOB_CONFIG["loggers"], request.run_config
        assert [k.split("-")[1] for k in keys] == ["0000.csv", "0001.csv", "0001b.csv", "0002.csv"]  # file order

        run = _run(defs, instance, request)
        assert run.success  # the bad file did not fail the run
        recs = {r.partition: r for r in catalog.read_records(settings.model_dir("churn"))}
        bad_key = next(k for k in keys if "0001b" in k)
        assert {k: recs[k].status for k in keys} == {k: "failed" if k == bad_key else "validated" for k in keys}
        assert recs[bad_key].reason
        # Each file has its own materialization (with its own metadata) and its own verdicts.
        for asset in ("raw_batch", "validated_batch", "batch_predictions", "drift_report"):
            done = instance.get_materialized_partitions(dg.AssetKey(["churn", asset]))
            assert done == set(keys), asset
        assert _checks(instance, run.run_id, "schema_conformance") == {k: k != bad_key for k in keys}
        rows = instance.fetch_materializations(dg.AssetKey(["churn", "raw_batch"]), limit=10).records
        by_key = {r.partition_key: r.asset_materialization.metadata["rows"].value for r in rows}
        assert by_key[bad_key] == 1 and all(by_key[k] == 60 for k in keys if k != bad_key)

        # A lone new file: a run of its own, at once (no batch to fill).
        (new,) = write_batches(landing, 1, rows=60, prefix="late", seed=7)
        _age([new], 10)
        again = _tick(defs, instance, result.cursor)
        (single,) = again.run_requests
        assert single.partition_key and single.partition_key.startswith("late-0000.csv")
        assert "dagster/asset_partition_range_start" not in single.tags
        resolved = single.with_resolved_tags_and_config(defs.resolve_job_def("churn_ingest"), [], instance)
        assert resolved.run_config == console.JOB_CONFIG  # no run config of its own: the partition's
        assert _run(defs, instance, single).success


def test_archive_moves_only_durable_files(tmp_path):
    write_config(tmp_path, extra="landing: {archive: true}\n")
    settings = load_settings(tmp_path / "ml_platform.yaml")
    landing = settings.landing_dir("churn")
    files = write_batches(landing, 3, rows=40)
    _age(files)
    defs = build_definitions(settings)
    with dagster_instance() as instance:
        result = _tick(defs, instance)
        (request,) = result.run_requests
        # The third file changes after the sensor saw it: its copy is not its batch, it must stay.
        files[2].write_text(files[2].read_text() + files[2].read_text().splitlines()[1] + "\n")
        run = _run(defs, instance, request)
        assert run.success
        archived = landing / "_archived"
        assert sorted(p.name for p in archived.iterdir()) == ["batch-0000.csv", "batch-0001.csv"]
        assert not files[0].exists() and not files[1].exists() and files[2].exists()
        recs = {r.partition: r for r in catalog.read_records(settings.model_dir("churn"))}
        for rec in recs.values():
            if rec.status == "validated":
                assert os.path.exists(rec.stored_path)  # the raw copy the archived file relies on
        assert [r.status for r in recs.values()].count("validated") == 2

        # The next ticks forget the archived files and see the changed one as a new batch.
        _age([files[2]], 10)
        again = _tick(defs, instance, result.cursor)
        (retry,) = again.run_requests
        assert retry.partition_key.startswith("batch-0002.csv")
        with LandingIndex(index_path(Chain("churn", settings.models["churn"], settings))) as ix:
            assert {n for n, _ in ix.in_flight()} <= {"batch-0000.csv", "batch-0001.csv", "batch-0002.csv"}


def test_an_idle_tick_over_a_large_zone_does_no_work(settings):
    landing = settings.landing_dir("churn")
    n = 5_000
    for i in range(n):
        (landing / f"f-{i:06d}.csv").write_bytes(b"a,b\n1,2\n")
    past = time.time() - 100
    for p in landing.iterdir():
        os.utime(p, (past, past))
    chain = Chain("churn", settings.models["churn"], settings)
    with dagster_instance() as instance:
        # The zone as an ingested history: every file known (hashed over ticks, then done).
        cur = ZoneCursor()
        with LandingIndex(index_path(chain)) as ix:
            ix.scan(landing, cur, settle_seconds=0, max_hash=n)
            ix.mark_done([f.path.name for f in ix.ready(landing)])
        cur.dir_ns = landing.stat().st_mtime_ns  # the directory as that scan saw it
        text = json.dumps(cur.to_dict())

        idle = landing_tick(chain, instance, text)
        assert not idle.requests
        assert (idle.stats.listed, idle.stats.examined, idle.stats.hashed) == (0, 0, 0)
        cursor = json.dumps(idle.cursor.to_dict())
        assert len(cursor) < 1024  # the cursor names no file, whatever the zone's size

        (landing / "new.csv").write_bytes(b"a,b\n3,4\n")
        os.utime(landing / "new.csv", (past, past))
        busy = landing_tick(chain, instance, cursor)
        assert (busy.stats.examined, busy.stats.hashed) == (1, 1)  # names listed; one file looked at
        assert [r.partition_key.split("-")[0] for r in busy.requests] == ["new.csv"]
        assert len(" ".join(busy.lines)) < 300

        for p in list(landing.iterdir())[:4000]:  # files leave the zone (archived elsewhere)
            if p.is_file():
                p.unlink()
        gone = landing_tick(chain, instance, json.dumps(busy.cursor.to_dict()))
        assert gone.stats.forgotten > 3990
        with LandingIndex(index_path(chain)) as ix:
            assert sum(ix.counts().values()) <= n + 1 - 3990


def test_training_goes_ahead_of_an_ingest_backlog(settings):
    """Train and rollback runs (and automation's deploys) outrank ingest runs in the run queue and
    go to a broker queue of their own under Celery; every worker consumes it first."""
    defs = build_definitions(settings)
    for job in ("churn_train", "churn_rollback"):
        tags = defs.resolve_job_def(job).tags
        assert tags["dagster/priority"] == "10" and tags["dagster-celery/queue"] == "dagster_train"
    assert "dagster/priority" not in defs.resolve_job_def("churn_ingest").tags  # 0, the default
    from ml_platform import names

    assert names.AUTOMATION_RUN_TAGS["dagster/priority"] == "10"
