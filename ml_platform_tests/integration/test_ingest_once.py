"""One ingest per landing file when `ml-platform run` and `up`'s landing sensor see it at once.

The interleavings are forced in-process against one Dagster instance: the sensor's tick is
evaluated inside `run`'s ingest (while its raw copy is being made), and the sensor's run
request is executed as the daemon would, before or after `run`'s."""

import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time

import dagster as dg
import pytest

from ml_platform import names
from ml_platform.control import ingest_claims, runner
from ml_platform.control.chain import Chain
from ml_platform.control.decisions import LOCAL_CLAIM_MAX_SECONDS, claimant_live, ingest_tags
from ml_platform.core import catalog, files
from ml_platform.core.landing import scan_landing
from ml_platform.core.landing_index import LandingIndex
from ml_platform.core.simulate import write_batches
from ml_platform.defs.assets import ingest as ingest_assets
from ml_platform.defs.definitions import build_definitions
from ml_platform.runtime import processes
from ml_platform_tests.conftest import dagster_instance


@pytest.fixture
def setup(settings):
    landing = settings.landing_dir("churn")
    for i, p in enumerate(write_batches(landing, 2, rows=60)):
        t = time.time() - 100 + i  # settled
        os.utime(p, (t, t))
    defs = build_definitions(settings)
    chain = Chain("churn", settings.models["churn"], settings)
    files = scan_landing(landing, settle_seconds=0, known_sha256=set())
    with dagster_instance() as instance:
        yield defs, chain, instance, files


def _tick(defs, instance, cursor=None):
    sensor = defs.resolve_sensor_def("churn_landing_sensor")
    return sensor(dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs))


def _daemon_runs(defs, instance, result):
    """The sensor's requests executed as the daemon would (partitions added, then the runs)."""
    for req in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
    job = defs.resolve_job_def(names.ingest_job("churn"))
    return [
        job.execute_in_process(
            instance=instance,
            partition_key=r.partition_key,
            tags=r.tags,
            run_config={**runner.QUIET, **(r.run_config or {})},
            raise_on_error=False,
        )
        for r in result.run_requests
    ]


def _requested(result) -> set[str]:
    """The partitions a tick's run requests ingest (one file each, or a range's files)."""
    out = set()
    for r in result.run_requests or []:
        files = (r.run_config or {}).get("ops", {}).get("churn__raw_batch", {}).get("config", {}).get("files", {})
        out |= {r.partition_key} if r.partition_key else set(files)
    return out


def _materializations(instance, partition):
    key = dg.AssetKey(["churn", "raw_batch"])
    flt = dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition])
    return instance.fetch_materializations(flt, limit=10).records


def _arrival(f):
    return (f.partition_key, f.path.name, ingest_tags(f), f.sha256)


def _run_ingest(defs, chain, instance, f, lines):
    job = defs.resolve_job_def(names.ingest_job("churn"))
    return runner.ingest_file(chain, instance, job, _arrival(f), "(1/1)", lines.append)


def test_the_sensor_never_requests_a_file_run_is_ingesting(setup, monkeypatch):
    """The reported race: the sensor's tick comes while `run`'s in-process ingest copies the
    file (its record does not hold the content yet). Before the claim it requested a second run."""
    defs, chain, instance, (f, g) = setup
    ticks = []
    copy = ingest_assets.copy_regular_file

    def copy_during_a_tick(src, dst):
        if src.name == f.path.name and not ticks:
            ticks.append(_tick(defs, instance))
        return copy(src, dst)

    monkeypatch.setattr(ingest_assets, "copy_regular_file", copy_during_a_tick)
    lines: list[str] = []
    res = _run_ingest(defs, chain, instance, f, lines)
    assert res.success, lines
    (mid,) = ticks
    assert _requested(mid) == {g.partition_key}  # the other file, nobody's: requested
    assert ingest_claims.live_claims(chain) == {}  # released
    after = _tick(defs, instance, mid.cursor)
    assert not after.run_requests  # known now; the other file is in flight already
    assert len(_materializations(instance, f.partition_key)) == 1
    assert catalog.read_record(chain.dir, f.partition_key).ingest_run == res.run_id


