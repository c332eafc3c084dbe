"""Run workers forked from a process that has imported the platform's libraries once.

Dagster's DefaultRunLauncher asks the code server to start every run in a fresh interpreter
(multiprocessing spawn): each run worker imports Dagster, pandas, scikit-learn, ONNX and MLflow
again before its first step, ~2.5 CPU-s on this project's 2-core machine, most of an ingest run's
cost (benchmarks/README.md, "Run start"). This launcher forks each run from a multiprocessing
forkserver that imported those libraries (``PRELOAD``) and nothing else: the forkserver is a
fresh, single-threaded process (forking it is safe, unlike forking the daemon), started by the
launching process on its first launch. The child runs what `dagster api execute_run` runs (what
Dagster's container launchers start), so the run's code location is imported in the child, from
disk: a code change is in the next run.

A code location served by another Python (workspace.yaml's ``executable_path``) is launched the
default way, through its code server. Terminate sends SIGINT to the run's worker (its PID is the
``TAG_RUN_PID`` tag), which Dagster turns into a cancelled run, as the code server's cancel does.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.process
import os
import signal
import sys

import dagster as dg
from dagster._cli.api import execute_run_command
from dagster._core.events import EngineEventData
from dagster._core.launcher.base import LaunchRunContext
from dagster._grpc.types import ExecuteRunArgs
from dagster._serdes import deserialize_value, serialize_value
from dagster._utils.error import serializable_error_info_from_exc_info

from ml_platform.names import TAG_RUN_PID
from ml_platform.runtime.processes import pid_alive

# What every run imports before its first step (python -X importtime on a train run's worker).
# Libraries and the platform's own modules that import them; never a user's code location.
PRELOAD = (
    "dagster",
    "dagster_mlflow",
    "mlflow",
    "mlflow.sklearn",
    "skops.io",  # MLflow's model format (registry.log_candidate): 0.4 s after sklearn, every train
    "sklearn.ensemble",
    "sklearn.linear_model",
    "pandas",
    "pyarrow.parquet",
    "pandera.pandas",
    "onnxruntime",
    "skl2onnx",
    "ml_platform.defs.definitions",
    # what the worker's instance imports: storage (SQLAlchemy, alembic), compute logs, the command
    "ml_platform.runtime.sqlite_storage",
    "dagster._core.storage.local_compute_log_manager",
    "dagster._cli.api",
)

_context = None


def _forkserver():
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(list(PRELOAD))
    return _context


def execute_run(serialized_args: str) -> None:
    """In the forked child: `dagster api execute_run <args>`. A run that could not start (its code
    location no longer imports) is failed with the error at once, not left STARTING until run
    monitoring's start timeout: what the code server's launch reports."""
    try:
        execute_run_command.callback(input_json=serialized_args, compressed_input_json=None)
    except Exception:
        error = serializable_error_info_from_exc_info(sys.exc_info())
        args = deserialize_value(serialized_args, ExecuteRunArgs)
        with dg.DagsterInstance.from_ref(args.instance_ref) as instance:
            run = instance.get_run_by_id(args.run_id)
            if run is not None and not run.is_finished:
                instance.report_engine_event(
                    f"The run worker could not start the run: {error.message}",
                    run,
                    EngineEventData.engine_error(error),
                )
                instance.report_run_failed(run)
        raise


class ForkingRunLauncher(dg.DefaultRunLauncher):
    """DefaultRunLauncher, with the run worker forked from a preloaded forkserver."""

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        origin = run.job_code_origin
        if origin is None or origin.repository_origin.executable_path != sys.executable:
            return super().launch_run(context)
        args = ExecuteRunArgs(job_origin=origin, run_id=run.run_id, instance_ref=self._instance.get_ref())
        proc = _forkserver().Process(target=execute_run, args=(serialize_value(args),), name=f"run {run.run_id}")
        proc.start()
        # A run outlives the process that launched it (a daemon restart, `up` stopping: its stop
        # interrupts the runs of its process group), as it did as the code server's child:
        # multiprocessing would otherwise join it when the launcher exits.
        multiprocessing.process._children.discard(proc)
        self._instance.add_run_tags(run.run_id, {TAG_RUN_PID: str(proc.pid)})
        self._run_ids.add(run.run_id)

    def terminate(self, run_id: str) -> bool:
        run = self._instance.get_run_by_id(run_id) if self.has_instance else None
        if run is None or TAG_RUN_PID not in run.tags:
            return super().terminate(run_id)
        if run.is_finished:
            return False
        self._instance.report_run_canceling(run)
        pid = int(run.tags[TAG_RUN_PID])
        record = self._instance.get_run_record_by_id(run_id)
        # The worker started the run (start_time); a PID a later process took over is not it.
        if not pid_alive(pid, record.start_time if record else None):
            return False
        os.kill(pid, signal.SIGINT)
        return True
