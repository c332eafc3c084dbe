"""Runs launched by the platform's run launcher (runtime/run_launcher.py) are forked from its
preloaded forkserver, not from the launching process, the forkserver preloads no code of the
platform's (a change on disk is in the next run), and Terminate cancels a run as Dagster's own
launcher does."""

from __future__ import annotations

import os
import time

import dagster as dg
import yaml

from ml_platform.runtime.instance import dagster_yaml
from ml_platform.runtime.processes import process_started_at, worker_pid
from ml_platform.runtime.run_launcher import PRELOAD, ForkingRunLauncher
from ml_platform_tests.user_code import jobs


def _instance(home) -> dg.DagsterInstance:
    (home / "dagster.yaml").write_text(yaml.safe_dump(dagster_yaml(None)))
    return dg.DagsterInstance.from_config(str(home))


def _launch(instance: dg.DagsterInstance, name: str) -> str:
    recon = dg.reconstructable(getattr(jobs, name))
    run = instance.create_run_for_job(job_def=recon.get_definition(), job_code_origin=recon.get_python_origin())
    instance.launch_run(run.run_id, workspace=None)
    return run.run_id


def _wait(instance, run_id, statuses, seconds=120) -> dg.DagsterRun:
    deadline = time.time() + seconds
    while time.time() < deadline:
        run = instance.get_run_by_id(run_id)
        if run.status in statuses:
            return run
        time.sleep(0.2)
    events = [e.message for e in instance.all_logs(run_id) if e.message]
    raise AssertionError(f"run {run_id} still {run.status}, not {statuses}; its events: {events[-10:]}")


def test_a_run_is_forked_from_the_forkserver_and_terminate_cancels_a_run(tmp_path):
    with _instance(tmp_path) as instance:
        assert isinstance(instance.run_launcher, ForkingRunLauncher)
        quick = _launch(instance, "quick")
        run = _wait(instance, quick, {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE})
        assert run.status == dg.DagsterRunStatus.SUCCESS
        assert worker_pid(instance, quick) not in (None, os.getpid())

        stuck = _launch(instance, "stuck")
        _wait(instance, stuck, {dg.DagsterRunStatus.STARTED})
        worker = worker_pid(instance, stuck)
        # its parent is the forkserver, a process of its own, not this one
        parent = int(open(f"/proc/{worker}/stat").read().rsplit(")", 1)[1].split()[1])
        assert parent != os.getpid() and "forkserver" in open(f"/proc/{parent}/cmdline").read()
        assert instance.run_launcher.terminate(stuck)
        run = _wait(instance, stuck, {dg.DagsterRunStatus.CANCELED, dg.DagsterRunStatus.FAILURE}, 60)
        assert run.status == dg.DagsterRunStatus.CANCELED, run.status
        deadline = time.time() + 30
        while (process_started_at(worker) or ("Z",))[0] != "Z":
            assert time.time() < deadline, "the cancelled run's worker is still running"
            time.sleep(0.2)
        assert not instance.run_launcher.terminate(stuck), "a finished run is not signalled again"


def test_the_forkserver_preloads_libraries_only():
    """The platform's and the user's code are imported by each run from disk: preloaded, a change
    would reach no run until the daemon restarted."""
    assert not [m for m in PRELOAD if m.split(".")[0] in ("ml_platform", "demo")], PRELOAD
    assert "onnxruntime" not in PRELOAD  # its import starts threads and opens a SQLite file