def test_a_run_that_comes_second_materializes_nothing_again(setup, monkeypatch):
    """Either order, one materialization: `run` leaves a file the sensor just requested, and the
    sensor's run of a file `run` ingested (a request from before the claim) skips it."""
    defs, chain, instance, (f, g) = setup
    # 1. The sensor requested both files (one run over the two partitions): `run` leaves them.
    tick = _tick(defs, instance)
    assert _requested(tick) == {f.partition_key, g.partition_key}
    lines: list[str] = []
    assert _run_ingest(defs, chain, instance, f, lines) is None
    assert "requested by `ml-platform up`'s landing sensor" in lines[-1]
    # ... unless the request is old (the daemon stopped before its run): `run` ingests it then.
    monkeypatch.setattr(ingest_claims, "SENSOR_REQUEST_SECONDS", -1)
    first = _run_ingest(defs, chain, instance, f, lines)
    assert first.success
    # 2. The sensor's run over both partitions comes after: f is left as it is, g ingested.
    (multi,) = _daemon_runs(defs, instance, tick)
    assert multi.success
    assert len(_materializations(instance, g.partition_key)) == 1
    assert catalog.read_record(chain.dir, g.partition_key).status in ("validated", "rejected")
    (skipped, _first) = _materializations(instance, f.partition_key)  # newest first
    assert skipped.event_log_entry.asset_materialization.metadata["skipped"].value == (
        f"already ingested by run {first.run_id}"
    )
    rec = catalog.read_record(chain.dir, f.partition_key)
    assert rec.ingest_run == first.run_id
    # 3. A run of the one file (the sensor's request for f alone) materializes nothing at all.
    single = dg.RunRequest(partition_key=f.partition_key, tags=ingest_tags(f))
    (res,) = _daemon_runs(defs, instance, dg.SensorResult(run_requests=[single]))
    assert res.success
    assert len(_materializations(instance, f.partition_key)) == 2  # unchanged
    logs = [e.message for e in instance.all_logs(res.run_id) if e.message]
    assert any(f"already ingested by run {first.run_id}" in m for m in logs)
    assert catalog.read_record(chain.dir, f.partition_key).ingest_run == first.run_id


def _me():
    return f"run {os.getpid()}@{socket.gethostname()}"


def test_a_dead_runs_claim_does_not_hold_the_file(setup):
    """`run` killed mid-ingest leaves its claim: the sensor takes the file at once (same host, PID gone)."""
    defs, chain, instance, (f, g) = setup
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert ingest_claims.claim(chain, f.sha256, f.partition_key, f"run {dead.pid}@{socket.gethostname()}") is None
    assert ingest_claims.claim(chain, g.sha256, g.partition_key, _me()) is None
    assert _requested(_tick(defs, instance)) == {f.partition_key}  # g: this (live) process still has it


def test_a_claim_under_a_reused_pid_or_too_old_does_not_hold_the_file(setup):
    """A container restart hands the dead `run`'s PID to another process: a PID that exists is
    not enough (was: the sensor left the file to `run` on every tick, and every later `run`
    refused it too). Nor is a live process for ever: LOCAL_CLAIM_MAX_SECONDS at most."""
    defs, chain, instance, (f, g) = setup
    started = processes.process_started_at(os.getpid())[1]
    claims = {
        f.sha256: {"by": _me(), "at": started - 60, "partition": f.partition_key},  # before this process: reused
        g.sha256: {"by": _me(), "at": time.time(), "partition": g.partition_key},
    }
    files.write_json(chain.dir / names.INGEST_CLAIMS, claims, "test claims")
    assert ingest_claims.live_claims(chain) == {g.sha256: _me()}
    assert _requested(_tick(defs, instance)) == {f.partition_key}
    lines: list[str] = []
    assert _run_ingest(defs, chain, instance, f, lines) is None  # requested by the sensor now: left to it
    now = time.time()
    assert claimant_live(_me(), now, now=now + LOCAL_CLAIM_MAX_SECONDS - 1)
    assert not claimant_live(_me(), now, now=now + LOCAL_CLAIM_MAX_SECONDS + 1)
    # the longest a live `run` holds a claim: its retrain claim while it waits for the train pool
    assert LOCAL_CLAIM_MAX_SECONDS > runner.TRAIN_POOL_WAIT_SECONDS


