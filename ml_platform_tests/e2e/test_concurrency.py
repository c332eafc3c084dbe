"""Two processes at once (issue 20, deliver 7): one retrain decision per batch, whatever runs.

Real `ml-platform run` processes started together on the same state, and a `run`'s claim met by
the retrain sensor's tick on a real instance: one train run and one champion move per trigger."""

import os
import socket
import subprocess
import sys
import time

import dagster as dg
import pytest

from ml_platform.control.chain import Chain
from ml_platform.control.decisions import CLAIM_TTL_SECONDS, pending_decisions
from ml_platform.core import audit, catalog
from ml_platform.core.simulate import write_batches
from ml_platform.defs.definitions import build_definitions
from ml_platform.resources.registry import registry_for
from ml_platform.runtime.faults import BARRIER_ENV
from ml_platform.runtime.instance import get_instance
from ml_platform.settings import load_settings
from ml_platform_tests.conftest import free_port, write_config

pytestmark = pytest.mark.e2e


def _start_run(config, barrier):
    return subprocess.Popen(
        [sys.executable, "-m", "ml_platform", "--config", str(config), "run"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=config.parent,
        # both see the file pending, then race for it (runtime/faults.barrier)
        env={**{k: v for k, v in os.environ.items() if k != "ML_PLATFORM_FAULT"}, BARRIER_ENV: barrier},
    )


def test_two_runs_at_once_train_once_and_move_the_champion_once(tmp_path):
    config = write_config(
        tmp_path, port=free_port(), extra="retrain: {policy: on_arrival}\nautomation: {settle_seconds: 0}\n"
    )
    s = load_settings(config)
    write_batches(s.landing_dir("churn"), 1, rows=800, seed=3)
    procs = [_start_run(config, f"run:ingest,2,{tmp_path / 'barrier'}") for _ in range(2)]
    outs = [p.communicate(timeout=400)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n----\n".join(o[-3000:] for o in outs)
    both = "\n".join(outs)
    assert both.count("decision: retrain") == 1, both
    assert "already ingested by another process" in both, both
    train_runs = get_instance(s).get_runs(dg.RunsFilter(job_name="churn_train"))
    assert len(train_runs) == 1, [r.tags for r in train_runs]
    assert [int(v.version) for v in registry_for(s).versions("churn")] == [1]
    assert [(m.previous, m.to) for m in audit.read(s.model_dir("churn")) if m.moved] == [(None, 1)]
    (rec,) = catalog.read_records(s.model_dir("churn"))
    assert rec.decision.retrain and rec.decision.run_id == train_runs[0].run_id


def _monitored(mdir, partition, arrival):
    catalog.update_record(
        mdir,
        partition,
        arrival=arrival,
        status="validated",
        sha256=partition,
        drift={"verdict": "no champion"},
        performance={"skipped": "no champion"},
    )


def test_a_runs_claim_holds_off_the_sensor_until_its_claimant_is_gone(settings):
    """`run` decided a retrain (its run not created yet): the sensor's tick leaves the batch;
    once the claimant died without a run, the batch is decided again, once."""
    defs = build_definitions(settings)
    sensor = defs.resolve_sensor_def("churn_retrain_sensor")
    chain = Chain("churn", settings.models["churn"], settings)
    mdir = settings.model_dir("churn")
    _monitored(mdir, "a-1", 1)
    with dg.instance_for_test() as instance:
        me = f"run {os.getpid()}@{socket.gethostname()}"
        (mine,) = pending_decisions(chain, instance, by=me)
        assert mine[1].retrain
        assert catalog.read_record(mdir, "a-1").decision.claimed_by == me
        taken: list = []
        assert pending_decisions(chain, instance, by="run 1@elsewhere", taken=taken) == []  # a second `run`
        assert [r.partition for r, _ in taken] == ["a-1"]
        tick = sensor(dg.build_sensor_context(instance=instance, definitions=defs))
        assert isinstance(tick, dg.SkipReason), tick

        # The claimant died before its run existed, long ago: the sensor decides the batch again.
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        old = catalog.read_record(mdir, "a-1").decision
        catalog.update_record(
            mdir,
            "a-1",
            decision={
                **old.to_dict(),
                "claimed_by": f"run {dead.pid}@{socket.gethostname()}",
                "at": time.time() - CLAIM_TTL_SECONDS - 1,
            },
        )
        tick = sensor(dg.build_sensor_context(instance=instance, definitions=defs))
        assert [r.run_key for r in tick.run_requests] == ["train-a-1"]
        assert catalog.read_record(mdir, "a-1").decision.claimed_by == "sensor"
