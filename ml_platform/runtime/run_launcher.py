"""Run workers forked from a process that has imported the libraries once.

Dagster's DefaultRunLauncher asks the code server to start every run in a fresh interpreter
(multiprocessing spawn): each run worker imports Dagster, pandas, scikit-learn and MLflow again
before its first step, ~3 CPU-s on this project's 2-core machine, most of an ingest run's cost
(benchmarks/README.md, "Run start"). This launcher forks each run from a multiprocessing
forkserver, a fresh process started by the launching process (the daemon) on its first launch,
that imported those third-party libraries (``PRELOAD``) and no code of the platform's or the
user's. The child runs what `dagster api execute_run` runs (what Dagster's container launchers
start): the code location, the platform included, is imported in the child, from disk, so a code
change is in the next run.

A code location served by another Python (workspace.yaml's ``executable_path``) is launched the
default way, through its code server. Terminate sends SIGINT to the run's worker (the PID of its
RUN_START event), which Dagster turns into a cancelled run, as the code server's cancel does.
"""

from __future__ import annotations

import atexit
import multiprocessing
import multiprocessing.process
import os
import signal
import sys
import time

import dagster as dg
from dagster._cli.api import execute_run_command
from dagster._core.launcher.base import LaunchRunContext
from dagster._core.storage.tags import GRPC_INFO_TAG
from dagster._grpc.types import ExecuteRunArgs
from dagster._serdes import serialize_value

from ml_platform.runtime.processes import pid_alive, worker_pid

# What a run worker imports before its first step (python -X importtime), third-party only: the
# platform's own modules take ~0.1 s after these and stay current when the code changes.
# Not onnxruntime: importing it starts threads and opens a SQLite file that every forked worker
# would inherit (0.03 s after the rest).
PRELOAD = (
    "dagster",
    "dagster._cli.api",  # the command the child runs
    # the worker's instance: Dagster's SQLite storages (SQLAlchemy, alembic), compute logs
    "dagster._core.storage.runs.sqlite",
    "dagster._core.storage.event_log.sqlite",
    "dagster._core.storage.schedules.sqlite",
    "dagster._core.storage.local_compute_log_manager",
    "alembic.command",
    "dagster_mlflow",
    "mlflow",
    "mlflow.sklearn",
    "skops.io",  # MLflow's model format (registry.log_candidate): 0.4 s after sklearn, every train
    "sklearn.ensemble",
    "sklearn.linear_model",
    "pandas",
    "pyarrow.parquet",
    "pandera.pandas",
    "skl2onnx",
)
TERMINATE_WAIT_SECONDS = 10.0  # a run still STARTING: how long Terminate waits for its worker

_context = None


def _forkserver():
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(list(PRELOAD))
    return _context


def _forked(run: dg.DagsterRun) -> bool:
    """Whether this launcher forks ``run`` (else the code server starts it)."""
    origin = run.job_code_origin
    return origin is not None and origin.repository_origin.executable_path == sys.executable


def execute_run(serialized_args: str) -> None:
    """In the forked child: `dagster api execute_run <args>`, ended as an interpreter ends."""
    if "numpy" in sys.modules:  # a fresh interpreter seeds numpy's global generator itself
        sys.modules["numpy"].random.seed()
    try:
        execute_run_command.callback(input_json=serialized_args, compressed_input_json=None)
    finally:
        atexit._run_exitfuncs()  # multiprocessing ends the child with os._exit, which skips them


class ForkingRunLauncher(dg.DefaultRunLauncher):
    """DefaultRunLauncher, with the run worker forked from a preloaded forkserver."""

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        if not _forked(run):
            return super().launch_run(context)
        args = ExecuteRunArgs(job_origin=run.job_code_origin, run_id=run.run_id, instance_ref=self._instance.get_ref())
        proc = _forkserver().Process(target=execute_run, args=(serialize_value(args),), name=f"run {run.run_id}")
        proc.start()
        # A run outlives the process that launched it (a daemon restart; `up`'s stop interrupts the
        # runs left in its process group), as it did as the code server's child: multiprocessing
        # would otherwise join it when the launcher exits.
        multiprocessing.process._children.discard(proc)
        self._run_ids.add(run.run_id)

    def terminate(self, run_id: str) -> bool:
        run = self._instance.get_run_by_id(run_id) if self.has_instance else None
        if run is None or not _forked(run) or GRPC_INFO_TAG in run.tags:
            return super().terminate(run_id)
        if run.is_finished:
            return False
        self._instance.report_run_canceling(run)
        # A worker that starts from now on sees CANCELING and does nothing (run monitoring then
        # marks the run canceled); one that already wrote RUN_START is interrupted.
        deadline = time.monotonic() + TERMINATE_WAIT_SECONDS
        while (pid := worker_pid(self._instance, run_id)) is None:
            if time.monotonic() > deadline:
                return True
            time.sleep(0.2)
        record = self._instance.get_run_record_by_id(run_id)
        if not pid_alive(pid, record.start_time if record else None):
            return False
        try:
            os.kill(pid, signal.SIGINT)
        except ProcessLookupError:
            return False
        return True
