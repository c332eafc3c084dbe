"""Run start: Dagster's DefaultRunLauncher (the code server spawns each run in a fresh
interpreter) against the platform's ForkingRunLauncher (runtime/run_launcher.py: forked from a
forkserver that imported the libraries once), side by side in one run, rounds alternated (ABBA).

Each launcher gets an instance in a temp dir and this file as its code location, served by a code
server as `dagster dev` serves one; the location imports what every platform run worker imports
(``ml_platform.defs.definitions``: Dagster, pandas, scikit-learn, ONNX, MLflow). Runs of a one-op
job, one after another; per run: launch to SUCCESS (wall) and the machine's busy CPU over it
(/proc/stat, so run it on a quiet machine). The forkserver's own start (its imports, once per
launching process) is in the first forked run.

    .venv/bin/python benchmarks/run_start.py --runs 8 --rounds 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import dagster as dg
import yaml

import ml_platform.defs.definitions  # noqa: F401  (what a platform run worker imports)


@dg.op
def one() -> int:
    return 1


@dg.job(executor_def=dg.in_process_executor)
def quick():
    one()


def _busy() -> float:
    """Busy CPU-seconds of the whole machine since boot."""
    f = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    return (sum(f) - f[3] - f[4]) / os.sysconf("SC_CLK_TCK")


def _round(forking: bool, runs: int) -> list[tuple[float, float]]:
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import ModuleTarget

    out = []
    with tempfile.TemporaryDirectory() as home:
        doc: dict = {"telemetry": {"enabled": False}}
        if forking:
            doc["run_launcher"] = {"module": "ml_platform.runtime.run_launcher", "class": "ForkingRunLauncher"}
        Path(home, "dagster.yaml").write_text(yaml.safe_dump(doc))
        target = ModuleTarget(
            module_name="run_start", attribute=None, working_directory=str(Path(__file__).parent), location_name="bench"
        )
        with (
            dg.DagsterInstance.from_config(home) as instance,
            WorkspaceProcessContext(instance, target) as process_ctx,
        ):
            workspace = process_ctx.create_request_context()
            location = workspace.get_code_location("bench")
            repo = next(iter(location.get_repositories().values()))
            remote = repo.get_full_job("quick")
            for _ in range(runs):
                run = instance.create_run_for_job(
                    job_def=quick,
                    remote_job_origin=remote.get_remote_origin(),
                    job_code_origin=remote.get_python_origin(),
                )
                t0, c0 = time.perf_counter(), _busy()
                instance.launch_run(run.run_id, workspace)
                while not instance.get_run_by_id(run.run_id).is_finished:
                    time.sleep(0.02)
                status = instance.get_run_by_id(run.run_id).status
                assert status == dg.DagsterRunStatus.SUCCESS, status
                out.append((time.perf_counter() - t0, _busy() - c0))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    res: dict[bool, list] = {False: [], True: []}
    for r in range(a.rounds):
        for forking in (False, True) if r % 2 == 0 else (True, False):
            res[forking] += _round(forking, a.runs)
    print("| launcher | runs | launch → success, median s | machine CPU per run, median s | first run CPU s |")
    print("|---|---|---|---|---|")
    for forking, name in ((False, "Dagster's DefaultRunLauncher (spawn)"), (True, "ForkingRunLauncher")):
        rows = res[forking]
        print(
            f"| {name} | {len(rows)} | {statistics.median(w for w, _ in rows):.2f} | "
            f"{statistics.median(c for _, c in rows):.2f} | {rows[0][1]:.2f} |"
        )


if __name__ == "__main__":
    main()
