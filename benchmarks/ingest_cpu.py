"""CPU per file of one multi-file ingest run, in-process (benchmarks/README.md, issue 23).

A first champion (one file of HISTORY rows, default 3,000, through `ml-platform run`'s path: the
history every file's challenger check refits on), then FILES files of ROWS
rows landed at once: the landing sensor's tick asks for one run over their partitions, executed
here in-process on a real SQLite instance. CPU is `time.process_time` of that run (the run's
creation and its planned-materialization events included); `--profile OUT` writes a cProfile
(CPU clock) of it and prints the heaviest platform functions.

    PYTHONPATH=$PWD nice -n 10 .venv/bin/python benchmarks/ingest_cpu.py --rows 250 --files 25
    PYTHONPATH=$PWD nice -n 10 .venv/bin/python benchmarks/ingest_cpu.py --rows 2000 --profile /tmp/ingest.prof
    PYTHONPATH=$PWD nice -n 10 .venv/bin/python benchmarks/ingest_cpu.py --rows 250 --history 150000  # a long history
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[1]))  # after PYTHONPATH: the checkout it names runs

import dagster as dg  # noqa: E402

from ml_platform.control.champion import champion_version  # noqa: E402
from ml_platform.control.runner import run_pending  # noqa: E402
from ml_platform.core.simulate import write_batches  # noqa: E402
from ml_platform.defs.definitions import build_definitions  # noqa: E402
from ml_platform.settings import load_settings  # noqa: E402
from ml_platform_tests.conftest import write_config  # noqa: E402


def _settle(paths: list[Path]) -> None:
    for i, p in enumerate(paths):  # arrived a while ago, in file order: settled
        t = time.time() - 100 + i
        os.utime(p, (t, t))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=250)
    p.add_argument("--files", type=int, default=25)
    p.add_argument("--history", type=int, default=3000, help="rows of the first (champion's) file")
    p.add_argument("--profile", help="write a cProfile (CPU clock) of the run here")
    a = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="mlp-ingest-cpu-"))
    try:
        write_config(root)
        settings = load_settings(root / "ml_platform.yaml")
        landing = settings.landing_dir("churn")
        defs = build_definitions(settings)
        (root / "dagster").mkdir()
        with dg.instance_for_test(temp_dir=str(root / "dagster")) as instance:
            _settle(write_batches(landing, 1, rows=a.history, seed=1, prefix="first"))
            run_pending(settings, defs, instance, echo=lambda *_: None)
            assert champion_version(settings, "churn") is not None, "no first champion"
            _settle(write_batches(landing, a.files, rows=a.rows, seed=6, prefix="batch"))
            sensor = defs.resolve_sensor_def("churn_landing_sensor")
            tick = sensor(dg.build_sensor_context(instance=instance, definitions=defs))
            for req in tick.dynamic_partitions_requests:
                instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
            (req,) = tick.run_requests
            job = defs.resolve_job_def("churn_ingest")
            prof = cProfile.Profile(time.process_time) if a.profile else None
            cpu, wall = time.process_time(), time.time()
            if prof:
                prof.enable()
            run = job.execute_in_process(
                instance=instance, partition_key=req.partition_key, tags=req.tags, run_config=req.run_config or None
            )
            if prof:
                prof.disable()
            cpu, wall = time.process_time() - cpu, time.time() - wall
            assert run.success
            n = int(req.tags.get("ml_platform/files", "1"))
            events = Counter(e.dagster_event.event_type_value for e in instance.all_logs(run.run_id) if e.dagster_event)
            print(
                f"{n} files of {a.rows} rows in one run after {a.history:,} rows of history: "
                f"CPU {cpu:.2f} s = {cpu / n:.3f} s per file; "
                f"wall {wall:.1f} s; {sum(events.values())} Dagster events ({sum(events.values()) / n:.1f} per file); "
                f"load {os.getloadavg()[0]:.2f}"
            )
            if prof:
                prof.dump_stats(a.profile)
                pstats.Stats(a.profile).sort_stats("cumulative").print_stats(r"ml_platform/(defs|core)|store_event", 25)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