def test_dead_claims_are_dropped_when_the_claims_are_written(setup):
    defs, chain, instance, (f, g) = setup
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path = chain.dir / names.INGEST_CLAIMS
    old = {"by": f"run {dead.pid}@{socket.gethostname()}", "at": time.time(), "partition": "x"}
    files.write_json(path, {"killed-1": old, "killed-2": old}, "test claims")
    assert ingest_claims.claim(chain, f.sha256, f.partition_key, _me()) is None
    assert set(json.loads(path.read_text())) == {f.sha256}
    files.write_json(path, {"killed-1": old, f.sha256: json.loads(path.read_text())[f.sha256]}, "test")
    ingest_claims.release(chain, g.sha256)  # not claimed: the dead entries go all the same
    assert set(json.loads(path.read_text())) == {f.sha256}
    ingest_claims.release(chain, f.sha256)
    assert json.loads(path.read_text()) == {}


def test_run_leaves_a_file_while_the_sensors_index_cannot_be_read(setup, monkeypatch):
    """The sensor commits its index (a rollback journal locks readers out): `run` cannot see
    whether the file was just requested, so it leaves it (was: taken as "not requested")."""
    defs, chain, instance, (f, _g) = setup
    monkeypatch.setattr(ingest_claims, "INDEX_BUSY_SECONDS", 0.1)
    path = chain.dir / names.LANDING_INDEX
    LandingIndex(path).__exit__()
    sensor = sqlite3.connect(path, isolation_level=None)
    sensor.execute("BEGIN EXCLUSIVE")
    lines: list[str] = []
    try:
        assert _run_ingest(defs, chain, instance, f, lines) is None
    finally:
        sensor.execute("ROLLBACK")
        sensor.close()
    assert "the landing sensor's index cannot be read now (database is locked" in lines[-1], lines
    assert ingest_claims.live_claims(chain) == {}
    assert _run_ingest(defs, chain, instance, f, lines).success  # readable, no request: `run` takes it


def test_two_runs_of_one_partition_at_once_copy_it_once(setup, monkeypatch):
    """Two arrival runs of one partition at once (a retry, the sensor's run after `run` left a
    request): the second waits for the first's copy and record, then skips (was: it removed the
    first's copy in progress, a dot-file, and the first failed as a storage fault)."""
    defs, chain, instance, (f, _g) = setup
    instance.add_dynamic_partitions(names.partitions("churn"), [f.partition_key])
    job = defs.resolve_job_def(names.ingest_job("churn"))

    def ingest():
        return job.execute_in_process(
            instance=instance,
            partition_key=f.partition_key,
            tags=ingest_tags(f),
            run_config=runner.QUIET,
            raise_on_error=False,
        )

    second: dict = {}
    write_with = files.write_with

    def first_copy_meets_a_second_run(path, write, what, **kw):
        def during(tmp):
            write(tmp)
            if what.startswith("the raw copy") and not second:  # the first copy is a dot-file now
                second["thread"] = threading.Thread(target=lambda: second.update(res=ingest()))
                second["thread"].start()
                second["thread"].join(timeout=2)  # unlocked, the second run went through here

        write_with(path, during, what, **kw)

    monkeypatch.setattr(files, "write_with", first_copy_meets_a_second_run)
    first = ingest()
    second["thread"].join(timeout=120)
    assert first.success
    assert second["res"].success
    assert catalog.read_record(chain.dir, f.partition_key).ingest_run == first.run_id
    assert len(_materializations(instance, f.partition_key)) == 1
    logs = [e.message for e in instance.all_logs(second["res"].run_id) if e.message]
    assert any(f"already ingested by run {first.run_id}" in m for m in logs)
    assert [p.name for p in chain.raw_dir(f.partition_key).iterdir()] == [f.path.name]
