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
from ml_platform_tests.conftest import dagster_instance, free_port, write_config
from ml_platform_tests.e2e import warm

pytestmark = pytest.mark.e2e


def _start_run(config, barrier):
    return warm.popen(
        ["--config", config, "run"],
        stdout=warm.PIPE,
        stderr=warm.STDOUT,
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


def test_two_runs_on_consecutive_drifted_batches_move_the_champion_once(tmp_path):
    """D4 with real processes: after a first champion, two drifted files land and two `run`s start
    together; whichever decides second sees the first one's retrain (in flight, or its new
    champion): one retrain, one champion move for the drift episode."""
    extra = (
        "retrain: {trigger_on: drift, debounce_batches: 1, min_new_rows: 0}\n"
        "automation: {settle_seconds: 0}\ntraining: {window_batches: 1}\n"
    )
    config = write_config(tmp_path, port=free_port(), extra=extra)
    s = load_settings(config)
    write_batches(s.landing_dir("churn"), 1, rows=1500, seed=3, prefix="clean")
    first = warm.run(["--config", config, "run"], cwd=tmp_path, timeout=400)
    assert first.returncode == 0 and "deployed v1 as champion" in first.stdout, first.stdout[-3000:]
    for p in write_batches(s.landing_dir("churn"), 2, rows=1500, seed=11, drift=1.0, prefix="drifted"):
        t = time.time() - (60 if p.name.endswith("0000.csv") else 30)  # arrival order: 0000 first
        os.utime(p, (t, t))
    procs = [_start_run(config, f"run:ingest,2,{tmp_path / 'barrier'}") for _ in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n----\n".join(o[-3000:] for o in outs)
    both = "\n".join(outs)
    assert both.count("decision: retrain") == 1, both
    moves = [(m.previous, m.to) for m in audit.read(s.model_dir("churn")) if m.moved]
    assert moves == [(None, 1), (1, 2)], (moves, both)
    assert len(get_instance(s).get_runs(dg.RunsFilter(job_name="churn_train"))) == 2


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
    with dagster_instance() as instance:
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


def _drifted(mdir, partition, arrival, against):
    catalog.update_record(
        mdir,
        partition,
        arrival=arrival,
        status="validated",
        sha256=partition,
        valid_rows=5000,
        labelled=False,
        drift={"verdict": "drifted", "share_drifted": 0.6, "drifted_features": ["age"], "champion_version": against},
        performance={"skipped": "unlabelled batch"},
    )


def test_consecutive_drifted_batches_of_two_runs_move_the_champion_once(tmp_path, monkeypatch):
    """D4: `run` A retrains on drifted batch a-1; `run` B's batch a-2, monitored against the same
    old champion, is decided after A's retrain started (its run in flight) or after it moved the
    champion: no second retrain for the same drift episode."""
    from ml_platform.control import decisions

    extra = "retrain: {trigger_on: drift, unestimated_drift: retrain, debounce_batches: 1, min_new_rows: 0}\n"
    s = load_settings(write_config(tmp_path, extra=extra))
    chain = Chain("churn", s.models["churn"], s)
    mdir = s.model_dir("churn")
    champion = {"v": 1}
    monkeypatch.setattr(decisions, "champion_version", lambda *_: champion["v"])
    with dagster_instance() as instance:
        _drifted(mdir, "a-1", 1, against=1)
        ((_, d1),) = pending_decisions(chain, instance, by="run 1@a")
        assert d1.retrain and d1.trigger == "drift", d1
        # A's train run starts and records the decision (run id); B lands a-2 meanwhile
        run = instance.create_run_for_job(dg.GraphDefinition("g").to_job())  # NOT_STARTED: in flight
        tags = {"ml_platform/batch": "a-1", "ml_platform/trigger": "drift"}
        decisions.record_retrain_decision(chain, tags, run.run_id)
        _drifted(mdir, "a-2", 2, against=1)
        ((rec, d2),) = pending_decisions(chain, instance, by="run 2@b")
        assert rec.partition == "a-2" and not d2.retrain and "already queued or running" in d2.reason, d2
        # ... or after A's retrain moved the champion to v2: a-2's drift was measured against v1
        instance.report_run_failed(run)  # finished
        catalog.update_record(mdir, "a-2", decision=None)
        champion["v"] = 2
        audit.append(
            mdir,
            audit.AuditEntry(audit.now_iso(), "churn", 1, 2, "train", "drift", "drift in age", "deploy", {}, "", "x"),
        )
        ((rec, d2),) = pending_decisions(chain, instance, by="run 2@b")
        assert not d2.retrain and d2.trigger == "none", d2
        assert "drift was measured against v1, but v2 is the champion now (deploy by train, trigger drift)" in d2.reason
        # ... or while its own ingest run monitored it: predictions scored by v1, drift compared
        # against v2 (the champion when that step ran)
        _drifted(mdir, "a-2b", 3, against=2)
        catalog.update_record(mdir, "a-2b", predictions={"model_version": 1, "rows": 5000})
        ((rec, d2b),) = pending_decisions(chain, instance, by="run 2@b")
        assert rec.partition == "a-2b" and not d2b.retrain, d2b
        assert "drift was measured against v1, but v2 is the champion now" in d2b.reason, d2b
        # a batch monitored against v2 that drifts is a new episode: it retrains
        _drifted(mdir, "a-3", 4, against=2)
        ((rec, d3),) = pending_decisions(chain, instance, by="run 2@b")
        assert rec.partition == "a-3" and d3.retrain and d3.trigger == "drift", d3
